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
}

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
}

impl SourceMap {
    /// Index `text`. A document that does not parse yields an empty map: the serde pass reports
    /// the syntax error with its own position.
    pub fn build(text: &str) -> SourceMap {
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
    fn parent_paths() {
        assert_eq!(parent("a.b[2]").as_deref(), Some("a.b"));
        assert_eq!(parent("a.b").as_deref(), Some("a"));
        assert_eq!(parent("a").as_deref(), Some(""));
        assert_eq!(parent(""), None);
    }
}
