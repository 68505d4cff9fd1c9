//! Text tables whose columns are as wide as their widest cell, so long ARNs and ids never
//! break the alignment. Every table the CLI prints for people goes through here.

/// Rows of cells, laid out when printed.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Spaces before every line.
    indent: usize,
    /// A header row (printed first, in bold on a terminal).
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
    /// Columns aligned to the right (amounts, counts).
    right: Vec<usize>,
}

/// Spaces between two columns.
const GAP: usize = 2;

impl Table {
    /// A table indented by `indent` spaces.
    pub fn new(indent: usize) -> Table {
        Table {
            indent,
            ..Table::default()
        }
    }

    /// With a header row.
    pub fn header(mut self, cells: &[&str]) -> Table {
        self.header = Some(cells.iter().map(|c| c.to_string()).collect());
        self
    }

    /// With column `column` (from 0) aligned to the right.
    pub fn right(mut self, column: usize) -> Table {
        self.right.push(column);
        self
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header line, if any, then one line per row, in the order given. Each column is as
    /// wide as its widest cell; the last cell of a line is not padded, and no line ends in
    /// spaces.
    pub fn lines(&self) -> (Option<String>, Vec<String>) {
        let all = self.header.iter().chain(&self.rows);
        let mut widths: Vec<usize> = Vec::new();
        for row in all {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(max) => *max = (*max).max(w),
                    None => widths.push(w),
                }
            }
        }
        let line = |row: &Vec<String>| {
            let mut out = " ".repeat(self.indent);
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    out.push_str(&" ".repeat(GAP));
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                let last = i + 1 == row.len();
                if self.right.contains(&i) {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    if !last {
                        out.push_str(&" ".repeat(pad));
                    }
                }
            }
            out.trim_end().to_string()
        };
        (
            self.header.as_ref().map(line),
            self.rows.iter().map(line).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(2).header(&["KIND", "ID", "AWS ID", "STATE"]);
        t.row(["instance", "web", "i-0123", "running"]);
        t.row([
            "target-group",
            "tg",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/0123456789abcdef",
            "active",
        ]);
        let (header, rows) = t.lines();
        let header = header.expect("a header line");
        // Every STATE cell starts where the header's does, however long the ARN.
        let state_at = header.find("STATE").expect("STATE in the header");
        assert_eq!(&rows[0][state_at..], "running");
        assert_eq!(&rows[1][state_at..], "active");
        assert_eq!(rows[0].find("i-0123"), header.find("AWS ID"));
        assert!(
            rows[0].starts_with("  instance      web  i-0123 "),
            "{}",
            rows[0]
        );
    }

    #[test]
    fn right_aligned_columns_and_no_trailing_spaces() {
        let mut t = Table::new(0).right(1);
        t.row(["web", "$1.00", ""]);
        t.row(["database", "$120.50", "+ storage"]);
        let (header, rows) = t.lines();
        assert_eq!(header, None);
        assert_eq!(
            rows,
            vec!["web         $1.00", "database  $120.50  + storage"]
        );
    }

    #[test]
    fn a_short_row_and_an_empty_table() {
        let mut t = Table::new(1);
        t.row(["a", "bb", "c"]);
        t.row(["aaaa"]);
        assert_eq!(t.lines().1, vec![" a     bb  c", " aaaa"]);
        assert!(Table::new(0).lines().1.is_empty());
        assert!(Table::new(0).is_empty());
    }
}
