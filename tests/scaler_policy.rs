//! The scaler's decision core from the outside: property tests of `policy::decide` over random
//! member sets, loads and time sequences, and sanity checks of the offline simulator on the
//! traces in `bench/traces/`.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use iac::scaler::policy::{
    decide, health_at, validate, Decision, Health, Member, Mode, PolicyConfig, PolicyState,
};
use iac::scaler::simulate::{
    compare, load_trace, simulate, timeline_csv, timeline_svg, SimOptions, SimReport,
};
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        (
            30.0..95.0f64,
            1.0..30.0f64,
            1..4u32,
            1..4u32,
            1..4u32,
            1..4u32
        )
            .prop_map(|(high, low, out_samples, in_samples, step_out, step_in)| {
                Mode::Thresholds {
                    high,
                    low,
                    out_samples,
                    in_samples,
                    step_out,
                    step_in,
                }
            }),
        (10.0..100.0f64, 0.0..0.3f64, 0..300u64).prop_map(|(target, tolerance, w)| {
            Mode::TargetTracking {
                target,
                tolerance,
                scale_in_window: secs(w),
            }
        }),
    ]
}

fn config_strategy() -> impl Strategy<Value = PolicyConfig> {
    (
        0..5u32,
        1..10u32,
        mode_strategy(),
        0..120u64,
        0..120u64,
        0..60u64,
        1..10u64,
        2..5u64,
        10..200u64,
    )
        .prop_map(
            |(min, extra, mode, cd_out, cd_in, warmup, hb, dead_mult, boot)| PolicyConfig {
                min,
                max: min.max(1) + extra - 1,
                mode,
                cooldown_out: secs(cd_out),
                cooldown_in: secs(cd_in),
                warmup: secs(warmup),
                heartbeat: secs(hb),
                dead_after: secs(hb * dead_mult),
                boot_deadline: secs(boot),
            },
        )
        .prop_filter("valid configuration", |c| validate(c).is_ok())
}

/// A member described relative to `now`, so every combination of health states is reachable.
#[derive(Debug, Clone)]
struct Spec {
    age: u64,
    registered_after: Option<u64>,
    silent: u64,
    load: Option<f64>,
    deregistered: bool,
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        0..600u64,
        proptest::option::weighted(0.8, 0..300u64),
        0..60u64,
        proptest::option::weighted(0.9, 0.0..100.0f64),
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(age, registered_after, silent, load, deregistered)| Spec {
            age,
            registered_after,
            silent,
            load,
            deregistered,
        })
}

fn member(i: usize, now: Duration, s: &Spec) -> Member {
    let launched_at = now.saturating_sub(secs(s.age));
    let registered_at = s.registered_after.map(|r| (launched_at + secs(r)).min(now));
    let last_heartbeat = registered_at.map(|r| now.saturating_sub(secs(s.silent)).max(r));
    Member {
        id: format!("m{i:02}"),
        health: if s.deregistered {
            Health::Dead
        } else {
            Health::Healthy
        },
        launched_at,
        registered_at,
        last_heartbeat,
        load: s.load,
        samples: VecDeque::new(),
        stream_lost: None,
    }
}

proptest! {
    /// (1) After applying the decision the pool is within [min, max], whatever the members.
    #[test]
    fn pool_stays_within_bounds(
        cfg in config_strategy(),
        specs in prop::collection::vec(spec_strategy(), 0..16),
        now in 600..100_000u64,
    ) {
        let now = secs(now);
        let members: Vec<Member> = specs.iter().enumerate().map(|(i, s)| member(i, now, s)).collect();
        let d = decide(now, &members, &cfg, &mut PolicyState::default());
        let after = d.pool_after(members.len() as u32);
        prop_assert!(after >= cfg.min && after <= cfg.max, "{} → {after} by {d:?}", members.len());
        if let Decision::ScaleIn { victims, .. } | Decision::Replace { dead: victims, .. } = &d {
            for v in victims {
                prop_assert!(members.iter().any(|m| &m.id == v), "unknown victim {v}");
            }
        }
    }

    /// (2) Over a sequence of decisions applied to a pool: never a ScaleIn within cooldown_out
    /// of a ScaleOut, and the pool stays within [min, max] at every step.
    #[test]
    fn no_scale_in_within_cooldown_out(
        cfg in config_strategy(),
        initial in 0..12u32,
        boot in 0..60u64,
        steps in prop::collection::vec((1..30u64, 0.0..100.0f64, 0.0..30.0f64, prop::option::weighted(0.05, 0..20usize)), 1..80),
    ) {
        let mut now = secs(1000);
        let initial = initial.clamp(cfg.min, cfg.max);
        let mut pool: Vec<Member> = (0..initial as usize).map(|i| Member {
            id: format!("m{i:04}"),
            health: Health::Healthy,
            launched_at: secs(0),
            registered_at: Some(secs(0)),
            last_heartbeat: Some(now),
            load: Some(50.0),
            samples: VecDeque::new(),
            stream_lost: None,
        }).collect();
        let mut next_id = initial as usize;
        let mut state = PolicyState::default();
        let mut last_out: Option<Duration> = None;
        // Members that stopped heartbeating (crashed agents): they turn suspect, then dead.
        let mut killed: HashSet<String> = HashSet::new();
        for (dt, base, spread, kill) in steps {
            now += secs(dt);
            for (i, m) in pool.iter_mut().enumerate() {
                if m.registered_at.is_none() && now >= m.launched_at + secs(boot) {
                    m.registered_at = Some(m.launched_at + secs(boot));
                }
                if m.registered_at.is_some() && !killed.contains(&m.id) {
                    m.last_heartbeat = Some(now);
                    m.load = Some((base + spread * (i % 3) as f64).min(100.0));
                }
            }
            if let Some(k) = kill {
                if let Some(m) = pool.get(k) {
                    killed.insert(m.id.clone());
                }
            }
            let d = decide(now, &pool, &cfg, &mut state);
            match &d {
                Decision::Hold { .. } => {}
                Decision::ScaleOut { count, .. } => {
                    last_out = Some(now);
                    for _ in 0..*count {
                        pool.push(Member { id: format!("m{next_id:04}"), health: Health::Healthy, launched_at: now, registered_at: None, last_heartbeat: None, load: None, samples: VecDeque::new(), stream_lost: None });
                        next_id += 1;
                    }
                }
                Decision::ScaleIn { victims, .. } => {
                    if let Some(t) = last_out {
                        prop_assert!(now - t >= cfg.cooldown_out, "scale-in at {now:?}, {:?} after a scale-out: {d:?}", now - t);
                    }
                    pool.retain(|m| !victims.contains(&m.id));
                }
                Decision::Replace { dead, .. } => {
                    pool.retain(|m| !dead.contains(&m.id));
                    for _ in 0..dead.len() {
                        pool.push(Member { id: format!("m{next_id:04}"), health: Health::Healthy, launched_at: now, registered_at: None, last_heartbeat: None, load: None, samples: VecDeque::new(), stream_lost: None });
                        next_id += 1;
                    }
                }
            }
            let n = pool.len() as u32;
            prop_assert!(n >= cfg.min && n <= cfg.max, "pool {n} outside [{}, {}] after {d:?}", cfg.min, cfg.max);
        }
    }

    /// (3) Members in warm-up never cause scaling: when every live member is booting or warming
    /// up, the decision is Hold unless min/max or a dead member forces it; and in any pool the
    /// loads of warming members do not change the decision.
    #[test]
    fn warming_members_never_cause_scaling(
        cfg in config_strategy().prop_filter("has a warm-up", |c| c.warmup >= secs(2)),
        specs in prop::collection::vec((0..3u8, 0.0..100.0f64, 0.0..100.0f64), 0..12),
        now in 1000..10_000u64,
    ) {
        let now = secs(now);
        let mk = |loads_from_second: bool| -> Vec<Member> {
            specs.iter().enumerate().map(|(i, (kind, a, b))| {
                let load = if loads_from_second { *b } else { *a };
                let mut m = Member {
                    id: format!("m{i:02}"),
                    health: Health::Healthy,
                    launched_at: now - secs(1),
                    registered_at: None,
                    last_heartbeat: None,
                    load: None,
                    samples: VecDeque::new(),
                    stream_lost: None,
                };
                match kind {
                    0 => {} // booting
                    1 => { // warming up: registered just now, heartbeating
                        m.registered_at = Some(now - secs(1));
                        m.last_heartbeat = Some(now);
                        m.load = Some(load);
                        m.samples.push_back((now, load));
                    }
                    _ => m.health = Health::Dead,
                }
                m
            }).collect()
        };
        let members = mk(false);
        for (m, (kind, _, _)) in members.iter().zip(&specs) {
            let expected = [Health::Booting, Health::Healthy, Health::Dead][usize::from(*kind).min(2)];
            prop_assert_eq!(health_at(now, m, &cfg), expected);
        }
        let pool = members.len() as u32;
        let has_dead = specs.iter().any(|(k, _, _)| *k >= 2);
        let d = decide(now, &members, &cfg, &mut PolicyState::default());
        if pool >= cfg.min && pool <= cfg.max && !has_dead {
            prop_assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        }
        // Loads of warming members are invisible: the other load set gives the same decision.
        let d2 = decide(now, &mk(true), &cfg, &mut PolicyState::default());
        prop_assert_eq!(d, d2);
    }

    /// Adding warming members with arbitrary load to a warmed-up pool changes nothing but the
    /// capacity count: swapping their loads never changes the decision.
    #[test]
    fn warming_loads_are_invisible_next_to_warm_members(
        cfg in config_strategy().prop_filter("has a warm-up", |c| c.warmup >= secs(2)),
        warm in prop::collection::vec(0.0..100.0f64, 1..6),
        warming in prop::collection::vec((0.0..100.0f64, 0.0..100.0f64), 1..6),
    ) {
        let now = secs(5000);
        let mk = |second: bool| -> Vec<Member> {
            let mut v: Vec<Member> = warm.iter().enumerate().map(|(i, l)| Member {
                id: format!("w{i}"), health: Health::Healthy, launched_at: secs(0),
                registered_at: Some(secs(0)), last_heartbeat: Some(now), load: Some(*l),
                samples: VecDeque::new(), stream_lost: None,
            }).collect();
            v.extend(warming.iter().enumerate().map(|(i, (a, b))| Member {
                id: format!("n{i}"), health: Health::Healthy, launched_at: now - secs(2),
                registered_at: Some(now - secs(1)), last_heartbeat: Some(now),
                load: Some(if second { *b } else { *a }), samples: VecDeque::new(), stream_lost: None,
            }));
            v
        };
        let d1 = decide(now, &mk(false), &cfg, &mut PolicyState::default());
        let d2 = decide(now, &mk(true), &cfg, &mut PolicyState::default());
        // Victim order may legitimately differ by load; compare everything but the victims.
        match (&d1, &d2) {
            (Decision::ScaleIn { victims: a, .. }, Decision::ScaleIn { victims: b, .. }) => prop_assert_eq!(a.len(), b.len()),
            _ => prop_assert_eq!(&d1, &d2),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Simulator

fn trace(name: &str) -> Vec<(Duration, f64)> {
    let path = format!("{}/bench/traces/{name}", env!("CARGO_MANIFEST_DIR"));
    load_trace(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Target tracking at 60 %, with defaults one would ship: ±10 %, a 60 s scale-in window, 30 s
/// cooldowns and warm-up, 1 s heartbeats.
fn target_tracking_60() -> PolicyConfig {
    PolicyConfig {
        min: 2,
        max: 20,
        mode: Mode::TargetTracking {
            target: 60.0,
            tolerance: 0.1,
            scale_in_window: secs(60),
        },
        cooldown_out: secs(30),
        cooldown_in: secs(30),
        warmup: secs(30),
        heartbeat: secs(1),
        dead_after: secs(5),
        boot_deadline: secs(120),
    }
}

fn opts() -> SimOptions {
    SimOptions {
        tick: secs(1),
        boot_time: secs(30),
        threshold: 70.0,
    }
}

fn summary(name: &str, r: &SimReport) -> String {
    format!(
        "{name:>16}: {:>5.0} s above threshold, {:>6.0} instance-seconds, peak {} instances, {} actions",
        r.seconds_above_threshold,
        r.instance_seconds,
        r.max_instances,
        r.decisions.len()
    )
}

#[test]
fn traces_parse() {
    let spike = trace("spike.csv");
    assert_eq!(spike.len(), 420);
    assert!(spike[150].1 > 400.0 && spike[10].1 < 130.0);
    let sine = trace("sine.csv");
    assert_eq!(sine.len(), 600);
    let max = sine.iter().map(|r| r.1).fold(0.0, f64::max);
    assert!((max - 400.0).abs() < 1.0);
}

#[test]
fn bad_trace_row_is_named() {
    let e = load_trace("seconds,load_percent\n0,100\n1,1OO\n").unwrap_err();
    assert_eq!(e.to_string(), "row 3: load `1OO` is not a number");
}

fn spike_results() -> (PolicyConfig, Vec<(String, SimReport)>) {
    let cfg = target_tracking_60();
    validate(&cfg).unwrap();
    let results = compare(&trace("spike.csv"), &cfg, &opts());
    for (name, r) in &results {
        eprintln!("{}", summary(name, r));
    }
    for (t, what) in &results[0].1.decisions {
        eprintln!("policy {:>5.0}s {what}", t.as_secs_f64());
    }
    (cfg, results)
}

fn by<'a>(results: &'a [(String, SimReport)], name: &str) -> &'a SimReport {
    &results.iter().find(|(n, _)| n == name).unwrap().1
}

/// Measured: policy 60 s above / 1530 instance-s (peak 7); fixed threshold 34 s / 3230 (peak
/// 36); HPA 60 s / 2250 (peak 7). The policy never does worse than the HPA on overload and
/// costs far less than the fixed-threshold scaler.
#[test]
fn policy_on_the_spike_costs_less_and_is_never_worse_than_hpa() {
    let (cfg, results) = spike_results();
    let (policy, fixed, hpa) = (
        by(&results, "policy"),
        by(&results, "fixed-threshold"),
        by(&results, "hpa"),
    );
    assert!(policy.seconds_above_threshold <= hpa.seconds_above_threshold);
    assert!(policy.instance_seconds < fixed.instance_seconds);
    assert!(policy.instance_seconds < hpa.instance_seconds);
    assert!(policy.max_instances <= cfg.max);
}

/// On the slower sine the 1 s decision period does pay off: measured policy 85 s above / 2806
/// instance-s, fixed threshold 30 s / 5666, HPA 128 s / 3255.
#[test]
fn policy_beats_hpa_on_overload_and_fixed_on_cost_on_the_sine() {
    let results = compare(&trace("sine.csv"), &target_tracking_60(), &opts());
    for (name, r) in &results {
        eprintln!("{}", summary(name, r));
    }
    let (policy, fixed, hpa) = (
        by(&results, "policy"),
        by(&results, "fixed-threshold"),
        by(&results, "hpa"),
    );
    assert!(policy.seconds_above_threshold < hpa.seconds_above_threshold);
    assert!(policy.instance_seconds < fixed.instance_seconds);
}

#[test]
fn sine_trace_stays_within_bounds() {
    let cfg = target_tracking_60();
    let results = compare(&trace("sine.csv"), &cfg, &opts());
    for (name, r) in &results {
        eprintln!("{}", summary(name, r));
    }
    let policy = simulate(&trace("sine.csv"), &cfg, &opts());
    assert_eq!(policy, results[0].1, "simulation is deterministic");
    assert!(policy
        .timeline
        .iter()
        .all(|(_, _, n)| (cfg.min..=cfg.max).contains(n)));
}

#[test]
fn timeline_csv_has_a_row_per_step() {
    let r = simulate(&trace("spike.csv"), &target_tracking_60(), &opts());
    let csv = timeline_csv(&r);
    assert_eq!(csv.lines().count(), r.timeline.len() + 1);
    assert!(csv.starts_with("seconds,load_percent,instances\n0,"));
}

#[test]
fn timeline_svg_is_well_formed() {
    let r = simulate(&trace("spike.csv"), &target_tracking_60(), &opts());
    let svg = timeline_svg(&r, "spike <policy> & co");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert!(svg.contains("spike &lt;policy&gt; &amp; co"));
    // Balanced tags: every opening tag that is not self-closing has a matching close, in order.
    let mut stack = Vec::new();
    let mut rest = svg.as_str();
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unterminated tag") + start;
        let tag = &rest[start + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop(),
                Some(name.trim().to_string()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap().to_string();
            stack.push(name);
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn thresholds_mode_simulates_within_bounds() {
    let cfg = PolicyConfig {
        mode: Mode::Thresholds {
            high: 70.0,
            low: 30.0,
            out_samples: 3,
            in_samples: 10,
            step_out: 2,
            step_in: 1,
        },
        ..target_tracking_60()
    };
    validate(&cfg).unwrap();
    for name in ["spike.csv", "sine.csv"] {
        let r = simulate(&trace(name), &cfg, &opts());
        eprintln!("{}", summary(name, &r));
        assert!(r.max_instances > cfg.min, "{name}: never scaled out");
        assert!(r
            .timeline
            .iter()
            .all(|(_, _, n)| (cfg.min..=cfg.max).contains(n)));
    }
}

/// Instances that boot slower than the boot deadline are declared dead and replaced one for
/// one; the churn never takes the pool outside its bounds.
#[test]
fn slow_boots_are_replaced_without_leaving_bounds() {
    let cfg = PolicyConfig {
        boot_deadline: secs(10),
        ..target_tracking_60()
    };
    let r = simulate(&trace("spike.csv"), &cfg, &opts());
    assert!(r.decisions.iter().any(|(_, d)| d.starts_with("replace")));
    assert!(r.max_instances <= cfg.max);
}
