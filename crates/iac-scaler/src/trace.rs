//! Load traces for the simulator: CSV rows of `seconds,load_percent`, where the load is the
//! total demand expressed in percent of one instance (250 = two and a half instances' worth).

use std::time::Duration;

/// Why a trace could not be read; row numbers are 1-based and count the header if present.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("row {row}: {reason}")]
    BadRow { row: usize, reason: String },
    #[error("the trace has no rows")]
    Empty,
}

/// Parses a trace. A first row whose first field is not a number is taken as a header; blank
/// lines and lines starting with `#` are skipped. Times must not go backwards.
pub fn load_trace(csv: &str) -> Result<Vec<(Duration, f64)>, TraceError> {
    let mut rows = Vec::new();
    let mut last: Option<f64> = None;
    let mut header_seen = false;
    for (i, line) in csv.lines().enumerate() {
        let row = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| TraceError::BadRow { row, reason };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        // Only the first non-blank row may be a header.
        if rows.is_empty() && !header_seen && fields[0].parse::<f64>().is_err() {
            header_seen = true;
            continue;
        }
        if fields.len() != 2 {
            return Err(bad(format!(
                "expected 2 fields `seconds,load_percent`, found {}",
                fields.len()
            )));
        }
        let secs: f64 = fields[0]
            .parse()
            .map_err(|_| bad(format!("seconds `{}` is not a number", fields[0])))?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad(format!("seconds `{}` must be 0 or more", fields[0])));
        }
        if last.is_some_and(|l| secs < l) {
            return Err(bad(format!("time {secs}s goes backwards")));
        }
        let load: f64 = fields[1]
            .parse()
            .map_err(|_| bad(format!("load `{}` is not a number", fields[1])))?;
        if !load.is_finite() || load < 0.0 {
            return Err(bad(format!("load `{}` must be 0 or more", fields[1])));
        }
        last = Some(secs);
        rows.push((Duration::from_secs_f64(secs), load));
    }
    if rows.is_empty() {
        return Err(TraceError::Empty);
    }
    Ok(rows)
}

/// The load at `t`: the last row at or before `t` (a step function), or the first row before it.
pub(crate) fn load_at(trace: &[(Duration, f64)], t: Duration) -> f64 {
    let idx = trace.partition_point(|(at, _)| *at <= t);
    trace
        .get(idx.saturating_sub(1))
        .map_or(0.0, |(_, load)| *load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_optional_and_comments_are_skipped() {
        let with = load_trace("seconds,load_percent\n0,10\n1,20.5\n").unwrap();
        let without = load_trace("# a comment\n0,10\n\n1,20.5").unwrap();
        assert_eq!(with, without);
        assert_eq!(with[1], (Duration::from_secs(1), 20.5));
    }

    #[test]
    fn bad_rows_are_numbered() {
        let e = load_trace("seconds,load\n0,10\n1,lots\n").unwrap_err();
        assert_eq!(e.to_string(), "row 3: load `lots` is not a number");
        let e = load_trace("0,10\n1\n").unwrap_err();
        assert!(e.to_string().starts_with("row 2: expected 2 fields"), "{e}");
        let e = load_trace("5,10\n4,10\n").unwrap_err();
        assert_eq!(e.to_string(), "row 2: time 4s goes backwards");
        let e = load_trace("0,-1\n").unwrap_err();
        assert_eq!(e.to_string(), "row 1: load `-1` must be 0 or more");
        let e = load_trace("a,b\nc,d\n").unwrap_err();
        assert_eq!(e.to_string(), "row 2: seconds `c` is not a number");
        assert_eq!(load_trace("seconds,load\n"), Err(TraceError::Empty));
    }

    #[test]
    fn load_at_steps() {
        let t = load_trace("0,10\n2,20\n").unwrap();
        assert_eq!(load_at(&t, Duration::from_secs(1)), 10.0);
        assert_eq!(load_at(&t, Duration::from_secs(2)), 20.0);
        assert_eq!(load_at(&t, Duration::from_secs(9)), 20.0);
    }
}
