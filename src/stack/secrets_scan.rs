//! Refuses AWS credentials pasted into a stack file.
//!
//! Runs on every scalar of the raw document, keys included, so a credential is caught even under
//! a misspelt or unknown key.

use std::path::Path;

use super::diagnostic::Diagnostic;
use super::source::SourceMap;

const CREDENTIAL_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

const HINT: &str =
    "remove it (and rotate it: it may already be in version control); iac reads credentials \
only from the standard AWS chain (environment, profile, SSO, instance metadata)";

/// Returns one diagnostic per credential found.
pub fn scan(file: &Path, map: &SourceMap) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for s in map.scalars() {
        let what = if s.is_key && is_credential_key(&s.value) {
            Some("an AWS credential key")
        } else if !s.is_key && contains_access_key_id(&s.value) {
            Some("an AWS access key id")
        } else if !s.is_key
            && s.value
                .to_ascii_lowercase()
                .contains("aws_secret_access_key")
        {
            Some("an AWS secret access key")
        } else {
            None
        };
        if let Some(what) = what {
            out.push(Diagnostic {
                file: file.to_path_buf(),
                line: s.pos.line,
                column: s.pos.column,
                path: s.path.clone(),
                message: format!("this looks like {what}; stack files must never hold credentials"),
                expected: None,
                hint: Some(HINT.to_string()),
            });
        }
    }
    out
}

fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    CREDENTIAL_KEYS.contains(&k.as_str())
}

/// AKIA / ASIA (and the other IAM unique-id prefixes) followed by 16 upper-case letters or digits.
pub fn contains_access_key_id(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() < 20 {
        return false;
    }
    (0..=bytes.len() - 20).any(|i| {
        let window = &bytes[i..i + 20];
        let prefix_ok = matches!(&window[..4], b"AKIA" | b"ASIA" | b"AIDA" | b"AROA");
        let body_ok = window[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let bounded_left = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let bounded_right = i + 20 == bytes.len() || !bytes[i + 20].is_ascii_alphanumeric();
        prefix_ok && body_ok && bounded_left && bounded_right
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_access_key_ids() {
        assert!(contains_access_key_id("AKIAIOSFODNN7EXAMPLE"));
        assert!(contains_access_key_id("key=ASIAIOSFODNN7EXAMPLE;"));
        assert!(!contains_access_key_id("AKIAIOSFODNN7EXAMPLEX"));
        assert!(!contains_access_key_id("ghcr.io/acme/bookstore:1.0"));
    }

    #[test]
    fn finds_credential_keys_anywhere() {
        let map = SourceMap::build("app:\n  environment:\n    AWS_SECRET_ACCESS_KEY: abc\n");
        let d = scan(Path::new("s.yaml"), &map);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (3, 5));
    }
}
