//! `${VAR}` and `${VAR:-default}` in stack-file strings, filled from the environment.
//!
//! Pure: the environment is passed in as a lookup, so tests need not touch the process's.
//! `$$` is a literal `$`; a `$` followed by anything but `{` or `$` is left as it is.

/// A string after interpolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// Every variable referenced, and whether its default was used (unset or empty).
    pub vars: Vec<(String, bool)>,
}

/// Why a string cannot be interpolated; `offset` is the byte offset of the `${` at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub offset: usize,
    /// The reference as written up to the name (`${IMAGE_TAG`), to find it in the file.
    pub token: String,
    pub message: String,
    pub hint: String,
}

/// Expands `text`, looking variables up with `env`.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut vars = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            offset += i + 2;
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            out.push('$');
            offset += i + 1;
            rest = after;
            continue;
        };
        let at = offset + i;
        let Some(close) = body_and_tail.find('}') else {
            return Err(ExpandError {
                offset: at,
                token: "${".to_string(),
                message: "`${` is not closed by `}`".to_string(),
                hint: "write `${NAME}` or `${NAME:-default}`; `$$` is a literal `$`".to_string(),
            });
        };
        let body = &body_and_tail[..close];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        let token = format!("${{{name}");
        if !is_name(name) {
            return Err(ExpandError {
                offset: at,
                token,
                message: format!("`${{{body}}}` is not a variable reference"),
                hint: "a name is letters, digits and `_`, not starting with a digit; \
                       `${NAME:-default}` gives a default; `$$` is a literal `$`"
                    .to_string(),
            });
        }
        let value = env(name).filter(|v| default.is_none() || !v.is_empty());
        match (value, default) {
            (Some(v), _) => {
                out.push_str(&v);
                vars.push((name.to_string(), false));
            }
            (None, Some(d)) => {
                out.push_str(d);
                vars.push((name.to_string(), true));
            }
            (None, None) => {
                return Err(ExpandError {
                    offset: at,
                    token,
                    message: format!("environment variable `{name}` is not set"),
                    hint: format!(
                        "export {name}=..., or give a default: `${{{name}:-value}}`; \
                         write `$${{{name}}}` for a literal `${{{name}}}`"
                    ),
                })
            }
        }
        let consumed = i + 2 + close + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(Expanded { text: out, vars })
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("abc123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_defaults_and_escapes() {
        let e = expand("bookstore:${TAG}", &env).expect("expands");
        assert_eq!(e.text, "bookstore:abc123");
        assert_eq!(e.vars, vec![("TAG".to_string(), false)]);
        let e = expand("${NOPE:-t3.micro}/${EMPTY:-x}", &env).expect("expands");
        assert_eq!(e.text, "t3.micro/x");
        assert_eq!(
            e.vars,
            vec![("NOPE".to_string(), true), ("EMPTY".to_string(), true)]
        );
        let e = expand("cost $$5 and $HOME and $${TAG}", &env).expect("expands");
        assert_eq!(e.text, "cost $5 and $HOME and ${TAG}");
        assert!(e.vars.is_empty());
        assert_eq!(expand("${EMPTY}", &env).expect("set but empty").text, "");
    }

    #[test]
    fn an_undefined_variable_is_an_error_at_its_reference() {
        let e = expand("x-${TAG}-${MISSING}", &env).expect_err("undefined");
        assert_eq!(e.offset, 9);
        assert_eq!(e.token, "${MISSING");
        assert!(e.message.contains("MISSING"), "{}", e.message);
        assert!(expand("${1X}", &env).is_err());
        assert!(expand("a ${TAG", &env).is_err());
    }
}
