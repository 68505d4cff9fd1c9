//! minijinja filters that make user values safe in the languages the templates emit.
//!
//! Every user value that reaches a shell script goes through `shell_quote`, every one that
//! reaches YAML goes through `yaml_str` (or `compose_str` where docker compose would otherwise
//! interpolate `$`). Templates never concatenate raw user text into code.

use minijinja::{Error, ErrorKind, Value};

/// Characters that never need quoting in a POSIX shell word. `~` and `=` are left out on
/// purpose: `~` expands at the start of a word and `=` matters in assignments.
fn is_shell_safe(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || "_./:@%+,-".contains(ch)
}

/// Quotes `s` as one shell word: unchanged when it only holds safe characters (keeps the
/// script readable), else single-quoted with embedded `'` written as `'\''`. Values holding
/// `$` or a backtick are double-quoted with those escaped instead: equally literal, and
/// shellcheck does not mistake them for expansions that were meant to happen (SC2016).
pub fn shell_quote_str(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_shell_safe) {
        return s.to_string();
    }
    if s.contains(['$', '`']) {
        let mut out = String::with_capacity(s.len() + 8);
        out.push('"');
        for ch in s.chars() {
            // Inside double quotes only these four keep a special meaning (history expansion
            // with `!` is off in scripts).
            if matches!(ch, '$' | '`' | '"' | '\\') {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
        return out;
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Turns a template value into the text it stands for; numbers are allowed (ports), missing
/// values and structures are template bugs and fail the render.
fn scalar_text(filter: &str, value: &Value) -> Result<String, Error> {
    if value.is_undefined() || value.is_none() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            format!("{filter}: value is missing"),
        ));
    }
    if let Some(s) = value.as_str() {
        return Ok(s.to_string());
    }
    if value.is_number() || value.kind() == minijinja::value::ValueKind::Bool {
        return Ok(value.to_string());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{filter}: expected a string or number, got {}",
            value.kind()
        ),
    ))
}

/// `{{ x|shell_quote }}`: one safely quoted shell word.
pub fn shell_quote(value: &Value) -> Result<String, Error> {
    let s = scalar_text("shell_quote", value)?;
    // A NUL byte cannot be carried by a shell word at all; refuse rather than truncate.
    if s.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "shell_quote: value contains a NUL byte",
        ));
    }
    Ok(shell_quote_str(&s))
}

/// JSON string encoding; a JSON string is a valid YAML double-quoted scalar.
pub fn yaml_str_of(s: &str) -> String {
    // Serializing a &str cannot fail; the fallback keeps this function total anyway.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// `{{ x|yaml_str }}`: a quoted YAML scalar.
pub fn yaml_str(value: &Value) -> Result<String, Error> {
    Ok(yaml_str_of(&scalar_text("yaml_str", value)?))
}

/// `{{ x|compose_str }}`: a quoted YAML scalar with `$` doubled, because docker compose
/// interpolates `$VAR` in compose files and a user's literal `$` must stay literal.
pub fn compose_str(value: &Value) -> Result<String, Error> {
    Ok(yaml_str_of(
        &scalar_text("compose_str", value)?.replace('$', "$$"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(s: &str) -> String {
        shell_quote(&Value::from(s)).unwrap()
    }

    #[test]
    fn safe_words_stay_bare() {
        assert_eq!(quote("/bookstore/secret-key"), "/bookstore/secret-key");
        assert_eq!(quote("ops@example.org"), "ops@example.org");
        assert_eq!(shell_quote(&Value::from(5000)).unwrap(), "5000");
    }

    #[test]
    fn unsafe_words_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("two words"), "'two words'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), r#""\$(rm -rf /)""#);
        assert_eq!(quote("a`b\"c\\d$"), r#""a\`b\"c\\d\$""#);
        assert_eq!(quote("~root"), "'~root'");
        assert_eq!(quote("a\nb"), "'a\nb'");
    }

    #[test]
    fn quoted_words_round_trip_through_bash() {
        for nasty in [
            "it's \"quoted\" $HOME `id` \\ back\nslash; * !x",
            "it's plain; * ~ \\ \"q\" !x",
            "",
            "tab\tand\nnewline",
        ] {
            let script = format!("printf %s {}", quote(nasty));
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("bash runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), nasty, "{script}");
        }
    }

    #[test]
    fn missing_and_nul_values_fail() {
        assert!(shell_quote(&Value::UNDEFINED).is_err());
        assert!(shell_quote(&Value::from(())).is_err());
        assert!(shell_quote(&Value::from("a\0b")).is_err());
        assert!(yaml_str(&Value::UNDEFINED).is_err());
    }

    #[test]
    fn yaml_strings_are_json_encoded() {
        assert_eq!(yaml_str(&Value::from("a \"b\"")).unwrap(), r#""a \"b\"""#);
        assert_eq!(yaml_str(&Value::from("x: y #z")).unwrap(), r#""x: y #z""#);
        assert_eq!(yaml_str(&Value::from("l1\nl2")).unwrap(), r#""l1\nl2""#);
    }

    #[test]
    fn compose_strings_escape_interpolation() {
        assert_eq!(
            compose_str(&Value::from("pa$$ ${HOME}")).unwrap(),
            r#""pa$$$$ $${HOME}""#
        );
    }
}
