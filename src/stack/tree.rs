//! A stack document as a tree in which every key and value remembers who set it.
//!
//! Overlays (`-f base.yaml -f prod.yaml`), `${VAR}` interpolation and `--set` all rewrite
//! values before the model sees them. serde would lose where each value came from, so the
//! document is first built as this tree, rewritten, and only then written back out as YAML for
//! the usual parse and validation; each error is then traced back to the [`Origin`] of the value
//! it is about (see `layers`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostic::Diagnostic;
use super::source::Pos;

/// Deeper documents are refused before anything recurses over them.
const MAX_DEPTH: usize = 64;

/// How a value got its final text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Written as is in a stack file.
    File,
    /// Filled in by `${VAR}` references: each variable and whether its default was used.
    Env(Vec<(String, bool)>),
    /// Given on the command line as `--set ARG`.
    Set(String),
}

/// Where a key or value was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The stack file; for `--set`, the flag as typed (`--set app.port=80`).
    pub file: PathBuf,
    /// Position in that file; line 0 for the command line.
    pub pos: Pos,
    pub source: Source,
}

impl Origin {
    pub fn file(file: &Path, pos: Pos) -> Origin {
        Origin {
            file: file.to_path_buf(),
            pos,
            source: Source::File,
        }
    }
}

/// A key of a mapping, with where it was written.
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar. `plain` is false for quoted and block scalars, which are strings whatever text
    /// they hold; a plain one is typed by its text (`80` is a number).
    Scalar {
        text: String,
        plain: bool,
    },
    Map(Vec<(Key, Node)>),
    Seq(Vec<Node>),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub origin: Origin,
}

/// Builds the tree of the first document in `text`. Errors (syntax, duplicate keys, depth)
/// carry positions in `file`.
pub fn build(file: &Path, text: &str) -> Result<Node, Vec<Diagnostic>> {
    let mut b = Builder {
        file: file.to_path_buf(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        diags: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, false) {
        let pos = pos(*e.marker());
        return Err(vec![diag(
            file,
            pos,
            "",
            format!("this is not valid YAML: {}", e.info()),
        )]);
    }
    if !b.diags.is_empty() {
        return Err(b.diags);
    }
    Ok(b.root.unwrap_or(Node {
        value: Value::Map(Vec::new()),
        origin: Origin::file(file, Pos::START),
    }))
}

pub fn diag(file: &Path, pos: Pos, path: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: pos.line,
        column: pos.column,
        path: path.to_string(),
        message,
        expected: None,
        hint: None,
    }
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

enum Partial {
    Map {
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
        start: Pos,
        anchor: usize,
    },
    Seq {
        items: Vec<Node>,
        start: Pos,
        anchor: usize,
    },
}

struct Builder {
    file: PathBuf,
    stack: Vec<Partial>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    diags: Vec<Diagnostic>,
}

impl Builder {
    fn path(&self) -> String {
        let mut p = String::new();
        for frame in &self.stack {
            match frame {
                Partial::Map { key: Some(k), .. } => p = super::source::join(&p, &k.name),
                Partial::Map { key: None, .. } => {}
                Partial::Seq { items, .. } => p = format!("{p}[{}]", items.len()),
            }
        }
        p
    }

    /// True when the next node is a mapping key.
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Partial::Map { key: None, .. }))
    }

    fn attach(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Partial::Map { entries, key, .. }) => {
                if let Some(k) = key.take() {
                    entries.push((k, node));
                }
            }
            Some(Partial::Seq { items, .. }) => items.push(node),
        }
    }

    fn key(&mut self, name: String, at: Pos) {
        let duplicate = match self.stack.last() {
            Some(Partial::Map { entries, .. }) => entries.iter().any(|(k, _)| k.name == name),
            _ => false,
        };
        if duplicate {
            let path = super::source::join(&self.path(), &name);
            let d = diag(&self.file, at, &path, format!("duplicate key `{name}`"));
            self.diags.push(d);
        }
        let origin = Origin::file(&self.file, at);
        if let Some(Partial::Map { key, .. }) = self.stack.last_mut() {
            *key = Some(Key { name, origin });
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                if self.expects_key() {
                    self.key(text, at);
                    return;
                }
                let tagged_str = tag.is_some_and(|t| t.suffix == "str");
                let plain = style == TScalarStyle::Plain && !tagged_str;
                let node = Node {
                    value: Value::Scalar { text, plain },
                    origin: Origin::file(&self.file, at),
                };
                self.attach(node, anchor);
            }
            Event::Alias(id) => {
                if self.expects_key() {
                    return;
                }
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    value: Value::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                    origin: Origin::file(&self.file, at),
                });
                self.attach(node, 0);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if self.expects_key() || self.stack.len() >= MAX_DEPTH {
                    let why = if self.expects_key() {
                        "a mapping key must be a plain value".to_string()
                    } else {
                        format!("the document nests deeper than {MAX_DEPTH} levels")
                    };
                    let d = diag(&self.file, at, &self.path(), why);
                    self.diags.push(d);
                }
                let partial = if matches!(ev, Event::MappingStart(..)) {
                    Partial::Map {
                        entries: Vec::new(),
                        key: None,
                        start: at,
                        anchor,
                    }
                } else {
                    Partial::Seq {
                        items: Vec::new(),
                        start: at,
                        anchor,
                    }
                };
                self.stack.push(partial);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (value, first, start, anchor) = match self.stack.pop() {
                    Some(Partial::Map {
                        entries,
                        start,
                        anchor,
                        ..
                    }) => {
                        let first = entries.first().map(|(k, _)| k.origin.pos);
                        (Value::Map(entries), first, start, anchor)
                    }
                    Some(Partial::Seq {
                        items,
                        start,
                        anchor,
                    }) => {
                        let first = items.first().map(|n| n.origin.pos);
                        (Value::Seq(items), first, start, anchor)
                    }
                    None => return,
                };
                // A block collection's own mark sits after its first key: point at its first
                // child instead, as the source map does.
                let node = Node {
                    value,
                    origin: Origin::file(&self.file, first.unwrap_or(start)),
                };
                self.attach(node, anchor);
            }
            _ => {}
        }
    }
}

/// Deep merge of `over` onto `base`: mappings merge key by key, anything else is replaced.
pub fn merge(base: Node, over: Node) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(overs)) => {
            for (k, v) in overs {
                match entries.iter().position(|(bk, _)| bk.name == k.name) {
                    Some(i) => {
                        let (_, old) = entries.remove(i);
                        entries.insert(i, (k, merge(old, v)));
                    }
                    None => entries.push((k, v)),
                }
            }
            Node {
                value: Value::Map(entries),
                origin: base.origin,
            }
        }
        (_, value) => Node {
            value,
            origin: over.origin,
        },
    }
}

/// One step of a `--set` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `app.environment.FOO` or `network.subnets[1]` as steps; `None` when malformed.
pub fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return None;
        }
        steps.push(Step::Key(name.to_string()));
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let index = rest.get(1..close)?.parse().ok()?;
            steps.push(Step::Index(index));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(steps)
}

/// Puts `value` at `steps` under `root`, creating mappings on the way. Fails (with why) when
/// the path goes through a value that is not a mapping or past the end of a list.
pub fn set(root: &mut Node, steps: &[Step], value: Node) -> Result<(), String> {
    let Some((first, rest)) = steps.split_first() else {
        *root = value;
        return Ok(());
    };
    match (first, &mut root.value) {
        (Step::Key(name), Value::Map(entries)) => {
            let i = match entries.iter().position(|(k, _)| &k.name == name) {
                Some(i) => i,
                None => {
                    let empty = Node {
                        value: Value::Map(Vec::new()),
                        origin: value.origin.clone(),
                    };
                    let key = Key {
                        name: name.clone(),
                        origin: value.origin.clone(),
                    };
                    entries.push((key, empty));
                    entries.len() - 1
                }
            };
            let (k, child) = &mut entries[i];
            if rest.is_empty() {
                k.origin = value.origin.clone();
            }
            set(child, rest, value)
        }
        (Step::Index(i), Value::Seq(items)) => {
            let len = items.len();
            match items.get_mut(*i) {
                Some(child) => set(child, rest, value),
                None if *i == len && rest.is_empty() => {
                    items.push(value);
                    Ok(())
                }
                None => Err(format!("the list has {len} item(s)")),
            }
        }
        (Step::Key(name), _) => Err(format!(
            "cannot set key `{name}` inside a non-mapping value"
        )),
        (Step::Index(i), _) => Err(format!(
            "cannot set item [{i}] of a value that is not a list"
        )),
    }
}

/// Every scalar, in document order, with its path (mutable, for interpolation).
pub fn scalars_mut<'a>(node: &'a mut Node, path: String, out: &mut Vec<(String, &'a mut Node)>) {
    if matches!(node.value, Value::Scalar { .. }) {
        out.push((path, node));
        return;
    }
    match &mut node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let p = super::source::join(&path, &k.name);
                scalars_mut(v, p, out);
            }
        }
        Value::Seq(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                scalars_mut(v, format!("{path}[{i}]"), out);
            }
        }
        Value::Scalar { .. } => {}
    }
}

/// Origins of every key and value by path (the same dotted paths as the source map).
#[derive(Debug, Default)]
pub struct OriginIndex {
    pub keys: HashMap<String, Origin>,
    pub values: HashMap<String, Origin>,
    /// Scalars in document order: path, text, origin.
    pub leaves: Vec<(String, String, Origin)>,
}

impl OriginIndex {
    pub fn of(root: &Node) -> OriginIndex {
        let mut index = OriginIndex::default();
        index.walk(root, String::new());
        index
    }

    fn walk(&mut self, node: &Node, path: String) {
        self.values.insert(path.clone(), node.origin.clone());
        match &node.value {
            Value::Scalar { text, .. } => {
                self.leaves.push((path, text.clone(), node.origin.clone()))
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    let p = super::source::join(&path, &k.name);
                    self.keys.insert(p.clone(), k.origin.clone());
                    self.walk(v, p);
                }
            }
            Value::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.walk(v, format!("{path}[{i}]"));
                }
            }
        }
    }

    /// The origin of the value at `path`, or of its nearest ancestor.
    pub fn value(&self, path: &str) -> Option<&Origin> {
        let mut p = path.to_string();
        loop {
            if let Some(o) = self.values.get(&p) {
                return Some(o);
            }
            p = super::source::parent(&p)?;
        }
    }
}

/// Writes the tree back out as YAML (flow style, one entry per line). Plain scalars stay plain
/// when their text is safe to leave unquoted, so they keep the type YAML gives them (`80` stays
/// a number); anything else is written as a double-quoted string, which is what it was.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    emit_into(node, 0, &mut out);
    out.push('\n');
    out
}

fn emit_into(node: &Node, depth: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match &node.value {
        Value::Scalar { text, plain } => out.push_str(&scalar(text, *plain)),
        Value::Map(entries) if entries.is_empty() => out.push_str("{}"),
        Value::Seq(items) if items.is_empty() => out.push_str("[]"),
        Value::Map(entries) => {
            out.push_str("{\n");
            for (i, (k, v)) in entries.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&quote(&k.name));
                out.push_str(": ");
                emit_into(v, depth + 1, out);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Seq(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                emit_into(v, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
    }
}

fn scalar(text: &str, plain: bool) -> String {
    if plain && text.is_empty() {
        return "null".to_string();
    }
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '~'));
    if plain && safe {
        text.to_string()
    } else {
        quote(text)
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{}\"", text.escape_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Node {
        build(Path::new("t.yaml"), text).expect("builds")
    }

    #[test]
    fn the_emitted_yaml_keeps_types_and_order() {
        let t = tree("b: 1\na:\n  x: \"80\"\n  y: [p, 'q r']\n  z: nginx:1.27\n  e:\n");
        let back = emit(&t);
        let v: yaml_serde::Value = yaml_serde::from_str(&back).expect("valid yaml");
        assert_eq!(v["b"], yaml_serde::Value::from(1));
        assert_eq!(v["a"]["x"], yaml_serde::Value::from("80"));
        assert_eq!(v["a"]["y"][1], yaml_serde::Value::from("q r"));
        assert_eq!(v["a"]["z"], yaml_serde::Value::from("nginx:1.27"));
        assert!(v["a"]["e"].is_null());
        assert!(back.find("\"b\"") < back.find("\"a\""));
    }

    #[test]
    fn maps_merge_and_lists_and_scalars_replace() {
        let base = tree("name: dev\napp:\n  image: a\n  port: 80\nnetwork:\n  subnets: [s1, s2]\n");
        let over = build(
            Path::new("prod.yaml"),
            "name: prod\napp:\n  image: b\nnetwork:\n  subnets: [s3]\n",
        )
        .expect("builds");
        let merged = OriginIndex::of(&merge(base, over));
        let leaf = |p: &str| {
            merged
                .leaves
                .iter()
                .find(|(path, ..)| path == p)
                .map(|(_, text, o)| (text.clone(), o.file.display().to_string(), o.pos.line))
        };
        assert_eq!(leaf("name"), Some(("prod".into(), "prod.yaml".into(), 1)));
        assert_eq!(leaf("app.image"), Some(("b".into(), "prod.yaml".into(), 3)));
        assert_eq!(leaf("app.port"), Some(("80".into(), "t.yaml".into(), 4)));
        assert_eq!(
            leaf("network.subnets[0]"),
            Some(("s3".into(), "prod.yaml".into(), 5))
        );
        assert_eq!(leaf("network.subnets[1]"), None);
    }

    #[test]
    fn set_paths_create_maps_and_refuse_to_cross_scalars() {
        let mut t = tree("app:\n  image: a\nlist: [x]\n");
        let v = |s: &str| Node {
            value: Value::Scalar {
                text: s.into(),
                plain: true,
            },
            origin: Origin::file(Path::new("--set"), Pos { line: 0, column: 0 }),
        };
        let steps = parse_path("app.environment.MODE").expect("path");
        set(&mut t, &steps, v("prod")).expect("set");
        set(&mut t, &parse_path("list[0]").expect("path"), v("y")).expect("set");
        let err = set(&mut t, &parse_path("app.image.x").expect("path"), v("1"));
        assert!(err.is_err());
        assert!(set(&mut t, &parse_path("list[5]").expect("path"), v("1")).is_err());
        let idx = OriginIndex::of(&t);
        assert!(idx
            .leaves
            .iter()
            .any(|(p, text, _)| p == "app.environment.MODE" && text == "prod"));
        assert!(idx
            .leaves
            .iter()
            .any(|(p, text, _)| p == "list[0]" && text == "y"));
        assert_eq!(parse_path("a..b"), None);
        assert_eq!(
            parse_path("n.s[2]"),
            Some(vec![
                Step::Key("n".into()),
                Step::Key("s".into()),
                Step::Index(2)
            ])
        );
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let d = build(Path::new("t.yaml"), "a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!((d[0].line, d[0].column, d[0].path.as_str()), (3, 1, "a"));
        let d = build(Path::new("t.yaml"), "a: [1\n").expect_err("syntax");
        assert_eq!(d[0].file, PathBuf::from("t.yaml"));
    }

    #[test]
    fn anchors_are_resolved() {
        let t = tree("x: &a {k: 1}\ny: *a\n");
        let idx = OriginIndex::of(&t);
        assert!(idx.leaves.iter().any(|(p, ..)| p == "y.k"));
    }
}
