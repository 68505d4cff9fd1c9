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

/// Reads, parses and validates a stack file.
pub fn load(path: &Path) -> Result<Stack, StackError> {
    let text = std::fs::read_to_string(path).map_err(|source| StackError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates stack text; `path` is used for messages and relative files.
pub fn parse(path: &Path, text: &str) -> Result<Stack, StackError> {
    let map = SourceMap::build(text);
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
