//! The arrows of the architecture, checked on the source (README, "Development"): nothing
//! under src/aws, src/plan, src/apply or src/stack names a tier, and plan, apply, stack and
//! render use nothing above them. What a lower layer needs to know about a tier travels down
//! as data on the resources; a `use` that climbs back up fails here, with the file and line.

use std::path::{Path, PathBuf};

/// The crate's top-level modules each layer may not name.
const RULES: &[(&str, &[&str])] = &[
    ("stack", &["aws", "cli", "cost", "scaler", "tiers"]),
    ("render", &["aws", "cli", "cost", "scaler", "tiers"]),
    ("plan", &["aws", "cli", "cost", "scaler", "tiers"]),
    ("apply", &["aws", "cli", "cost", "scaler", "tiers"]),
    ("aws", &["cli", "cost", "scaler", "tiers"]),
    ("cost", &["aws", "cli", "scaler", "tiers"]),
    // The scaler runs the custom-scaler tier's pool: it follows that tier's declarations.
    ("scaler", &["cli", "cost"]),
    ("tiers", &["aws", "cli", "cost", "scaler"]),
];

/// The layers whose code never names a tier (the stack file names its tier, the tiers are
/// named by the tiers, and the scaler is a tier's own part).
const TIERLESS: &[&str] = &["aws", "plan", "apply", "cost"];

/// Words that name a tier in code (the stack's own `Tier` type included).
const TIER_WORDS: &[&str] = &[
    "Tier",
    "single_vm",
    "lb_vms",
    "swarm::",
    "alb_asg",
    "custom_scaler",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file below src/: `src/plan/diff.rs` is `["plan", "diff"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The top-level modules a line of code names through `crate::…` or `super::…` paths.
fn named_tops(module: &[String], line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let mut path: Vec<&str> = rest
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let mut base: Vec<String> = module.to_vec();
            if path.first() == Some(&"crate") {
                base.clear();
                path.remove(0);
            } else {
                while path.first() == Some(&"super") {
                    path.remove(0);
                    base.pop();
                }
            }
            if let Some(first) = base
                .first()
                .cloned()
                .or(path.first().map(|s| s.to_string()))
            {
                found.push(first);
            }
            i += rest
                .find(|c: char| c.is_whitespace() || c == ';')
                .unwrap_or(rest.len())
                .max(1);
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// Code lines only: comments (doc comments and their links included) are not arrows.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(n, line)| {
        let code = line.split("//").next().unwrap_or_default();
        (!code.trim().is_empty()).then_some((n + 1, code))
    })
}

fn violations() -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} has no source");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file");
            let module = module_of(&src, &file);
            for (n, code) in code_lines(&text) {
                for top in named_tops(&module, code) {
                    if forbidden.contains(&top.as_str()) {
                        out.push(format!(
                            "{}:{n}: names `{top}`: {}",
                            file.display(),
                            code.trim()
                        ));
                    }
                }
                if TIERLESS.contains(layer) {
                    for word in TIER_WORDS {
                        let named = code.match_indices(word).any(|(at, _)| {
                            let before = code[..at].chars().next_back();
                            let after = code[at + word.len()..].chars().next();
                            let edge = |c: Option<char>| {
                                !c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                            };
                            edge(before) && (word.ends_with("::") || edge(after))
                        });
                        if named {
                            out.push(format!(
                                "{}:{n}: names the tier word `{word}`: {}",
                                file.display(),
                                code.trim()
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn lower_layers_name_nothing_above_them() {
    let found = violations();
    assert!(
        found.is_empty(),
        "arrows pointing up:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_each_way_of_naming_a_module() {
    let m = |p: &str| p.split('/').map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        named_tops(&m("plan/diff"), "use crate::aws::tags;"),
        ["aws"]
    );
    assert_eq!(
        named_tops(&m("plan/diff"), "x.get(crate::aws::tags::DESIRED)"),
        ["aws"]
    );
    assert_eq!(
        named_tops(&m("plan/diff"), "use super::super::tiers::x;"),
        ["tiers"]
    );
    // `super::tiers` from the stack's validation is its own submodule, not the tiers layer.
    assert_eq!(
        named_tops(&m("stack/validate"), "use super::tiers;"),
        ["stack"]
    );
    assert_eq!(
        named_tops(&m("stack/validate/scaler"), "use super::Checker;"),
        ["stack"]
    );
    assert!(named_tops(&m("plan/diff"), "let supercrate::x = 1;").is_empty());
    let lines: Vec<_> =
        code_lines("/// see [`crate::tiers`]\nlet a = 1; // crate::cli\n").collect();
    assert_eq!(lines, [(2, "let a = 1; ")]);
}
