//! What the scaler benchmarks share: finding the release binaries they drive, reading CPU time
//! and resident memory from /proc, and the bench/test switch.

#![allow(dead_code)] // each bench uses its own subset

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const TOKEN: &str = "bench-token-0123456789";

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
/// then the benchmark must cost nothing (it needs release binaries and a minute or more).
pub fn invoked_by_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A number from the environment, or its default; a value that does not parse is a mistake
/// worth stopping for, not silently replacing.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// The release binary `bin` of workspace package `package`: `$env_var` when set, else built
/// now with `cargo build --release` into the target dir this bench runs from.
pub fn release_binary(bin: &str, package: &str, env_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    // target/release/deps/<bench>-<hash> → target/release
    let exe = std::env::current_exe().expect("the bench's own path");
    let release = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("the bench runs from <target>/release/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    eprintln!("building {bin} (release) …");
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--manifest-path",
            manifest,
        ])
        // The bench's own target dir, whatever CARGO_TARGET_DIR says or does not say.
        .arg("--target-dir")
        .arg(release.parent().expect("<target>"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {bin}: {e}"));
    assert!(
        status.success(),
        "cargo build --release -p {package} failed"
    );
    let path = release.join(bin);
    assert!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    path
}

/// Clock ticks per second of /proc's CPU times (USER_HZ).
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// utime + stime of a /proc `stat` file (a process or one thread), in seconds.
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are plain numbers.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_sec())
}

/// This thread's kernel id (for /proc/self/task/<tid>/stat).
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// VmRSS of this process in MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Milliseconds with up to three decimals, for tables.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}
