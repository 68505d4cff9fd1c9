//! Names, characters and ranges AWS enforces on what `iac` derives from the stack file, which
//! the emulator lets through: caught here, with the line, instead of halfway through `up`.

use super::{Checker, IMAGE_ALIASES};
use crate::stack::model::*;

pub(super) fn check_aws_rules(c: &mut Checker, s: &StackFile) {
    check_name_prefixes(c, &s.name);
    if s.tier == Tier::AlbAsg {
        if let Some(db) = &s.database {
            check_master_user(c, &db.user);
        }
        if let Some(lb) = &s.load_balancer {
            if lb.timeout_s < 2 {
                c.err(
                    "load_balancer.timeout_s",
                    format!(
                        "a health check timeout of {} s is below what ELB accepts",
                        lb.timeout_s
                    ),
                    "2 to 120 seconds, shorter than `interval_s`",
                    "5 s suits most apps",
                );
            }
        }
    }
    for (k, v) in &s.tags {
        if !is_tag_text(k) || !is_tag_text(v) {
            c.err_at_key(
                &format!("tags.{k}"),
                format!("tag `{k}: {v}` has characters SSM and EFS refuse in tags"),
                "letters, digits, spaces and `_ . : / = + - @`",
                "the stack's tags go on every resource, SSM parameters and file systems included",
            );
        }
    }
    check_architecture(c, s);
}

/// The stack name starts the names of load balancers (`internal-` is reserved), security
/// groups (`sg-` is reserved) and RDS identifiers (no two hyphens in a row).
fn check_name_prefixes(c: &mut Checker, name: &str) {
    let why = if name.contains("--") {
        "contains `--`, which RDS identifiers cannot"
    } else if name.starts_with("internal-") {
        "starts with `internal-`, which load balancer names cannot"
    } else if name.starts_with("sg-") {
        "starts with `sg-`, which security group names cannot"
    } else {
        return;
    };
    c.err(
        "name",
        format!("stack name `{name}` {why}"),
        "a name without `--` that does not start with `internal-` or `sg-`",
        "the name prefixes the names of the stack's AWS resources",
    );
}

/// Aurora MySQL master user names: 1 to 16 letters or digits, starting with a letter.
fn check_master_user(c: &mut Checker, user: &str) {
    let ok = (1..=16).contains(&user.len())
        && user.starts_with(|ch: char| ch.is_ascii_alphabetic())
        && user.chars().all(|ch| ch.is_ascii_alphanumeric());
    if !ok {
        c.err(
            "database.user",
            format!("`{user}` is not an Aurora MySQL master user name"),
            "1 to 16 letters or digits, starting with a letter",
            "e.g. `bookstore`",
        );
    }
}

/// The characters SSM and EFS accept in tag keys and values: letters, digits, space separators
/// and `_ . : / = + - @`.
fn is_tag_text(s: &str) -> bool {
    s.chars().all(|ch| {
        ch.is_alphabetic()
            || ch.is_numeric()
            || (ch.is_whitespace() && !ch.is_control())
            || "_.:/=+-@".contains(ch)
    })
}

/// Graviton (Arm) types cannot boot the x86_64 images the aliases resolve to.
fn check_architecture(c: &mut Checker, s: &StackFile) {
    if !IMAGE_ALIASES.iter().any(|(a, _)| *a == s.instance.image) {
        return;
    }
    let mut types = vec![("instance.type", Some(&s.instance.instance_type))];
    types.push((
        "web.type",
        s.web.as_ref().and_then(|w| w.instance_type.as_ref()),
    ));
    types.push((
        "balancer.type",
        s.balancer.as_ref().and_then(|b| b.instance_type.as_ref()),
    ));
    types.push((
        "database.type",
        s.database.as_ref().and_then(|d| d.instance_type.as_ref()),
    ));
    types.push((
        "scaler.monitor.type",
        s.scaler
            .as_ref()
            .and_then(|sc| sc.monitor.instance_type.as_ref()),
    ));
    for (path, t) in types {
        let Some(t) = t.filter(|t| is_arm_type(t)) else {
            continue;
        };
        c.err(
            path,
            format!(
                "`{t}` is an Arm (Graviton) type, but `{}` is an x86_64 image",
                s.instance.image
            ),
            "an x86_64 type such as `t3.micro`",
            "or set `instance.image` to an arm64 AMI id",
        );
    }
}

/// `t4g`, `m7g`, `c6gn`, `x2gd`, `a1`, …: a `g` among the letters after the generation number.
fn is_arm_type(t: &str) -> bool {
    let family = t.split('.').next().unwrap_or_default();
    if family == "a1" {
        return true;
    }
    let Some(digit) = family.find(|ch: char| ch.is_ascii_digit()) else {
        return false;
    };
    let suffix = family[digit..].trim_start_matches(|ch: char| ch.is_ascii_digit());
    suffix.split('-').next().unwrap_or_default().contains('g')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_types() {
        for t in [
            "t4g.micro",
            "m7g.large",
            "c6gn.xlarge",
            "x2gd.large",
            "a1.medium",
            "g5g.xlarge",
            "is4gen.large",
        ] {
            assert!(is_arm_type(t), "{t}");
        }
        for t in [
            "t3.micro",
            "m5dn.large",
            "g4dn.xlarge",
            "c7i-flex.large",
            "m7a.large",
            "g5.xlarge",
        ] {
            assert!(!is_arm_type(t), "{t}");
        }
    }

    #[test]
    fn tag_characters() {
        assert!(is_tag_text("Team Books: prod/eu=1+2-x@y_z.w"));
        assert!(is_tag_text("Équipe"));
        assert!(!is_tag_text("a,b"));
        assert!(!is_tag_text("tab\there"));
        assert!(!is_tag_text("50%"));
    }
}
