//! Checks of the tier-specific sections (lb-vms, swarm, alb-asg), and that a section is not
//! used by a tier it does not belong to.

use super::{check_type, is_region, Checker};
use crate::stack::model::*;

/// The lb-vms sections, and that they are not used by other tiers.
pub(super) fn check_lb_vms(c: &mut Checker, s: &StackFile) {
    if s.tier != Tier::LbVms {
        for (key, present) in [("web", s.web.is_some()), ("balancer", s.balancer.is_some())] {
            if present {
                c.err_at_key(
                    key,
                    format!(
                        "`{key}` belongs to the lb-vms tier, not `{}`",
                        s.tier.as_str()
                    ),
                    "no such section for this tier",
                    "remove it, or set `tier: lb-vms`",
                );
            }
        }
        return;
    }
    match &s.web {
        None => c.err(
            "tier",
            "an lb-vms stack needs at least one web VM",
            "a `web:` section with `count: 2` or more",
            "add `web: { count: 2 }`",
        ),
        Some(w) if w.count == 0 => c.err(
            "web.count",
            "no web VM: the balancer would have nothing to send traffic to",
            "a count of 1 or more",
            "two or more keep the app up while one is replaced",
        ),
        Some(w) if w.count > 20 => c.err(
            "web.count",
            format!("{} web VMs is more than iac manages in one stack", w.count),
            "at most 20",
            "AWS Academy accounts allow about 9 running instances",
        ),
        Some(_) => {}
    }
    if let Some(w) = &s.web {
        check_type(c, "web.type", w.instance_type.as_deref());
    }
    if let Some(b) = &s.balancer {
        check_type(c, "balancer.type", b.instance_type.as_deref());
    }
    if s.instance.instance_profile.is_none() {
        c.err("instance", "the lb-vms VMs read the database address and password from SSM at boot, but no instance profile is given", "`instance.instance_profile`", "AWS Academy accounts have `LabInstanceProfile`");
    }
    if let Some(db) = &s.database {
        check_type(c, "database.type", db.instance_type.as_deref());
        if db.password.is_some() {
            c.err("database.password", "the lb-vms tier generates the database password itself", "no `password` key", "iac stores it as an SSM SecureString under /iac/<stack>/db-password; it never appears in files or output");
        }
        if !(1..=16384).contains(&db.volume_gb) {
            c.err(
                "database.volume_gb",
                format!("{} GiB is not a valid volume size", db.volume_gb),
                "a size between 1 and 16384",
                "",
            );
        }
    }
}

/// `database.version` for alb-asg: `8.0` (the default) lets RDS pick its current default Aurora
/// MySQL version, since every pinned version is deprecated in time and then refused for new
/// clusters; a full version (`8.0.mysql_aurora.3.08.2`) is sent as given.
pub fn aurora_engine_version(version: &str) -> Option<String> {
    is_aurora_version(version).then(|| version.to_string())
}

/// `8.0.mysql_aurora.3.05.2`: major.minor, `mysql_aurora`, three numbers.
pub(super) fn is_aurora_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    let num = |p: &&str| !p.is_empty() && p.chars().all(|ch| ch.is_ascii_digit());
    parts.len() == 6
        && num(&parts[0])
        && num(&parts[1])
        && parts[2] == "mysql_aurora"
        && parts[3..].iter().all(num)
}

/// `db.t3.medium`.
fn is_db_instance_class(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts[0] == "db"
        && parts[1..].iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        })
}

/// `arn:aws:acm:<region>:<account>:certificate/<id>`.
fn is_acm_arn(v: &str) -> bool {
    let parts: Vec<&str> = v.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "acm"
        && is_region(parts[3])
        && parts[4].len() == 12
        && parts[4].chars().all(|ch| ch.is_ascii_digit())
        && parts[5].strip_prefix("certificate/").is_some_and(|id| {
            !id.is_empty() && id.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-')
        })
}

/// The alb-asg sections, and that they are not used by other tiers.
pub(super) fn check_alb_asg(c: &mut Checker, s: &StackFile) {
    if s.tier != Tier::AlbAsg {
        for (key, present) in [
            ("scaling", s.scaling.is_some()),
            ("load_balancer", s.load_balancer.is_some()),
            ("shared_storage", s.shared_storage.is_some()),
        ] {
            if present {
                c.err_at_key(
                    key,
                    format!(
                        "`{key}` belongs to the alb-asg tier, not `{}`",
                        s.tier.as_str()
                    ),
                    "no such section for this tier",
                    "remove it, or set `tier: alb-asg`",
                );
            }
        }
        return;
    }
    if s.name.len() > 28 {
        c.err("name", format!("an alb-asg stack name is at most 28 characters (this one has {})", s.name.len()), "a shorter name", "the load balancer and target group are named `<stack>-alb` / `<stack>-tg`, limited to 32 characters");
    }
    let sc = s.scaling.clone().unwrap_or_default();
    if sc.min > sc.max {
        c.err(
            "scaling.min",
            format!("min {} is above max {}", sc.min, sc.max),
            "min ≤ desired ≤ max",
            "",
        );
    } else if sc.desired < sc.min || sc.desired > sc.max {
        c.err(
            "scaling.desired",
            format!("desired {} is outside [{}, {}]", sc.desired, sc.min, sc.max),
            "min ≤ desired ≤ max",
            "",
        );
    }
    if sc.max > 20 {
        c.err(
            "scaling.max",
            format!("max {} is more than iac manages in one group", sc.max),
            "at most 20",
            "AWS Academy accounts allow about 9 running instances",
        );
    }
    if !(sc.cpu_target > 0.0 && sc.cpu_target <= 100.0) {
        c.err(
            "scaling.cpu_target",
            format!("{} is not a CPU percentage target", sc.cpu_target),
            "a number in (0, 100], e.g. 50",
            "",
        );
    }
    if sc.min_healthy_percent > 100 {
        c.err(
            "scaling.min_healthy_percent",
            format!("{}% is not a percentage", sc.min_healthy_percent),
            "0 to 100",
            "",
        );
    }
    if !s.network.subnets.is_empty() && s.network.subnets.len() < 2 {
        c.err(
            "network.subnets",
            "an application load balancer needs subnets in at least two availability zones",
            "two or more subnet ids in different zones",
            "leave `subnets` out to use the default VPC's subnets",
        );
    }
    let lb = s.load_balancer.clone().unwrap_or_default();
    if let Some(arn) = &lb.certificate_arn {
        if !is_acm_arn(arn) {
            c.err(
                "load_balancer.certificate_arn",
                format!("`{arn}` is not an ACM certificate ARN"),
                "`arn:aws:acm:<region>:<account>:certificate/<id>`",
                "request or import the certificate in ACM, in the stack's region",
            );
        }
    }
    if !(2..=10).contains(&lb.healthy_threshold) || !(2..=10).contains(&lb.unhealthy_threshold) {
        c.err(
            "load_balancer",
            "health check thresholds must be between 2 and 10",
            "`healthy_threshold` and `unhealthy_threshold` in 2..=10",
            "",
        );
    }
    if !(5..=300).contains(&lb.interval_s) || lb.timeout_s >= lb.interval_s {
        c.err(
            "load_balancer.interval_s",
            "the health check interval must be 5-300 s and longer than its timeout",
            "e.g. `interval_s: 15`, `timeout_s: 5`",
            "",
        );
    }
    if lb.deregistration_delay_s > 3600 {
        c.err(
            "load_balancer.deregistration_delay_s",
            "at most 3600 seconds",
            "0 to 3600",
            "",
        );
    }
    if let Some(st) = &s.shared_storage {
        if !st.mount_path.starts_with('/')
            || st.mount_path == "/"
            || st.mount_path.contains(char::is_whitespace)
        {
            c.err(
                "shared_storage.mount_path",
                format!("`{}` is not a usable mount point", st.mount_path),
                "an absolute path such as `/mnt/shared`",
                "",
            );
        }
    }
    match &s.database {
        None => c.err(
            "tier",
            "an alb-asg stack needs its Aurora database described",
            "a `database:` section with `engine: aurora-mysql` and an Aurora `version`",
            "see stacks/bookstore-asg.yaml",
        ),
        Some(db) => {
            if !is_db_instance_class(&db.instance_class) {
                c.err(
                    "database.instance_class",
                    format!("`{}` is not an RDS instance class", db.instance_class),
                    "a class such as `db.t3.medium`",
                    "",
                );
            }
            if !(1..=15).contains(&db.instances) {
                c.err(
                    "database.instances",
                    format!("{} instances", db.instances),
                    "1 to 15",
                    "",
                );
            }
            if !(1..=35).contains(&db.backup_retention_days) {
                c.err(
                    "database.backup_retention_days",
                    format!("{} days of backups", db.backup_retention_days),
                    "1 to 35",
                    "",
                );
            }
            if db.password.is_some() {
                c.err(
                    "database.password",
                    "Aurora's master password is managed by RDS in Secrets Manager",
                    "no `password` key",
                    "the instances read it from Secrets Manager at boot; iac never sees it",
                );
            }
        }
    }
    if s.instance.instance_profile.is_none() {
        c.err("instance", "the instances read the database secret and SSM parameters at boot, but no instance profile is given", "`instance.instance_profile`", "AWS Academy accounts have `LabInstanceProfile`");
    }
}

/// The swarm section, and that it is not used by other tiers.
pub(super) fn check_swarm(c: &mut Checker, s: &StackFile) {
    if s.tier != Tier::Swarm {
        if s.swarm.is_some() {
            c.err_at_key(
                "swarm",
                format!(
                    "`swarm` belongs to the swarm tier, not `{}`",
                    s.tier.as_str()
                ),
                "no such section for this tier",
                "remove it, or set `tier: swarm`",
            );
        }
        return;
    }
    let sw = s.swarm.clone().unwrap_or_default();
    if sw.managers == 0 {
        c.err(
            "swarm.managers",
            "no manager: a swarm needs at least one",
            "1, 3 or 5",
            "one manager is enough for a class project; three survive the loss of one",
        );
    } else if sw.managers % 2 == 0 {
        c.err(
            "swarm.managers",
            format!(
                "{} managers cannot keep a quorum better than {}",
                sw.managers,
                sw.managers - 1
            ),
            "an odd number: 1, 3 or 5",
            "Raft needs a majority; an even count adds a failure point without adding tolerance",
        );
    } else if sw.managers > 7 {
        c.err(
            "swarm.managers",
            format!("{} managers is more than Docker recommends", sw.managers),
            "at most 7",
            "",
        );
    }
    if sw.workers > 20 {
        c.err(
            "swarm.workers",
            format!(
                "{} workers is more than iac manages in one stack",
                sw.workers
            ),
            "at most 20",
            "AWS Academy accounts allow about 9 running instances",
        );
    }
    if sw.placement == Placement::Workers && sw.workers == 0 && sw.replicas > 0 {
        c.err(
            "swarm.placement",
            "replicas are placed on workers, but there are none",
            "`workers` of 1 or more, or `placement: managers` / `any`",
            "",
        );
    }
    if let Some((_, _, what)) = crate::stack::model::SWARM_PORTS
        .iter()
        .find(|(_, p, _)| *p == sw.published_port)
    {
        c.err(
            "swarm.published_port",
            format!(
                "port {} is used by Docker Swarm itself ({what})",
                sw.published_port
            ),
            "a port other than 2377, 7946 and 4789",
            "80 or 8080 are usual",
        );
    } else if s.domain.is_some() && matches!(sw.published_port, 80 | 443) {
        c.err(
            "swarm.published_port",
            format!(
                "with a domain, nginx on the managers listens on {}",
                sw.published_port
            ),
            "a port other than 80 and 443, such as 8080",
            "nginx terminates HTTPS and forwards to the published port",
        );
    } else if sw.published_port == 22 || sw.published_port == 0 {
        c.err(
            "swarm.published_port",
            format!("port {} cannot be published", sw.published_port),
            "a port such as 80 or 8080",
            "",
        );
    }
    if sw.update.parallelism == 0 {
        c.err(
            "swarm.update.parallelism",
            "an update parallelism of 0 would update every task at once",
            "1 or more",
            "",
        );
    }
    check_type(c, "swarm.manager_type", sw.manager_type.as_deref());
    check_type(c, "swarm.worker_type", sw.worker_type.as_deref());
    if s.instance.instance_profile.is_none() {
        c.err(
            "instance",
            "swarm nodes exchange their join tokens through SSM, but no instance profile is given",
            "`instance.instance_profile`",
            "AWS Academy accounts have `LabInstanceProfile`",
        );
    }
}
