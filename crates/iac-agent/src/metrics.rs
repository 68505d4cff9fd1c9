//! Where the reported load comes from: `/proc` (real CPU and memory) or a simulated profile.
//!
//! Everything here is pure or reads one file, so the parsing and the profiles are unit-tested.

use std::fmt;
use std::str::FromStr;

/// Aggregate CPU counters from the `cpu ` line of `/proc/stat` (in USER_HZ ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent idle (idle + iowait: waiting for I/O is not load on this CPU).
    pub idle: u64,
    /// All ticks (user, nice, system, idle, iowait, irq, softirq, steal).
    pub total: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // guest/guest_nice are already included in user/nice
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        idle,
        total: fields.iter().sum(),
    })
}

/// CPU busy percentage between two samples; `None` when no time passed (or counters went
/// backwards, which happens only across a reboot or a bad read).
pub fn cpu_percent(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    let idle = now.idle.checked_sub(prev.idle)?;
    if total == 0 || idle > total {
        return None;
    }
    Some((total - idle) as f64 * 100.0 / total as f64)
}

/// Memory in use, in percent: `(MemTotal - MemAvailable) / MemTotal` from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Option<f64> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    if total == 0 {
        return None;
    }
    Some(total.saturating_sub(available) as f64 * 100.0 / total as f64)
}

/// Reads `/proc/meminfo`; 0 when unavailable (not Linux), so heartbeats still flow.
pub fn read_mem_percent() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or(0.0)
}

/// Real CPU load from successive `/proc/stat` reads.
#[derive(Debug, Default)]
pub struct ProcCpu {
    prev: Option<CpuTimes>,
    last: f64,
}

impl ProcCpu {
    /// Takes a first sample so the first heartbeat already reports a delta.
    pub fn new() -> Self {
        ProcCpu {
            prev: Self::read(),
            last: 0.0,
        }
    }

    fn read() -> Option<CpuTimes> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// CPU % since the previous call (the last value again when no ticks elapsed).
    pub fn sample(&mut self) -> f64 {
        if let Some(now) = Self::read() {
            if let Some(p) = self.prev.and_then(|prev| cpu_percent(prev, now)) {
                self.last = p;
            }
            self.prev = Some(now);
        }
        self.last
    }
}

/// A simulated load profile (`--simulate`); time `t` is seconds since the agent started.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// Bounded random walk: at most `rate` points per second, kept in [0, 100].
    RandomWalk,
    /// Constant value.
    Steady(f64),
    /// `a` until `t` seconds, then `b`.
    Step { a: f64, b: f64, at: f64 },
    /// `base`, except `peak` during `[start, start + len)`.
    Spike {
        base: f64,
        peak: f64,
        start: f64,
        len: f64,
    },
    /// Oscillates between `min` and `max` with the given period (starts at the midpoint).
    Sine { min: f64, max: f64, period: f64 },
}

/// A `--simulate` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError(String);

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProfileError {}

impl FromStr for Profile {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, args) = s.split_once(':').unwrap_or((s, ""));
        let nums = |n: usize| -> Result<Vec<f64>, ProfileError> {
            let v: Vec<f64> = args
                .split(',')
                .map(|a| a.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    ProfileError(format!("`{s}`: expected {n} numbers after `{kind}:`"))
                })?;
            if v.len() != n || v.iter().any(|x| !x.is_finite()) {
                return Err(ProfileError(format!(
                    "`{s}`: expected {n} numbers after `{kind}:`"
                )));
            }
            Ok(v)
        };
        let pct = |x: f64| -> Result<f64, ProfileError> {
            if (0.0..=100.0).contains(&x) {
                Ok(x)
            } else {
                Err(ProfileError(format!(
                    "`{s}`: {x} is not a percentage in [0, 100]"
                )))
            }
        };
        let nonneg = |x: f64| -> Result<f64, ProfileError> {
            if x >= 0.0 {
                Ok(x)
            } else {
                Err(ProfileError(format!("`{s}`: {x} must not be negative")))
            }
        };
        match kind {
            "random-walk" if args.is_empty() => Ok(Profile::RandomWalk),
            "steady" => Ok(Profile::Steady(pct(nums(1)?[0])?)),
            "step" => {
                let v = nums(3)?;
                Ok(Profile::Step {
                    a: pct(v[0])?,
                    b: pct(v[1])?,
                    at: nonneg(v[2])?,
                })
            }
            "spike" => {
                let v = nums(4)?;
                Ok(Profile::Spike {
                    base: pct(v[0])?,
                    peak: pct(v[1])?,
                    start: nonneg(v[2])?,
                    len: nonneg(v[3])?,
                })
            }
            "sine" => {
                let v = nums(3)?;
                if v[2] <= 0.0 {
                    return Err(ProfileError(format!("`{s}`: the period must be positive")));
                }
                Ok(Profile::Sine {
                    min: pct(v[0])?,
                    max: pct(v[1])?,
                    period: v[2],
                })
            }
            _ => Err(ProfileError(format!(
                "`{s}`: expected random-walk, steady:V, step:A,B,T, spike:BASE,PEAK,START,LEN or \
                 sine:MIN,MAX,PERIOD"
            ))),
        }
    }
}

/// A small seeded PRNG (SplitMix64): reproducible walks with `--seed`, no `rand` dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running simulation: evaluates the profile at `t` seconds (non-decreasing between calls).
#[derive(Debug, Clone)]
pub struct Simulator {
    profile: Profile,
    rng: Rng,
    /// Random walk: maximum change per second.
    rate: f64,
    value: f64,
    last_t: f64,
}

impl Simulator {
    pub fn new(profile: Profile, seed: u64, rate: f64, start: f64) -> Self {
        Simulator {
            profile,
            rng: Rng::new(seed),
            rate: rate.max(0.0),
            value: start.clamp(0.0, 100.0),
            last_t: 0.0,
        }
    }

    pub fn sample(&mut self, t: f64) -> f64 {
        let v = match self.profile {
            Profile::RandomWalk => {
                let dt = (t - self.last_t).max(0.0);
                // Uniform step in [-rate*dt, +rate*dt]: the change per second never exceeds rate.
                let step = (self.rng.next_f64() * 2.0 - 1.0) * self.rate * dt;
                self.value = (self.value + step).clamp(0.0, 100.0);
                self.value
            }
            Profile::Steady(v) => v,
            Profile::Step { a, b, at } => {
                if t < at {
                    a
                } else {
                    b
                }
            }
            Profile::Spike {
                base,
                peak,
                start,
                len,
            } => {
                if t >= start && t < start + len {
                    peak
                } else {
                    base
                }
            }
            Profile::Sine { min, max, period } => {
                let mid = (min + max) / 2.0;
                let amp = (max - min) / 2.0;
                mid + amp * (std::f64::consts::TAU * t / period).sin()
            }
        };
        self.last_t = self.last_t.max(t);
        v.clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_delta() {
        let a = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\nintr 1\n";
        let b = "cpu  160 0 90 900 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let pa = parse_proc_stat(a).unwrap();
        let pb = parse_proc_stat(b).unwrap();
        assert_eq!(
            pa,
            CpuTimes {
                idle: 850,
                total: 1000
            }
        );
        assert_eq!(
            pb,
            CpuTimes {
                idle: 950,
                total: 1200
            }
        );
        // 200 ticks elapsed, 100 idle → 50 % busy.
        assert!((cpu_percent(pa, pb).unwrap() - 50.0).abs() < 1e-9);
        // No ticks, or counters going backwards: no value.
        assert_eq!(cpu_percent(pa, pa), None);
        assert_eq!(cpu_percent(pb, pa), None);
        // Old kernels with only four fields, and garbage.
        assert_eq!(
            parse_proc_stat("cpu 1 2 3 4\n"),
            Some(CpuTimes { idle: 4, total: 10 })
        );
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[test]
    fn meminfo_percent() {
        let t = "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    250 kB\n";
        assert!((parse_meminfo(t).unwrap() - 75.0).abs() < 1e-9);
        assert_eq!(parse_meminfo("MemTotal: 1000 kB\n"), None);
    }

    #[test]
    fn the_real_proc_files_parse() {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        assert!(parse_proc_stat(&stat).unwrap().total > 0);
        let mem = read_mem_percent();
        assert!(mem > 0.0 && mem <= 100.0, "{mem}");
        let mut cpu = ProcCpu::new();
        let v = cpu.sample();
        assert!((0.0..=100.0).contains(&v), "{v}");
    }

    #[test]
    fn profiles_parse_and_refuse_bad_values() {
        assert_eq!("random-walk".parse(), Ok(Profile::RandomWalk));
        assert_eq!("steady:42.5".parse(), Ok(Profile::Steady(42.5)));
        assert_eq!(
            "step:10,90,30".parse(),
            Ok(Profile::Step {
                a: 10.0,
                b: 90.0,
                at: 30.0
            })
        );
        assert_eq!(
            "spike:20,95,10,5".parse(),
            Ok(Profile::Spike {
                base: 20.0,
                peak: 95.0,
                start: 10.0,
                len: 5.0
            })
        );
        assert_eq!(
            "sine:10,80,60".parse(),
            Ok(Profile::Sine {
                min: 10.0,
                max: 80.0,
                period: 60.0
            })
        );
        for bad in [
            "",
            "walk",
            "steady",
            "steady:101",
            "steady:-1",
            "steady:nan",
            "step:1,2",
            "spike:1,2,3",
            "sine:1,2,0",
            "step:1,2,-3",
            "random-walk:3",
        ] {
            assert!(bad.parse::<Profile>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn steady_step_spike_sine_values() {
        let mut s = Simulator::new("steady:42".parse().unwrap(), 1, 5.0, 40.0);
        assert_eq!(s.sample(0.0), 42.0);
        assert_eq!(s.sample(1000.0), 42.0);

        let mut s = Simulator::new("step:10,90,30".parse().unwrap(), 1, 5.0, 40.0);
        assert_eq!(s.sample(0.0), 10.0);
        assert_eq!(s.sample(29.9), 10.0);
        assert_eq!(s.sample(30.0), 90.0);
        assert_eq!(s.sample(100.0), 90.0);

        let mut s = Simulator::new("spike:20,95,10,5".parse().unwrap(), 1, 5.0, 40.0);
        assert_eq!(s.sample(9.9), 20.0);
        assert_eq!(s.sample(10.0), 95.0);
        assert_eq!(s.sample(14.9), 95.0);
        assert_eq!(s.sample(15.0), 20.0);

        let mut s = Simulator::new("sine:10,80,60".parse().unwrap(), 1, 5.0, 40.0);
        assert!((s.sample(0.0) - 45.0).abs() < 1e-9);
        assert!((s.sample(15.0) - 80.0).abs() < 1e-9);
        assert!((s.sample(45.0) - 10.0).abs() < 1e-9);
        for i in 0..600 {
            let v = s.sample(i as f64 * 0.1);
            assert!((10.0 - 1e-9..=80.0 + 1e-9).contains(&v));
        }
    }

    #[test]
    fn random_walk_is_bounded_rate_limited_and_seeded() {
        for seed in [0u64, 1, 7, 12345] {
            let mut s = Simulator::new(Profile::RandomWalk, seed, 5.0, 40.0);
            let mut prev = s.sample(0.0);
            let mut t = 0.0;
            let mut moved = false;
            for i in 0..20_000 {
                let dt = [0.1, 0.5, 1.0, 2.0][i % 4];
                t += dt;
                let v = s.sample(t);
                assert!((0.0..=100.0).contains(&v), "{v} out of bounds");
                assert!(
                    (v - prev).abs() <= 5.0 * dt + 1e-9,
                    "moved {} in {dt}s",
                    (v - prev).abs()
                );
                moved |= v != prev;
                prev = v;
            }
            assert!(moved);
        }
        // Reproducible with the same seed, different with another.
        let run = |seed| {
            let mut s = Simulator::new(Profile::RandomWalk, seed, 5.0, 40.0);
            (1..50).map(|i| s.sample(i as f64)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
