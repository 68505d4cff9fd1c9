//! Checks of the custom-scaler tier's `scaler` section: the policy (through the scaler's own
//! validation, mapped to positions), where the monitor listens, how the binaries are fetched,
//! and the sections that belong to other tiers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use iac_scaler::config::{self, Mode, PolicyConfig};

use super::{check_type, is_domain, Checker};
use crate::stack::model::*;

/// Most pool instances iac lets a monitor run (AWS Academy allows about 9 running instances).
pub const MAX_POOL: u32 = 20;

impl ScalerConf {
    /// The policy this section describes (checked with the scaler's own `config::validate`).
    pub fn policy(&self) -> PolicyConfig {
        let s = self;
        let secs = |v: u32| Duration::from_secs(u64::from(v));
        let millis = |v: u32| Duration::from_millis(u64::from(v));
        PolicyConfig {
            min: s.min,
            max: s.max,
            mode: match s.mode {
                ScalerMode::Thresholds => Mode::Thresholds {
                    high: s.high,
                    low: s.low,
                    out_samples: s.out_samples,
                    in_samples: s.in_samples,
                    step_out: s.step_out,
                    step_in: s.step_in,
                },
                ScalerMode::TargetTracking => Mode::TargetTracking {
                    target: s.target,
                    tolerance: s.tolerance,
                    scale_in_window: secs(s.scale_in_window_s),
                },
            },
            cooldown_out: secs(s.cooldown_out_s),
            cooldown_in: secs(s.cooldown_in_s),
            warmup: secs(s.warmup_s),
            heartbeat: millis(s.heartbeat_ms),
            dead_after: millis(s.dead_after_ms),
            boot_deadline: secs(s.boot_deadline_s),
        }
    }
}

/// What the policy checks expect, by field (the scaler's validation says what is wrong).
fn policy_expectation(path: &str) -> (&'static str, &'static str) {
    match path {
        "scaler.min" => ("min ≤ max", "the defaults are min 2, max 5"),
        "scaler.max" => ("1 or more", "the defaults are min 2, max 5"),
        "scaler.heartbeat_ms" => (
            "100 or more",
            "agents send one heartbeat per interval; 1000 (one second) is the default",
        ),
        "scaler.dead_after_ms" => (
            "at least twice `heartbeat_ms`",
            "one lost heartbeat must not make an instance dead; the default is 5000",
        ),
        "scaler.boot_deadline_s" => (
            "more than 0",
            "instances need minutes to boot; 300 is the default",
        ),
        "scaler.high" => ("a CPU percentage in (0, 100]", "the default is 75"),
        "scaler.low" => (
            "a CPU percentage in [0, 100], below `high`",
            "the defaults scale out above 75 and in below 15",
        ),
        "scaler.target" => ("a CPU percentage in (0, 100]", "the default is 50"),
        "scaler.tolerance" => (
            "0 or more",
            "0.1 means no action within ±10 % of the target",
        ),
        _ => ("1 or more", ""),
    }
}

/// `host:port`, host a name or an address (`[v6]:port` for IPv6). The host and port, or why not.
pub fn parse_host_port(s: &str) -> Result<(String, u16), &'static str> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return if sa.port() == 0 {
            Err("port 0")
        } else {
            Ok((sa.ip().to_string(), sa.port()))
        };
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("no `:port`");
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err("the port is not a number between 1 and 65535"),
    };
    let single_label = !host.is_empty()
        && host.len() <= 63
        && !host.starts_with('-')
        && host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
    if is_domain(host) || single_label {
        Ok((host.to_ascii_lowercase(), port))
    } else {
        Err("the host is neither a name nor an IP address")
    }
}

/// A host agents on other machines cannot reach: loopback, unspecified, `localhost`.
fn is_local_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

fn check_download(c: &mut Checker, path: &str, d: &Download) {
    let rest = d.url.strip_prefix("https://");
    let host_ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains('@')
    });
    let chars_ok = d
        .url
        .chars()
        .all(|ch| ch.is_ascii_graphic() && !"'\"`\\$<>{}|^".contains(ch));
    if !(host_ok && chars_ok) {
        c.err(
            &format!("{path}.url"),
            format!("`{}` is not an https:// URL iac can fetch", d.url),
            "an `https://` URL such as `https://github.com/acme/iac/releases/download/v1.0.0/iac-agent`",
            "the binary runs as root on every instance: plain http:// could be tampered with on the way",
        );
    }
    let sha_ok = d.sha256.len() == 64
        && d.sha256
            .chars()
            .all(|ch| ch.is_ascii_digit() || ('a'..='f').contains(&ch));
    if !sha_ok {
        c.err(
            &format!("{path}.sha256"),
            format!("`{}` is not a SHA-256 in lowercase hex", d.sha256),
            "64 lowercase hexadecimal characters",
            "compute it with `sha256sum <file>`; the instance refuses a binary with any other digest",
        );
    }
}

/// The custom-scaler section, and that it is not used by other tiers.
pub(super) fn check_custom_scaler(c: &mut Checker, s: &StackFile) {
    if s.tier != Tier::CustomScaler {
        if s.scaler.is_some() {
            c.err_at_key(
                "scaler",
                format!(
                    "`scaler` belongs to the custom-scaler tier, not `{}`",
                    s.tier.as_str()
                ),
                "no such section for this tier",
                "remove it, or set `tier: custom-scaler`",
            );
        }
        return;
    }
    // Sections of other tiers are refused by their own checks; these two have no meaning here.
    if s.database.is_some() {
        c.err_at_key(
            "database",
            "the custom-scaler tier runs no database",
            "no `database` section",
            "give the app the URL of a database it can reach through `app.secrets`, e.g. `DATABASE_URL: { ssm: /bookstore/database-url }`",
        );
    }
    if s.domain.is_some() {
        c.err_at_key(
            "domain",
            "the custom-scaler tier has no load balancer or fixed address to put a domain on",
            "no `domain` section",
            "use the alb-asg tier for one name in front of a scaled pool",
        );
    }
    let Some(sc) = &s.scaler else {
        c.err(
            "tier",
            "a custom-scaler stack needs a `scaler` section",
            "`scaler:` with at least `agent.binary` (url and sha256)",
            "see stacks/custom-scaler.yaml",
        );
        return;
    };
    let policy = sc.policy();
    if let Err(problems) = config::validate(&policy) {
        for (path, message) in problems {
            let (expected, hint) = policy_expectation(&path);
            c.err(&path, message, expected, hint);
        }
    }
    if sc.max > MAX_POOL {
        c.err(
            "scaler.max",
            format!("{} instances is more than iac lets one monitor run", sc.max),
            &format!("at most {MAX_POOL}"),
            "AWS Academy accounts allow about 9 running instances",
        );
    }
    let ec2 = sc.fleet == FleetKind::Ec2;
    let m = &sc.monitor;
    if m.port == 0 || m.port == 22 {
        c.err(
            "scaler.monitor.port",
            format!("port {} cannot be the monitor's gRPC port", m.port),
            "a port such as 7700",
            "",
        );
    }
    match m.admin.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_loopback() && a.port() != 0 => {}
        _ => c.err(
            "scaler.monitor.admin",
            format!("`{}` is not a loopback address and port", m.admin),
            "`127.0.0.1:<port>`, such as the default `127.0.0.1:7701`",
            "the admin API adds and removes instances; it is only ever served on the monitor's own loopback",
        ),
    }
    if let Some(addr) = &m.address {
        match parse_host_port(addr) {
            Err(why) => c.err(
                "scaler.monitor.address",
                format!("`{addr}` is not host:port ({why})"),
                "`host:port`, such as `10.0.1.20:7700` or `monitor.internal.example.org:7700`",
                "leave `address` out and `iac up` creates a monitor VM",
            ),
            Ok((host, _)) if ec2 && is_local_host(&host) => c.err(
                "scaler.monitor.address",
                format!("`{addr}` is this machine's own loopback or unspecified address; agents on EC2 instances cannot reach it"),
                "an address the instances can reach, such as the monitor's private IP and port",
                "leave `address` out and `iac up` creates a monitor VM in the stack; loopback addresses suit `fleet: local` only",
            ),
            Ok(_) => {}
        }
    }
    check_type(c, "scaler.monitor.type", m.instance_type.as_deref());
    if let Some(b) = &m.binary {
        check_download(c, "scaler.monitor.binary", b);
    }
    if let Some(a) = &sc.agent {
        check_download(c, "scaler.agent.binary", &a.binary);
        if a.admin_port == 0 || a.admin_port == 22 || a.admin_port == s.app.port {
            c.err(
                "scaler.agent.admin_port",
                format!(
                    "port {} is not free for the agent's admin endpoint",
                    a.admin_port
                ),
                "a port other than 22 and `app.port`, such as 7702",
                "the app's container publishes `app.port` on the same instance",
            );
        }
    }
    if !ec2 {
        return;
    }
    if s.app.port == 22 {
        c.err(
            "app.port",
            "port 22 is ssh",
            "the port the container listens on, such as 5000",
            "",
        );
    }
    if sc.agent.is_none() {
        c.err_at_key(
            "scaler",
            "the ec2 fleet installs `iac-agent` on every instance, but `scaler.agent` is missing",
            "`agent: { binary: { url: https://…, sha256: <64 hex> } }`",
            "build it with `cargo build --release -p iac-agent` and publish it, e.g. as a GitHub release asset",
        );
    }
    if m.address.is_none() && m.binary.is_none() {
        c.err_at_key(
            "scaler.monitor",
            "`iac up` creates a monitor VM, which needs the `iac` binary to run, but `monitor.binary` is missing",
            "`binary: { url: https://…, sha256: <64 hex> }`, or `address: host:port` of a monitor you run yourself",
            "publish a Linux x86_64 release build of iac and give its URL and `sha256sum`",
        );
    }
    // With app secrets and no profile, check_instance has said so already.
    if s.instance.instance_profile.is_none() && s.app.secrets.is_empty() {
        c.err(
            "instance",
            "the instances read the scaler's token and the monitor's address from SSM at boot, but no instance profile is given",
            "`instance.instance_profile`",
            "AWS Academy accounts have `LabInstanceProfile`",
        );
    }
    if m.address.is_none() {
        let stored = s.portable_yaml().unwrap_or_default();
        if stored.len() > super::SSM_STANDARD_VALUE_MAX {
            c.err(
                "scaler",
                format!(
                    "the stack as stored for the monitor is {} bytes; an SSM String parameter holds {}",
                    stored.len(),
                    super::SSM_STANDARD_VALUE_MAX
                ),
                "a shorter stack file",
                "shorten `app.environment` or `tags`",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            parse_host_port("10.0.0.5:7700"),
            Ok(("10.0.0.5".into(), 7700))
        );
        assert_eq!(
            parse_host_port("[fd00::1]:7700"),
            Ok(("fd00::1".into(), 7700))
        );
        assert_eq!(
            parse_host_port("Monitor.example.org:80"),
            Ok(("monitor.example.org".into(), 80))
        );
        assert_eq!(
            parse_host_port("monitor:7700"),
            Ok(("monitor".into(), 7700))
        );
        assert!(parse_host_port("10.0.0.5").is_err());
        assert!(parse_host_port("10.0.0.5:0").is_err());
        assert!(parse_host_port("10.0.0.5:99999").is_err());
        assert!(parse_host_port("a b:1").is_err());
        assert!(parse_host_port(":7700").is_err());
        assert!(parse_host_port("http://x:1").is_err());
    }

    #[test]
    fn local_hosts() {
        for h in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "localhost",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in ["10.0.0.5", "monitor.example.org", "fd00::1"] {
            assert!(!is_local_host(h), "{h}");
        }
    }
}
