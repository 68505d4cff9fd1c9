//! Refuses credentials pasted into a stack file: AWS keys, URLs with a password, and values
//! shaped like the tokens of common services (Stripe, GitHub, Slack) or a PEM private key.
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
        } else if !s.is_key && url_with_password(&s.value) {
            Some("a URL with a password in it (`scheme://user:password@host`)")
        } else if !s.is_key {
            key_shape(&s.value)
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

/// `scheme://user:password@host` with a literal password. A `${VAR}` in its place is a
/// reference, not a password.
pub fn url_with_password(value: &str) -> bool {
    value.match_indices("://").any(|(i, _)| {
        let rest = &value[i + 3..];
        let authority = rest
            .split(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .next()
            .unwrap_or("");
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((_, password)) => {
                    !host.is_empty() && !password.is_empty() && !password.starts_with("${")
                }
                None => false,
            },
            None => false,
        }
    })
}

/// Services' token formats: a prefix, then at least `min` characters of `body`.
struct Shape {
    prefix: &'static str,
    min: usize,
    what: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        prefix: "sk_live_",
        min: 16,
        what: "a Stripe secret key",
    },
    Shape {
        prefix: "rk_live_",
        min: 16,
        what: "a Stripe restricted key",
    },
    Shape {
        prefix: "ghp_",
        min: 30,
        what: "a GitHub token",
    },
    Shape {
        prefix: "gho_",
        min: 30,
        what: "a GitHub token",
    },
    Shape {
        prefix: "ghu_",
        min: 30,
        what: "a GitHub token",
    },
    Shape {
        prefix: "ghs_",
        min: 30,
        what: "a GitHub token",
    },
    Shape {
        prefix: "ghr_",
        min: 30,
        what: "a GitHub token",
    },
    Shape {
        prefix: "github_pat_",
        min: 22,
        what: "a GitHub token",
    },
    Shape {
        prefix: "xoxb-",
        min: 10,
        what: "a Slack token",
    },
    Shape {
        prefix: "xoxp-",
        min: 10,
        what: "a Slack token",
    },
    Shape {
        prefix: "xoxa-",
        min: 10,
        what: "a Slack token",
    },
    Shape {
        prefix: "xoxr-",
        min: 10,
        what: "a Slack token",
    },
    Shape {
        prefix: "xoxs-",
        min: 10,
        what: "a Slack token",
    },
    Shape {
        prefix: "xoxe-",
        min: 10,
        what: "a Slack token",
    },
];

/// What kind of key `value` contains, if it contains one of the known shapes (a token prefix at
/// a word start followed by enough token characters, or a PEM private key block).
pub fn key_shape(value: &str) -> Option<&'static str> {
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY-----") {
        return Some("a PEM private key");
    }
    let bytes = value.as_bytes();
    SHAPES.iter().find_map(|shape| {
        value.match_indices(shape.prefix).find_map(|(i, _)| {
            let word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            let body = bytes[i + shape.prefix.len()..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                .count();
            (word_start && body >= shape.min).then_some(shape.what)
        })
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
    fn finds_urls_with_passwords() {
        assert!(url_with_password("mysql://app:hunter2@db/x"));
        assert!(url_with_password("see https://u:p@example.org:8443/path"));
        assert!(!url_with_password("https://example.org/a@b"));
        assert!(!url_with_password("mysql://app@db/x"));
        assert!(!url_with_password("mysql://app:${DB_PASSWORD}@db/x"));
        assert!(!url_with_password("ghcr.io/acme/bookstore:1.0"));
    }

    #[test]
    fn finds_key_shapes() {
        let stripe = format!("sk_live_{}", "4eC39HqLyjWDarjtT1zdp7dc");
        assert_eq!(key_shape(&stripe), Some("a Stripe secret key"));
        let gh = format!("token ghp_{}", "a".repeat(36));
        assert_eq!(key_shape(&gh), Some("a GitHub token"));
        assert_eq!(
            key_shape(&format!("github_pat_{}", "A1_".repeat(10))),
            Some("a GitHub token")
        );
        assert_eq!(
            key_shape("xoxb-123456789012-abcdefghij"),
            Some("a Slack token")
        );
        assert_eq!(
            key_shape("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"),
            Some("a PEM private key")
        );
        // Short or embedded look-alikes are not keys.
        assert_eq!(key_shape("sk_live_short"), None);
        assert_eq!(key_shape(&format!("mask_live_{}", "x".repeat(20))), None);
        assert_eq!(key_shape("-----BEGIN CERTIFICATE-----"), None);
    }

    #[test]
    fn finds_credential_keys_anywhere() {
        let map = SourceMap::build("app:\n  environment:\n    AWS_SECRET_ACCESS_KEY: abc\n");
        let d = scan(Path::new("s.yaml"), &map);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (3, 5));
    }
}
