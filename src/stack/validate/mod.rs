//! Semantic checks on a parsed stack file, every error with its path, position and a hint.
//!
//! All checks run and all errors are returned together, so a user fixes a file in one pass.

use std::path::Path;

use super::diagnostic::Diagnostic;
use super::model::*;
use super::source::SourceMap;
use super::Stack;

/// Tiers this version can deploy.
pub const IMPLEMENTED_TIERS: &[Tier] = &[
    Tier::SingleVm,
    Tier::AlbAsg,
    Tier::LbVms,
    Tier::Swarm,
    Tier::CustomScaler,
];

/// The most a standard-tier SSM parameter value holds, in bytes (the advanced tier is paid and
/// opt-in, so `iac` never uses it).
pub const SSM_STANDARD_VALUE_MAX: usize = 4096;

/// Image aliases and the public SSM parameters they resolve through.
pub const IMAGE_ALIASES: &[(&str, &str)] = &[
    (
        "ubuntu-24.04",
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
    ),
    (
        "ubuntu-22.04",
        "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
    ),
    (
        "amazon-linux-2023",
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    ),
];

/// Environment variable names that must not carry literal values.
const SECRET_WORDS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "PRIVATE_KEY",
    "API_KEY",
];

mod aws_rules;
mod scaler;
mod tiers;

use aws_rules::check_aws_rules;
use scaler::check_custom_scaler;
pub use tiers::aurora_engine_version;
use tiers::{check_alb_asg, check_lb_vms, check_swarm, is_aurora_version};

struct Checker<'a> {
    file: &'a Path,
    map: &'a SourceMap,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>, expected: &str, hint: &str) {
        let pos = self.map.value_pos(path);
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
            expected: (!expected.is_empty()).then(|| expected.to_string()),
            hint: (!hint.is_empty()).then(|| hint.to_string()),
        });
    }

    /// Reports an error at the key (not the value) of `path`.
    fn err_at_key(&mut self, path: &str, message: impl Into<String>, expected: &str, hint: &str) {
        let pos = self.map.key_pos(path);
        self.err(path, message, expected, hint);
        if let Some(last) = self.diags.last_mut() {
            last.line = pos.line;
            last.column = pos.column;
        }
    }
}

/// Runs every semantic check.
pub fn validate(stack: &Stack, map: &SourceMap) -> Vec<Diagnostic> {
    let s = &stack.spec;
    let mut c = Checker {
        file: &stack.path,
        map,
        diags: Vec::new(),
    };
    if s.version != 1 {
        c.err(
            "version",
            format!("unsupported format version {}", s.version),
            "1",
            "this iac reads format v1",
        );
    }
    check_stack_name(&mut c, &s.name);
    if let Some(region) = &s.region {
        if !is_region(region) {
            c.err(
                "region",
                format!("`{region}` is not an AWS region name"),
                "a region such as `us-east-1`",
                "AWS Academy accounts use `us-east-1`",
            );
        }
    }
    if !IMPLEMENTED_TIERS.contains(&s.tier) {
        let names: Vec<_> = IMPLEMENTED_TIERS.iter().map(|t| t.as_str()).collect();
        c.err(
            "tier",
            format!(
                "tier `{}` is not available in this version of iac",
                s.tier.as_str()
            ),
            &names.join(", "),
            "see the README for the tiers on the roadmap",
        );
    }
    check_app(&mut c, s);
    check_network(&mut c, &s.network);
    check_instance(&mut c, stack);
    if let Some(d) = &s.domain {
        check_domain(&mut c, d);
    }
    if let Some(db) = s.database.as_ref().filter(|_| s.tier != Tier::CustomScaler) {
        check_database(&mut c, s, db);
    }
    check_lb_vms(&mut c, s);
    check_swarm(&mut c, s);
    check_alb_asg(&mut c, s);
    check_custom_scaler(&mut c, s);
    check_tags(&mut c, s);
    check_aws_rules(&mut c, s);
    c.diags
}

/// What a stack name may be: also checked for `--stack NAME`, so that a name is always matched
/// exactly (EC2 tag filters would read `*` and `?` as wildcards).
pub const STACK_NAME_RULE: &str =
    "lowercase letters, digits and hyphens, starting with a letter, at most 32 characters";

/// Whether `name` follows [`STACK_NAME_RULE`].
pub fn is_valid_stack_name(name: &str) -> bool {
    name.len() <= 32
        && name.starts_with(|ch: char| ch.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

fn check_stack_name(c: &mut Checker, name: &str) {
    if !is_valid_stack_name(name) {
        let msg = if name.len() > 32 {
            format!(
                "stack name is {} characters long; the limit is 32",
                name.len()
            )
        } else {
            format!("`{name}` is not a valid stack name")
        };
        c.err(
            "name",
            msg,
            STACK_NAME_RULE,
            "the name prefixes AWS resource names, which have length and character limits",
        );
    }
}

fn check_app(c: &mut Checker, s: &StackFile) {
    let app = &s.app;
    if app.image.trim().is_empty()
        || app.image.chars().any(char::is_whitespace)
        || app.image.len() > 255
    {
        c.err(
            "app.image",
            format!("`{}` is not a container image reference", app.image),
            "an image such as `ghcr.io/acme/bookstore:1.4.2`",
            "",
        );
    }
    if app.port == 0 {
        c.err(
            "app.port",
            "port 0 is not a port",
            "a port between 1 and 65535",
            "",
        );
    } else if s.tier == Tier::SingleVm && matches!(app.port, 22 | 80 | 443) {
        c.err(
            "app.port",
            format!("port {} is taken on the VM (ssh or nginx)", app.port),
            "a port other than 22, 80 and 443",
            "nginx listens on 80/443 and forwards to the app's port; BookStore uses 5000",
        );
    }
    if !app.health_path.starts_with('/') {
        c.err(
            "app.health_path",
            format!("`{}` does not start with `/`", app.health_path),
            "an absolute path such as `/book/catalog`",
            "",
        );
    }
    for (key, value) in &app.environment {
        let path = format!("app.environment.{key}");
        if !is_env_name(key) {
            c.err_at_key(
                &path,
                format!("`{key}` is not a valid environment variable name"),
                "letters, digits and `_`, not starting with a digit",
                "",
            );
        }
        let upper = key.to_ascii_uppercase();
        if SECRET_WORDS.iter().any(|w| upper.contains(w)) && !value.is_empty() {
            c.err(&path, format!("`{key}` looks like a secret but is given in clear"), "a reference under `app.secrets`", &format!("store it in SSM Parameter Store and write `secrets: {{ {key}: {{ ssm: /{}/{} }} }}`", s.name, key.to_ascii_lowercase().replace('_', "-")));
        }
    }
    for (key, secret) in &app.secrets {
        let path = format!("app.secrets.{key}");
        if !is_env_name(key) {
            c.err_at_key(
                &path,
                format!("`{key}` is not a valid environment variable name"),
                "letters, digits and `_`, not starting with a digit",
                "",
            );
        }
        if app.environment.contains_key(key) {
            c.err_at_key(
                &path,
                format!("`{key}` is set both in `environment` and in `secrets`"),
                "each variable in one place",
                "",
            );
        }
        check_ssm_name(c, &format!("{path}.ssm"), &secret.ssm);
    }
}

fn check_ssm_name(c: &mut Checker, path: &str, name: &str) {
    let ok = name.starts_with('/')
        && name.len() <= 1011
        && !name.starts_with("/aws/")
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_.-/".contains(ch));
    if !ok {
        c.err(
            path,
            format!("`{name}` is not a usable SSM parameter name"),
            "a path such as `/bookstore/secret-key` (letters, digits, `_.-/`, not under `/aws/`)",
            "create it with `aws ssm put-parameter --type SecureString --name ...`",
        );
    }
}

fn check_network(c: &mut Checker, n: &Network) {
    if n.vpc != "default" && !is_aws_id(&n.vpc, "vpc-") {
        c.err(
            "network.vpc",
            format!("`{}` is neither `default` nor a VPC id", n.vpc),
            "`default` or an id such as `vpc-0a1b2c3d`",
            "",
        );
    }
    for (i, subnet) in n.subnets.iter().enumerate() {
        if !is_aws_id(subnet, "subnet-") {
            c.err(
                &format!("network.subnets[{i}]"),
                format!("`{subnet}` is not a subnet id"),
                "an id such as `subnet-0a1b2c3d`",
                "",
            );
        }
    }
    if let Some(cidr) = &n.ssh_from {
        if cidr.parse::<ipnet::IpNet>().is_err() {
            let hint = if cidr.parse::<std::net::IpAddr>().is_ok() {
                format!("a single address is written `{cidr}/32`")
            } else {
                "leave `ssh_from` out to keep port 22 closed".to_string()
            };
            c.err(
                "network.ssh_from",
                format!("`{cidr}` is not a CIDR block"),
                "a CIDR such as `203.0.113.7/32`",
                &hint,
            );
        }
    }
}

fn check_instance(c: &mut Checker, stack: &Stack) {
    let i = &stack.spec.instance;
    check_type(c, "instance.type", Some(&i.instance_type));
    let alias_ok = IMAGE_ALIASES.iter().any(|(a, _)| *a == i.image);
    if !alias_ok && !is_aws_id(&i.image, "ami-") {
        let aliases: Vec<_> = IMAGE_ALIASES.iter().map(|(a, _)| *a).collect();
        let hint = did_you_mean(&i.image, &aliases)
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_default();
        c.err(
            "instance.image",
            format!("`{}` is neither a known image alias nor an AMI id", i.image),
            &format!(
                "one of {} or an id such as `ami-0a1b2c3d`",
                aliases.join(", ")
            ),
            &hint,
        );
    }
    if !(8..=16384).contains(&i.disk_gb) {
        c.err(
            "instance.disk_gb",
            format!(
                "{} GiB is outside what gp3 allows for a root volume",
                i.disk_gb
            ),
            "a size between 8 and 16384",
            "the images need at least 8 GiB; 20 leaves room for images and MySQL data",
        );
    }
    if let Some(kp) = &i.key_pair {
        let name_ok = !kp.name.is_empty() && kp.name.len() <= 255 && kp.name.is_ascii();
        if !name_ok {
            c.err(
                "instance.key_pair.name",
                format!("`{}` is not a key pair name", kp.name),
                "1 to 255 ASCII characters",
                "AWS Academy accounts have `vockey`",
            );
        }
        if let Some(file) = &kp.public_key_file {
            let full = stack.base_dir().join(file);
            match std::fs::read_to_string(&full) {
                Ok(text) if is_public_key(&text) => {}
                Ok(_) => c.err(
                    "instance.key_pair.public_key_file",
                    format!("{} is not an OpenSSH public key", full.display()),
                    "a file starting with `ssh-ed25519`, `ssh-rsa` or `ecdsa-sha2-`",
                    "give the `.pub` file, never the private key",
                ),
                Err(e) => c.err(
                    "instance.key_pair.public_key_file",
                    format!("cannot read {}: {e}", full.display()),
                    "a readable public key file, relative to the stack file",
                    "",
                ),
            }
        }
    }
    if let Some(profile) = &i.instance_profile {
        let ok = !profile.is_empty()
            && profile.len() <= 128
            && profile
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "+=,.@_-".contains(ch));
        if !ok {
            c.err(
                "instance.instance_profile",
                format!("`{profile}` is not an instance profile name"),
                "a name such as `LabInstanceProfile`",
                "",
            );
        }
    }
    if !(1..=64).contains(&i.metadata_hop_limit) {
        c.err(
            "instance.metadata_hop_limit",
            format!("{} is not a hop limit", i.metadata_hop_limit),
            "an integer from 1 to 64",
            "leave it out: 1 keeps the instance's credentials away from its containers",
        );
    }
    if (!stack.spec.app.secrets.is_empty()
        || stack
            .spec
            .database
            .as_ref()
            .is_some_and(|d| d.password.is_some()))
        && i.instance_profile.is_none()
    {
        c.err("instance", "secrets are read from SSM at boot, but no instance profile is given", "`instance.instance_profile`", "AWS Academy accounts have `LabInstanceProfile`; elsewhere use a profile allowed ssm:GetParameter");
    }
}

/// The sizes EC2 names its types with, beside `<n>xlarge` and `metal-<n>xl`.
const SIZES: &[&str] = &[
    "nano", "micro", "small", "medium", "large", "xlarge", "metal",
];

/// Why `t` is not an EC2 instance type (`<family>.<size>`), or `None` when it is one.
fn instance_type_problem(t: &str) -> Option<String> {
    let Some((family, size)) = t.split_once('.') else {
        return Some("it has no `.` between its family and its size".to_string());
    };
    let family_ok = family.starts_with(|ch: char| ch.is_ascii_lowercase())
        && family
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
    if family.is_empty() {
        return Some("it has no family before its `.`".to_string());
    }
    if !family_ok {
        return Some(format!("`{family}` is not an instance family"));
    }
    let counted = |suffix: &str, prefix: &str| {
        size.strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(suffix))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let size_ok = SIZES.contains(&size) || counted("xlarge", "") || counted("xl", "metal-");
    (!size_ok).then(|| match did_you_mean(size, SIZES) {
        Some(near) => format!("`{size}` is not a size (did you mean `{family}.{near}`?)"),
        None => format!("`{size}` is not a size"),
    })
}

fn check_type(c: &mut Checker, path: &str, t: Option<&str>) {
    let Some((t, why)) = t.and_then(|t| Some((t, instance_type_problem(t)?))) else {
        return;
    };
    c.err(
        path,
        format!("`{t}` is not an EC2 instance type: {why}"),
        "`<family>.<size>` such as `t3.micro`; sizes are nano, micro, small, medium, large, xlarge, <n>xlarge and metal",
        "AWS Academy allows t2/t3 micro to medium",
    );
}

fn check_domain(c: &mut Checker, d: &Domain) {
    if !is_domain(&d.name) {
        c.err(
            "domain.name",
            format!("`{}` is not a fully qualified domain name", d.name),
            "a name such as `books.example.org`",
            "labels of letters, digits and hyphens, at most 253 characters",
        );
    }
    let email_ok = match d.email.split_once('@') {
        Some((local, host)) => {
            !local.is_empty() && !local.contains(char::is_whitespace) && is_domain(host)
        }
        None => false,
    };
    if !email_ok {
        c.err(
            "domain.email",
            format!("`{}` is not an email address", d.email),
            "an address such as `ops@example.org`",
            "Let's Encrypt sends expiry warnings there",
        );
    }
    if let Some(zone) = &d.hosted_zone {
        let is_id = zone.starts_with('Z')
            && zone.len() <= 32
            && zone
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit());
        // DNS names are case-insensitive (Route 53 compares them that way too).
        let zone_name = zone.trim_end_matches('.').to_ascii_lowercase();
        let name = d.name.to_ascii_lowercase();
        let is_parent = is_domain(&zone_name)
            && (name == zone_name || name.ends_with(&format!(".{zone_name}")));
        if !is_id && !is_parent {
            c.err(
                "domain.hosted_zone",
                format!(
                    "`{zone}` is neither a hosted zone id nor a zone that contains `{}`",
                    d.name
                ),
                "an id such as `Z0123456789ABC` or a parent domain of `domain.name`",
                "",
            );
        }
    }
}

fn check_database(c: &mut Checker, s: &StackFile, db: &Database) {
    let engines: &[&str] = match s.tier {
        Tier::LbVms => &["mysql", "mongodb"],
        Tier::AlbAsg => &["aurora-mysql"],
        _ => &["mysql"],
    };
    if !engines.contains(&db.engine.as_str()) {
        let hint = did_you_mean(&db.engine, engines)
            .map(|m| format!("did you mean `{m}`?"))
            .unwrap_or_default();
        let expected: Vec<String> = engines.iter().map(|e| format!("`{e}`")).collect();
        c.err(
            "database.engine",
            format!(
                "engine `{}` is not available in the {} tier",
                db.engine,
                s.tier.as_str()
            ),
            &expected.join(" or "),
            &hint,
        );
    }
    if s.tier == Tier::AlbAsg {
        if db.version != "8.0" && !is_aurora_version(&db.version) {
            c.err(
                "database.version",
                format!("`{}` is not an Aurora MySQL engine version", db.version),
                "`8.0` (RDS picks its current default) or a version such as `8.0.mysql_aurora.3.08.2`",
                "`aws rds describe-db-engine-versions --engine aurora-mysql` lists them",
            );
        }
    } else if db.version.is_empty()
        || !db
            .version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit()))
    {
        c.err(
            "database.version",
            format!("`{}` is not an engine version", db.version),
            "a version such as `8.0`",
            "",
        );
    }
    if !is_sql_identifier(&db.name, 64) {
        c.err(
            "database.name",
            format!("`{}` is not a database name", db.name),
            "letters, digits and `_`, at most 64 characters",
            "",
        );
    }
    if db.user.eq_ignore_ascii_case("root") {
        c.err("database.user", "the application must not connect as `root`", "a dedicated user such as `bookstore`", "the MySQL image refuses MYSQL_USER=root; iac keeps the root password on the instance only");
    } else if !is_sql_identifier(&db.user, 32) {
        c.err(
            "database.user",
            format!("`{}` is not a MySQL user name", db.user),
            "letters, digits and `_`, at most 32 characters",
            "",
        );
    }
    if let Some(p) = &db.password {
        check_ssm_name(c, "database.password.ssm", &p.ssm);
    }
    if !is_env_name(&db.url_env) {
        c.err(
            "database.url_env",
            format!("`{}` is not an environment variable name", db.url_env),
            "a name such as `DATABASE_URL`",
            "",
        );
    }
    if s.app.environment.contains_key(&db.url_env) || s.app.secrets.contains_key(&db.url_env) {
        c.err(
            "database.url_env",
            format!("`{}` is also set by the app section", db.url_env),
            "one source for the database URL",
            "iac builds the URL from the database section; remove it from the app",
        );
    }
}

fn check_tags(c: &mut Checker, s: &StackFile) {
    if s.tags.len() > 40 {
        c.err(
            "tags",
            format!("{} tags; at most 40 can be added", s.tags.len()),
            "40 tags or fewer",
            "AWS allows 50 per resource and iac uses some",
        );
    }
    for (k, v) in &s.tags {
        let path = format!("tags.{k}");
        let lower = k.to_ascii_lowercase();
        if k.is_empty() || k.len() > 128 || lower.starts_with("aws:") || lower.starts_with("iac:") {
            c.err_at_key(
                &path,
                format!("tag key `{k}` is not allowed"),
                "1 to 128 characters, not starting with `aws:` or `iac:`",
                "",
            );
        }
        if v.len() > 256 {
            c.err(
                &path,
                "tag value is longer than 256 characters",
                "at most 256 characters",
                "",
            );
        }
    }
}

/// Turns a serde error into a diagnostic with a position, a path and, for unknown keys and
/// variants, a did-you-mean.
pub fn from_serde(file: &Path, map: &SourceMap, err: &yaml_serde::Error) -> Diagnostic {
    let full = err.to_string();
    // yaml_serde formats "<path>: <message> at line L column C".
    let without_pos = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    let (mut path, message) = match without_pos.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
        _ => (String::new(), without_pos.to_string()),
    };
    let (mut line, mut column) = (1, 1);
    if let Some(loc) = err.location() {
        line = loc.line();
        column = loc.column();
        let names_its_own_key =
            message.starts_with("unknown field") || message.starts_with("missing field");
        if (path.is_empty() || path == ".") && !names_its_own_key {
            if let Some(p) = map.path_at(super::source::Pos { line, column }) {
                path = p.to_string();
            }
        }
    }
    if path == "." {
        path.clear();
    }
    let mut expected = None;
    let mut hint = None;
    let mut message = message;
    if let Some((got, choices)) = parse_unknown(&message) {
        let choices_ref: Vec<&str> = choices.iter().map(String::as_str).collect();
        let kind = if message.starts_with("unknown field") {
            "key"
        } else {
            "value"
        };
        if kind == "key" {
            let key_path = super::source::join(&path, &got);
            let pos = map.key_pos(&key_path);
            line = pos.line;
            column = pos.column;
            path = key_path;
        }
        message = format!("unknown {kind} `{got}`");
        expected = Some(format!(
            "one of {}",
            choices
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        hint = did_you_mean(&got, &choices_ref).map(|s| format!("did you mean `{s}`?"));
    } else if message.starts_with("invalid type: integer `-") && message.contains("expected u") {
        hint = Some("this value cannot be negative".to_string());
    } else if message.starts_with("invalid type") {
        hint = Some("check the value's type; quote strings that look like numbers".to_string());
    } else if message.starts_with("missing field") {
        hint = Some("see `iac schema` or the README for the required keys".to_string());
    }
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        path,
        message,
        expected,
        hint,
    }
}

/// Parses "unknown field `x`, expected one of `a`, `b`" (and "unknown variant …").
fn parse_unknown(message: &str) -> Option<(String, Vec<String>)> {
    if !message.starts_with("unknown field") && !message.starts_with("unknown variant") {
        return None;
    }
    let ticked: Vec<String> = message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let (got, rest) = ticked.split_first()?;
    Some((got.clone(), rest.to_vec()))
}

/// The closest candidate, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(got: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // One edit (a transposition counts as one) catches short keys such as `vcp` for `vpc`,
    // which similarity scores rate too low.
    let close = candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(got, c), *c))
        .filter(|(d, _)| *d <= 1.max(got.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    close.or_else(|| {
        candidates
            .iter()
            .map(|c| (strsim::jaro_winkler(got, c), *c))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c)
    })
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|ch| ch.is_ascii_digit()))
}

fn is_aws_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        (8..=17).contains(&hex.len())
            && hex
                .chars()
                .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
    })
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|ch: char| ch.is_ascii_digit())
        && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn is_sql_identifier(s: &str, max: usize) -> bool {
    is_env_name(s) && s.len() <= max
}

/// A fully qualified domain name: at least two labels, letters/digits/hyphens, alphabetic TLD.
pub fn is_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|ch| ch.is_ascii_alphabetic()))
}

fn is_public_key(text: &str) -> bool {
    let t = text.trim_start();
    (t.starts_with("ssh-ed25519 ") || t.starts_with("ssh-rsa ") || t.starts_with("ecdsa-sha2-"))
        && !t.contains("PRIVATE KEY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(is_domain("books.example.org"));
        assert!(is_domain("a-b.example.co"));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("-bad.example.org"));
        assert!(!is_domain("books.example.123"));
        assert!(!is_domain("books..example.org"));
    }

    #[test]
    fn regions_and_ids() {
        assert!(is_region("us-east-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("useast1"));
        assert!(is_aws_id("vpc-0a1b2c3d", "vpc-"));
        assert!(!is_aws_id("vpc-XYZ", "vpc-"));
    }

    #[test]
    fn instance_types() {
        for t in [
            "t3.micro",
            "m5.24xlarge",
            "u-6tb1.metal",
            "c7i.metal-48xl",
            "t4g.nano",
        ] {
            assert_eq!(instance_type_problem(t), None, "{t}");
        }
        let why = |t| instance_type_problem(t).unwrap_or_default();
        assert_eq!(why("t3.tiny"), "`tiny` is not a size");
        assert_eq!(
            why("t3.mirco"),
            "`mirco` is not a size (did you mean `t3.micro`?)"
        );
        assert_eq!(
            why("t3.micr"),
            "`micr` is not a size (did you mean `t3.micro`?)"
        );
        assert_eq!(
            why("t3.large2"),
            "`large2` is not a size (did you mean `t3.large`?)"
        );
        assert!(why("t3.nano.x").starts_with("`nano.x` is not a size"));
        assert_eq!(
            why("t3micro"),
            "it has no `.` between its family and its size"
        );
        assert_eq!(why("T3.micro"), "`T3` is not an instance family");
        assert_eq!(why(".micro"), "it has no family before its `.`");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("imgae", &["image", "port"]), Some("image"));
        assert_eq!(did_you_mean("zzzz", &["image", "port"]), None);
        assert_eq!(
            did_you_mean("vcp", &["vpc", "subnets", "ssh_from"]),
            Some("vpc")
        );
    }
}
