//! Stack files: the model, loading with positions, validation and the JSON schema.
//!
//! Loading is all-or-nothing and makes no AWS call: a [`Stack`] exists only once the file is
//! fully valid.

pub mod diagnostic;
pub mod interpolate;
pub mod layers;
pub mod model;
pub mod secrets_scan;
pub mod source;
mod tree;
pub mod validate;
pub mod warnings;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, StackError};
pub use layers::{Loaded, Provenance, Sources};
pub use model::*;
use source::SourceMap;

/// A stack file that parsed and validated.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The file it came from, as given.
    pub path: PathBuf,
    /// Its parsed, defaulted content.
    pub spec: StackFile,
}

impl Stack {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The folder relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }
}

/// The largest stack file accepted. Real ones are a few KB; the bound keeps a wrong or hostile
/// file from being read whole.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Reads, parses and validates a stack file. No more than [`MAX_BYTES`] (and one byte, to know)
/// are read.
pub fn load(path: &Path) -> Result<Stack, StackError> {
    use std::io::Read;
    let read_err = |source| StackError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() > MAX_BYTES {
        let text = String::from_utf8_lossy(&bytes[..MAX_BYTES]);
        return Err(too_large(path, &text));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    parse(path, &text)
}

fn too_large(path: &Path, text: &str) -> StackError {
    let at = source::Pos::of_offset(text, MAX_BYTES);
    StackError::Invalid(vec![Diagnostic {
        file: path.to_path_buf(),
        line: at.line,
        column: at.column,
        path: String::new(),
        message: format!("the file is larger than {} KiB", MAX_BYTES / 1024),
        expected: Some("a stack file of at most 1 MiB".to_string()),
        hint: Some("is this the right file? stack files are a few KB".to_string()),
    }])
}

/// A problem found in a valid stack by a check that lives above this module (whether its files
/// render, for one): reported like any validation error, at the position of `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The YAML path of the value at fault (`app.environment.FOO`).
    pub path: String,
    pub message: String,
    pub expected: String,
}

/// Checks run on a stack once it validates; see [`Finding`].
pub type ExtraCheck<'a> = &'a dyn Fn(&Stack) -> Vec<Finding>;

/// Parses and validates stack text; `path` is used for messages and relative files.
pub fn parse(path: &Path, text: &str) -> Result<Stack, StackError> {
    parse_checked(path, text, &|_| Vec::new())
}

/// [`parse`], then `extra` on the valid stack.
pub fn parse_checked(path: &Path, text: &str, extra: ExtraCheck) -> Result<Stack, StackError> {
    if text.len() > MAX_BYTES {
        return Err(too_large(path, text));
    }
    let map = SourceMap::build(text);
    if let Some(at) = map.too_deep() {
        // Refused before serde sees it: nothing else about such a file is worth reporting.
        return Err(StackError::Invalid(vec![Diagnostic {
            file: path.to_path_buf(),
            line: at.line,
            column: at.column,
            path: map.path_at(at).unwrap_or_default().to_string(),
            message: format!(
                "the document nests deeper than {} levels",
                source::MAX_DEPTH
            ),
            expected: Some(format!(
                "at most {} levels of mappings and lists",
                source::MAX_DEPTH
            )),
            hint: Some("a stack file nests a few levels; check the brackets".to_string()),
        }]));
    }
    // Credentials are refused before anything else looks at the file, whatever key holds them.
    let mut diags = secrets_scan::scan(path, &map);
    match yaml_serde::from_str::<StackFile>(text) {
        Ok(spec) => {
            let stack = Stack {
                path: path.to_path_buf(),
                spec,
            };
            diags.extend(validate::validate(&stack, &map));
            if diags.is_empty() {
                diags.extend(extra(&stack).into_iter().map(|f| {
                    let at = map.value_pos(&f.path);
                    Diagnostic {
                        file: path.to_path_buf(),
                        line: at.line,
                        column: at.column,
                        path: f.path,
                        message: f.message,
                        expected: (!f.expected.is_empty()).then_some(f.expected),
                        hint: None,
                    }
                }));
            }
            if diags.is_empty() {
                Ok(stack)
            } else {
                Err(StackError::Invalid(diags))
            }
        }
        Err(err) => {
            diags.push(validate::from_serde(path, &map, &err));
            Err(StackError::Invalid(diags))
        }
    }
}

/// The JSON Schema of the stack file, for editors (`iac schema`).
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(StackFile);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_stack_gets_the_documented_defaults() {
        let s = parse(
            Path::new("s.yaml"),
            "name: min\ntier: single-vm\napp:\n  image: nginx:1.27\n",
        )
        .expect("valid");
        assert_eq!(s.spec.network.vpc, "default");
        assert_eq!(s.spec.app.port, 5000);
        assert_eq!(s.spec.instance.instance_type, "t3.micro");
        assert_eq!(s.spec.instance.image, "ubuntu-24.04");
        assert_eq!(s.spec.instance.disk_gb, 20);
    }

    #[test]
    fn all_semantic_errors_are_reported_together() {
        let text = "name: Bad_Name\ntier: single-vm\napp:\n  image: x\n  health_path: nope\nnetwork:\n  ssh_from: 1.2.3.4\n";
        match parse(Path::new("s.yaml"), text) {
            Err(StackError::Invalid(d)) => {
                let paths: Vec<_> = d.iter().map(|d| d.path.as_str()).collect();
                assert_eq!(paths, vec!["name", "app.health_path", "network.ssh_from"]);
                assert_eq!((d[2].line, d[2].column), (7, 13));
            }
            other => panic!("expected errors, got {other:?}"),
        }
    }
}
