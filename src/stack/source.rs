//! Positions of every key and value in a YAML document, by dotted path.
//!
//! serde throws positions away, so the stack file is also walked as an event stream to remember
//! where each path starts. Validation errors then point at the exact line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    /// The position of byte `offset` of `text` (columns count characters).
    pub fn of_offset(text: &str, offset: usize) -> Pos {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Pos {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// The deepest nesting of mappings and sequences a stack file may have. Real stack files stay
/// under 10; the bound keeps a hostile file from costing time: the YAML scanner's work per
/// token grows with the open flow collections, so unbounded nesting is quadratic.
pub const MAX_DEPTH: usize = 64;

/// A scalar found in the document, with its path and position (used to hunt for credentials).
#[derive(Debug, Clone)]
pub struct Scalar {
    pub path: String,
    /// True when the scalar is a mapping key rather than a value.
    pub is_key: bool,
    pub value: String,
    pub pos: Pos,
}

/// Positions of keys and values, by path.
#[derive(Debug, Default)]
pub struct SourceMap {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
    scalars: Vec<Scalar>,
    /// Where the document first nests deeper than [`MAX_DEPTH`]; nothing past it is indexed.
    too_deep: Option<Pos>,
}

impl SourceMap {
    /// Index `text`. A document that does not parse yields an empty map: the serde pass reports
    /// the syntax error with its own position.
    pub fn build(text: &str) -> SourceMap {
        // Flow nesting is measured before the YAML scanner sees it (see [`MAX_DEPTH`]); block
        // nesting costs the scanner nothing and is measured by the walker.
        if let Some(at) = flow_too_deep(text) {
            return SourceMap {
                too_deep: Some(Pos::of_offset(text, at)),
                ..SourceMap::default()
            };
        }
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return SourceMap::default();
        }
        walker.map
    }

    /// Where the value at `path` starts, or failing that its key, or its nearest ancestor.
    pub fn value_pos(&self, path: &str) -> Pos {
        self.lookup(path, true)
    }

    /// Where the key of `path` stands (for "unknown key" errors), or failing that its value.
    pub fn key_pos(&self, path: &str) -> Pos {
        self.lookup(path, false)
    }

    fn lookup(&self, path: &str, value_first: bool) -> Pos {
        let (first, second) = if value_first {
            (&self.values, &self.keys)
        } else {
            (&self.keys, &self.values)
        };
        if let Some(pos) = first.get(path).or_else(|| second.get(path)) {
            return *pos;
        }
        // An ancestor is pointed at by its key: a block mapping's own start mark sits after its
        // first key, which would point at an unrelated line.
        let mut p = path.to_string();
        while let Some(up) = parent(&p) {
            if let Some(pos) = self.keys.get(&up).or_else(|| self.values.get(&up)) {
                return *pos;
            }
            p = up;
        }
        Pos::START
    }

    /// The path of the node whose value starts at `pos`, if any.
    pub fn path_at(&self, pos: Pos) -> Option<&str> {
        self.values
            .iter()
            .chain(self.keys.iter())
            .filter(|(_, p)| **p == pos)
            .map(|(k, _)| k.as_str())
            .max_by_key(|k| k.len())
    }

    /// Every scalar (keys and values) in document order.
    pub fn scalars(&self) -> &[Scalar] {
        &self.scalars
    }

    /// Where the document first nests deeper than [`MAX_DEPTH`], if it does.
    pub fn too_deep(&self) -> Option<Pos> {
        self.too_deep
    }
}

/// The byte offset of the first flow bracket (`[`, `{`) opened more than [`MAX_DEPTH`] levels
/// deep, in one linear pass that skips quoted scalars and comments. Brackets inside plain
/// scalars count too, which can only make the measure larger than the truth, never smaller.
fn flow_too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A quote opens a scalar only where a scalar can start; `it's` in a plain scalar
            // does not.
            b'\'' if i == 0 || b" \t\n[{,:-".contains(&bytes[i - 1]) => {
                i += 1;
                // `''` inside is an escaped quote: it closes and reopens, same result.
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → none.
pub fn parent(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(path[..cut].to_string())
}

/// Joins a parent path and a key.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    map: SourceMap,
}

impl Walker {
    /// Once the document is too deep nothing more is indexed: the load refuses it anyway, and
    /// building paths ever longer is what would cost time.
    fn stopped(&self) -> bool {
        self.map.too_deep.is_some()
    }
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Walker {
    /// Path of the value about to start, or `None` when the next scalar is a mapping key.
    fn next_value_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k) }) => Some(join(path, k)),
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
        }
    }

    /// After a value completes, the parent moves on to its next key or item.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.stopped() {
            return;
        }
        match ev {
            Event::Scalar(value, ..) => match self.next_value_path() {
                None => {
                    let parent_path = match self.stack.last() {
                        Some(Frame::Map { path, .. }) => path.clone(),
                        _ => String::new(),
                    };
                    let path = join(&parent_path, &value);
                    self.map
                        .values
                        .entry(parent_path.clone())
                        .or_insert(pos(mark));
                    self.map.keys.insert(path.clone(), pos(mark));
                    self.map.scalars.push(Scalar {
                        path,
                        is_key: true,
                        value: value.clone(),
                        pos: pos(mark),
                    });
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(value);
                    }
                }
                Some(path) => {
                    if let Some(Frame::Seq { path: seq, .. }) = self.stack.last() {
                        self.map.values.entry(seq.clone()).or_insert(pos(mark));
                    }
                    self.map.values.entry(path.clone()).or_insert(pos(mark));
                    self.map.scalars.push(Scalar {
                        path,
                        is_key: false,
                        value,
                        pos: pos(mark),
                    });
                    self.advance();
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.map.too_deep = Some(pos(mark));
                    return;
                }
                // A non-scalar mapping key is not something a stack file has; index it as "?".
                let path = self.next_value_path().unwrap_or_else(|| "?".to_string());
                // A block collection's own mark sits after its first key; its position is taken
                // from its first child instead (see `first_child`), except for the document.
                if path.is_empty() {
                    self.map.values.entry(path.clone()).or_insert(pos(mark));
                }
                if matches!(ev, Event::MappingStart(..)) {
                    self.stack.push(Frame::Map { path, key: None });
                } else {
                    self.stack.push(Frame::Seq { path, index: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            Event::Alias(_) => self.advance(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_keys_and_items() {
        let text =
            "name: a\napp:\n  image: x\n  port: 80\nnetwork:\n  subnets:\n    - s1\n    - s2\n";
        let map = SourceMap::build(text);
        assert_eq!(map.key_pos("app.port"), Pos { line: 4, column: 3 });
        assert_eq!(map.value_pos("app.port"), Pos { line: 4, column: 9 });
        assert_eq!(
            map.value_pos("network.subnets[1]"),
            Pos { line: 8, column: 7 }
        );
        // Unknown paths fall back to their nearest ancestor.
        assert_eq!(map.value_pos("app.nope"), Pos { line: 2, column: 1 });
        assert_eq!(map.path_at(Pos { line: 4, column: 9 }), Some("app.port"));
    }

    #[test]
    fn nesting_deeper_than_the_bound_is_found_with_its_position() {
        let flow = format!(
            "a: {}1{}\n",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let map = SourceMap::build(&flow);
        assert_eq!(
            map.too_deep(),
            Some(Pos {
                line: 1,
                column: 4 + MAX_DEPTH
            })
        );
        let mut block = String::new();
        for level in 0..=MAX_DEPTH {
            block.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
        }
        block.push_str(&format!("{}x: 1\n", "  ".repeat(MAX_DEPTH + 1)));
        let map = SourceMap::build(&block);
        let at = map.too_deep().expect("too deep");
        assert!((MAX_DEPTH..=MAX_DEPTH + 2).contains(&at.line), "{at:?}");
        // At the bound exactly, and with brackets inside quotes and comments, it is fine.
        let ok = format!(
            "a: {}1{}\nb: \"[[[[\" # {}\nc: 'x[['\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1),
            "{".repeat(100)
        );
        assert_eq!(SourceMap::build(&ok).too_deep(), None);
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(Pos::of_offset("ab\ncd", 4), Pos { line: 2, column: 2 });
        assert_eq!(Pos::of_offset("ab", 99), Pos { line: 1, column: 3 });
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[2]").as_deref(), Some("a.b"));
        assert_eq!(parent("a.b").as_deref(), Some("a"));
        assert_eq!(parent("a").as_deref(), Some(""));
        assert_eq!(parent(""), None);
    }
}
