//! Loading a stack from several layers: stack files overlaid in order, `${VAR}` references
//! filled from the environment, then `--set PATH=VALUE` flags.
//!
//! The merged document goes through exactly the parse, credential scan and validation a single
//! file goes through ([`super::parse`]); each error is then moved back to the file, line and
//! column (or the flag) that set the value it is about.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::diagnostic::{Diagnostic, StackError};
use super::source::{Pos, SourceMap};
use super::tree::{self, Node, Origin, OriginIndex, Source, Value};
use super::{interpolate, Stack};

/// Where a stack comes from: files in overlay order, then `--set` arguments.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    /// `PATH=VALUE`, as typed after `--set`.
    pub sets: Vec<String>,
}

/// A value that did not come as written from the first file: where its final text came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// Dotted YAML path.
    pub path: String,
    /// The final value (hidden when the key names a secret).
    pub value: String,
    /// `$IMAGE_TAG (stack.yaml:6:10)`, `--set app.port=80`, `prod.yaml:3:7`.
    pub from: String,
}

/// A valid stack and the values that came from outside its first file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub stack: Stack,
    pub provenance: Vec<Provenance>,
}

/// Key words whose values a plan never shows.
const HIDDEN: &[&str] = &["PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY"];

/// Reads, merges, interpolates and validates. `env` looks up environment variables.
/// `extra` runs on the stack once it validates (see [`super::Finding`]).
pub fn load(
    src: &Sources,
    env: &dyn Fn(&str) -> Option<String>,
    extra: super::ExtraCheck,
) -> Result<Loaded, StackError> {
    let Some(first) = src.files.first() else {
        return Err(StackError::Invalid(vec![Diagnostic {
            file: PathBuf::from("iac"),
            line: 0,
            column: 0,
            path: String::new(),
            message: "no stack file given".to_string(),
            expected: Some("STACK_FILE, or -f FILE (repeatable)".to_string()),
            hint: None,
        }]));
    };
    let mut texts = Vec::new();
    for path in &src.files {
        let text = std::fs::read_to_string(path).map_err(|source| StackError::Read {
            path: path.clone(),
            source,
        })?;
        texts.push((path, text));
    }
    // One file that needs none of this is parsed exactly as before, positions and all.
    if let [(path, text)] = texts.as_slice() {
        if src.sets.is_empty() && !text.contains('$') {
            return Ok(Loaded {
                stack: super::parse_checked(path, text, extra)?,
                provenance: Vec::new(),
            });
        }
    }
    let mut diags = Vec::new();
    let mut merged: Option<Node> = None;
    for (path, text) in &texts {
        let layer = tree::build(path, text).and_then(|mut t| {
            let d = interpolate_tree(&mut t, path, text, env);
            if d.is_empty() {
                Ok(t)
            } else {
                Err(d)
            }
        });
        match layer {
            Ok(t) => {
                merged = Some(match merged.take() {
                    Some(base) => tree::merge(base, t),
                    None => t,
                })
            }
            Err(d) => diags.extend(d),
        }
    }
    let Some(mut root) = merged.filter(|_| diags.is_empty()) else {
        return Err(StackError::Invalid(diags));
    };
    for arg in &src.sets {
        if let Err(d) = apply_set(&mut root, arg) {
            diags.push(*d);
        }
    }
    if !diags.is_empty() {
        return Err(StackError::Invalid(diags));
    }
    let text = tree::emit(&root);
    let index = OriginIndex::of(&root);
    match super::parse_checked(first, &text, extra) {
        Ok(stack) => Ok(Loaded {
            stack,
            provenance: provenance(&index, first),
        }),
        Err(StackError::Invalid(diags)) => {
            let map = SourceMap::build(&text);
            Err(StackError::Invalid(
                diags
                    .into_iter()
                    .map(|d| relocate(d, &map, &index))
                    .collect(),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Fills `${VAR}` in every scalar value of one file's tree.
fn interpolate_tree(
    root: &mut Node,
    file: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Diagnostic> {
    let mut scalars = Vec::new();
    tree::scalars_mut(root, String::new(), &mut scalars);
    let mut diags = Vec::new();
    for (path, node) in scalars {
        let Value::Scalar { text: value, .. } = &mut node.value else {
            continue;
        };
        if !value.contains('$') {
            continue;
        }
        match interpolate::expand(value, env) {
            Ok(e) => {
                *value = e.text;
                if !e.vars.is_empty() {
                    node.origin.source = Source::Env(e.vars);
                }
            }
            Err(e) => {
                // The nth reference with this token in the value is the nth in the file text
                // from where the scalar starts.
                let nth = value[..e.offset].matches(e.token.as_str()).count();
                let pos = locate(text, node.origin.pos, &e.token, nth).unwrap_or(node.origin.pos);
                let mut d = tree::diag(file, pos, &path, e.message);
                d.hint = Some(e.hint);
                diags.push(d);
            }
        }
    }
    diags
}

/// Where the `nth` (0-based) occurrence of `token` after `from` is in `text`.
fn locate(text: &str, from: Pos, token: &str, nth: usize) -> Option<Pos> {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(from.line.saturating_sub(1))
        .map(str::len)
        .sum();
    let start = line_start
        + text[line_start..]
            .char_indices()
            .nth(from.column.saturating_sub(1))
            .map(|(i, _)| i)?;
    let found = start + text[start..].match_indices(token).nth(nth)?.0;
    let before = &text[..found];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    Some(Pos { line, column })
}

/// Applies one `--set PATH=VALUE`; the value is typed as a plain YAML scalar (`3` is a number).
fn apply_set(root: &mut Node, arg: &str) -> Result<(), Box<Diagnostic>> {
    let flag = format!("--set {arg}");
    let fail = |path: &str, message: String, hint: &str| {
        Box::new(Diagnostic {
            file: PathBuf::from(&flag),
            line: 0,
            column: 0,
            path: path.to_string(),
            message,
            expected: Some("--set path.to.key=value".to_string()),
            hint: (!hint.is_empty()).then(|| hint.to_string()),
        })
    };
    let Some((path, value)) = arg.split_once('=') else {
        return Err(fail("", "no `=` in the argument".to_string(), ""));
    };
    let Some(steps) = tree::parse_path(path) else {
        return Err(fail(
            path,
            format!("`{path}` is not a path"),
            "keys joined by `.`, list items as `[n]`: app.image, network.subnets[0]",
        ));
    };
    let node = Node {
        value: Value::Scalar {
            text: value.to_string(),
            plain: true,
        },
        origin: Origin {
            file: PathBuf::from(&flag),
            pos: Pos { line: 0, column: 0 },
            source: Source::Set(arg.to_string()),
        },
    };
    tree::set(root, &steps, node).map_err(|why| fail(path, why, ""))
}

/// Moves a diagnostic from the merged document back to where its value was set.
fn relocate(mut d: Diagnostic, map: &SourceMap, index: &OriginIndex) -> Diagnostic {
    let here = Pos {
        line: d.line,
        column: d.column,
    };
    let origin = if map.value_pos(&d.path) == here {
        index.value(&d.path)
    } else if map.key_pos(&d.path) == here {
        index.keys.get(&d.path).or_else(|| index.value(&d.path))
    } else if let Some(p) = map.path_at(here) {
        index.value(p)
    } else {
        index.value(&d.path)
    };
    let Some(origin) = origin else {
        return d;
    };
    d.file = origin.file.clone();
    d.line = origin.pos.line;
    d.column = origin.pos.column;
    if let Source::Env(vars) = &origin.source {
        let names: Vec<String> = vars.iter().map(|(v, _)| format!("${v}")).collect();
        d.message = format!("{} (the value came from {})", d.message, names.join(", "));
    }
    d
}

fn provenance(index: &OriginIndex, first: &Path) -> Vec<Provenance> {
    index
        .leaves
        .iter()
        .filter(|(_, _, o)| o.source != Source::File || o.file != first)
        .map(|(path, text, o)| {
            let hidden = path
                .rsplit(['.', '['])
                .next()
                .map(|k| k.to_ascii_uppercase())
                .is_some_and(|k| HIDDEN.iter().any(|w| k.contains(w)));
            Provenance {
                path: path.clone(),
                value: if hidden {
                    "(hidden)".to_string()
                } else {
                    text.clone()
                },
                from: describe(o),
            }
        })
        .collect()
}

fn describe(o: &Origin) -> String {
    let at = format!("{}:{}:{}", o.file.display(), o.pos.line, o.pos.column);
    match &o.source {
        Source::File => at,
        Source::Set(_) => o.file.display().to_string(),
        Source::Env(vars) => {
            let names: Vec<String> = vars
                .iter()
                .map(|(v, defaulted)| {
                    if *defaulted {
                        format!("default of ${v}")
                    } else {
                        format!("${v}")
                    }
                })
                .collect();
            format!("{} ({at})", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn env(name: &str) -> Option<String> {
        (name == "TAG").then(|| "abc123".to_string())
    }

    const BASE: &str =
        "name: shop-dev\ntier: single-vm\napp:\n  image: shop:${TAG}\n  port: 5000\n";

    #[test]
    fn overlays_env_and_set_make_one_stack_and_say_where_values_came_from() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = write(dir.path(), "base.yaml", BASE);
        let prod = write(
            dir.path(),
            "prod.yaml",
            "name: shop-prod\ninstance:\n  type: t3.small\n",
        );
        let src = Sources {
            files: vec![base.clone(), prod.clone()],
            sets: vec!["app.port=8080".into()],
        };
        let l = load(&src, &env, &|_| Vec::new()).expect("valid");
        assert_eq!(l.stack.name(), "shop-prod");
        assert_eq!(l.stack.spec.app.image, "shop:abc123");
        assert_eq!(l.stack.spec.app.port, 8080);
        assert_eq!(l.stack.spec.instance.instance_type, "t3.small");
        assert_eq!(l.stack.path, base);
        let from = |p: &str| {
            l.provenance
                .iter()
                .find(|v| v.path == p)
                .map(|v| v.from.clone())
        };
        assert_eq!(
            from("app.image"),
            Some(format!("$TAG ({}:4:10)", base.display()))
        );
        assert_eq!(from("app.port"), Some("--set app.port=8080".to_string()));
        assert_eq!(from("name"), Some(format!("{}:1:7", prod.display())));
        assert_eq!(from("tier"), None);
    }

    fn errors(src: &Sources) -> Vec<Diagnostic> {
        match load(src, &env, &|_| Vec::new()) {
            Err(StackError::Invalid(d)) => d,
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn errors_point_at_the_file_or_flag_that_set_the_value() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = write(dir.path(), "base.yaml", BASE);
        let prod = write(
            dir.path(),
            "prod.yaml",
            "app:\n  health_path: nope\n  colour: red\n",
        );
        let d = errors(&Sources {
            files: vec![base.clone(), prod.clone()],
            sets: vec![],
        });
        let at = |path: &str| {
            d.iter()
                .find(|d| d.path == path)
                .map(|d| (d.file.display().to_string(), d.line, d.column))
        };
        // serde stops at the first type error, so each kind is checked in its own run below.
        assert_eq!(
            at("app.colour"),
            Some((prod.display().to_string(), 3, 3)),
            "{d:?}"
        );
        let d = errors(&Sources {
            files: vec![base.clone(), prod.clone()],
            sets: vec!["app.port=http".into()],
        });
        assert!(
            d.iter()
                .any(|d| d.file == Path::new("--set app.port=http") && d.path == "app.port"),
            "{d:?}"
        );
        let prod2 = write(dir.path(), "prod2.yaml", "app:\n  health_path: nope\n");
        let d = errors(&Sources {
            files: vec![base, prod2.clone()],
            sets: vec!["network.ssh_from=1.2.3.4".into()],
        });
        let at = |path: &str| {
            d.iter()
                .find(|d| d.path == path)
                .map(|d| (d.file.display().to_string(), d.line, d.column))
        };
        assert_eq!(
            at("app.health_path"),
            Some((prod2.display().to_string(), 2, 16))
        );
        assert_eq!(
            at("network.ssh_from"),
            Some(("--set network.ssh_from=1.2.3.4".to_string(), 0, 0))
        );
    }

    #[test]
    fn an_undefined_variable_is_reported_at_its_reference() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "s.yaml",
            "name: shop\ntier: single-vm\napp:\n  image: \"shop:${TAG}-${NOPE}\"\n",
        );
        let d = errors(&Sources {
            files: vec![f],
            sets: vec![],
        });
        assert_eq!(
            (d[0].line, d[0].column, d[0].path.as_str()),
            (4, 23, "app.image")
        );
        assert!(d[0].message.contains("NOPE"));
    }

    #[test]
    fn interpolated_values_meet_the_credential_and_secret_checks() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "s.yaml",
            "name: shop\ntier: single-vm\napp:\n  image: shop:1\n  environment:\n    NOTE: ${KEY}\n    DB_PASSWORD: ${PW:-hunter2}\n",
        );
        let env = |n: &str| (n == "KEY").then(|| "AKIAIOSFODNN7EXAMPLE".to_string());
        let d = match load(
            &Sources {
                files: vec![f.clone()],
                sets: vec![],
            },
            &env,
            &|_| Vec::new(),
        ) {
            Err(StackError::Invalid(d)) => d,
            other => panic!("expected errors, got {other:?}"),
        };
        let note = d
            .iter()
            .find(|d| d.path == "app.environment.NOTE")
            .expect("credential found");
        assert_eq!(
            (note.file.clone(), note.line, note.column),
            (f.clone(), 6, 11)
        );
        assert!(note.message.contains("$KEY"), "{}", note.message);
        assert!(!note.to_string().contains("AKIA"), "{note}");
        assert!(
            d.iter()
                .any(|d| d.path == "app.environment.DB_PASSWORD" && d.line == 7),
            "{d:?}"
        );
    }
}
