//! One simulated agent: it behaves like `iac-agent` on the wire (register, then one long
//! heartbeat stream with an increasing `seq`, re-registering when the stream breaks or the
//! monitor says DEREGISTER) but shares an HTTP/2 connection with other simulated agents and
//! reports a synthetic CPU value, so thousands fit in one process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iac_proto::{Directive, HeartbeatRequest, MonitorClient, RegisterRequest, TokenInterceptor};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;

use iac_scaler::histogram::Histogram;

pub type Client = MonitorClient<InterceptedService<Channel, TokenInterceptor>>;

/// What every simulated agent shares: the schedule and the counters.
pub struct Run {
    pub interval: Duration,
    /// Heartbeats sent in `[steady_from, until)` count towards the achieved rate.
    pub steady_from: Instant,
    pub until: Instant,
    pub counters: Counters,
}

#[derive(Default)]
pub struct Counters {
    /// Agents with at least one successful registration.
    pub registered: AtomicU64,
    /// Registration attempts that failed (error, timeout or `accepted = false`); each is retried.
    pub register_failed: AtomicU64,
    /// Registrations after the first (stream broke, or the monitor said DEREGISTER).
    pub reregistered: AtomicU64,
    /// Heartbeats handed to their HTTP/2 stream.
    pub heartbeats_sent: AtomicU64,
    pub heartbeats_steady: AtomicU64,
    /// Heartbeat streams that failed to open or broke.
    pub stream_errors: AtomicU64,
    /// DEREGISTER directives received (the monitor no longer knew the member).
    pub deregister_directives: AtomicU64,
    pub register_latency: Histogram,
    /// How late heartbeats left compared with their schedule: if this grows, the load generator
    /// itself is saturated and the achieved rate says nothing about the monitor.
    pub send_lag: Histogram,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// `sim-00001` for agent 0.
pub fn instance_id(index: u32) -> String {
    format!("sim-{:05}", index + 1)
}

/// A slowly moving CPU value between 20 and 40 %: a five-minute sine with a per-agent phase,
/// so the pool average stays flat and far from any threshold.
fn cpu(index: u32, elapsed: Duration) -> f64 {
    let phase = f64::from(index % 360).to_radians();
    30.0 + 10.0 * (std::f64::consts::TAU * elapsed.as_secs_f64() / 300.0 + phase).sin()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long to wait before retrying after a failure: the agent's back-off is longer, but a
/// benchmark must not sit idle for half its window.
const RETRY: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs agent `index` from `start` until the end of the run.
pub async fn simulate(index: u32, mut client: Client, start: Instant, run: Arc<Run>) {
    tokio::time::sleep_until(start).await;
    let c = &run.counters;
    let request = RegisterRequest {
        instance_id: instance_id(index),
        address: "127.0.0.1".into(),
        version: concat!("iac-loadgen ", env!("CARGO_PKG_VERSION")).into(),
        labels: Default::default(),
    };
    let mut registrations = 0u64;
    while Instant::now() < run.until {
        let asked = Instant::now();
        let reply = tokio::time::timeout(CALL_TIMEOUT, client.register(request.clone())).await;
        let (member_id, session) = match reply {
            Ok(Ok(r)) if r.get_ref().accepted && !r.get_ref().member_id.is_empty() => {
                c.register_latency.record(asked.elapsed());
                let r = r.into_inner();
                (r.member_id, r.session)
            }
            _ => {
                inc(&c.register_failed);
                sleep_or_end(RETRY, &run).await;
                continue;
            }
        };
        registrations += 1;
        inc(if registrations == 1 {
            &c.registered
        } else {
            &c.reregistered
        });
        if !heartbeats(index, &mut client, member_id, session, &run).await {
            return;
        }
        sleep_or_end(RETRY, &run).await;
    }
}

async fn sleep_or_end(d: Duration, run: &Run) {
    tokio::time::sleep_until((Instant::now() + d).min(run.until)).await;
}

/// Streams heartbeats until the run ends (returns false) or the stream breaks (true: register
/// again).
async fn heartbeats(
    index: u32,
    client: &mut Client,
    member_id: String,
    session: String,
    run: &Run,
) -> bool {
    let c = &run.counters;
    let (tx, rx) = mpsc::channel::<HeartbeatRequest>(4);
    let born = Instant::now();
    let mut seq = 0u64;
    let beat = |seq: u64| HeartbeatRequest {
        member_id: member_id.clone(),
        seq,
        cpu_percent: cpu(index, born.elapsed()),
        mem_percent: 25.0,
        app_metric: None,
        sent_unix_ms: unix_ms(),
        draining: false,
        session: session.clone(),
    };
    // Like the agent: the first heartbeat is queued before the stream opens.
    seq += 1;
    if tx.try_send(beat(seq)).is_err() {
        inc(&c.stream_errors);
        return true;
    }
    count_sent(c, run);
    let opened =
        tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(ReceiverStream::new(rx))).await;
    let mut inbound = match opened {
        Ok(Ok(r)) => r.into_inner(),
        _ => {
            inc(&c.stream_errors);
            return true;
        }
    };
    let mut ticker = tokio::time::interval_at(born + run.interval, run.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(run.until) => return false,
            scheduled = ticker.tick() => {
                c.send_lag.record(scheduled.elapsed());
                seq += 1;
                if tx.send(beat(seq)).await.is_err() {
                    inc(&c.stream_errors);
                    return true;
                }
                count_sent(c, run);
            }
            msg = inbound.message() => match msg {
                Ok(Some(reply)) => {
                    if reply.directive == Directive::Deregister as i32 {
                        inc(&c.deregister_directives);
                        return true;
                    }
                }
                Ok(None) | Err(_) => {
                    inc(&c.stream_errors);
                    return true;
                }
            },
        }
    }
}

fn count_sent(c: &Counters, run: &Run) {
    inc(&c.heartbeats_sent);
    let now = Instant::now();
    if now >= run.steady_from && now < run.until {
        inc(&c.heartbeats_steady);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbered_from_one_and_padded() {
        assert_eq!(instance_id(0), "sim-00001");
        assert_eq!(instance_id(9_999), "sim-10000");
    }

    #[test]
    fn cpu_moves_slowly_inside_its_band() {
        for i in [0, 1, 359, 10_000] {
            let mut last = cpu(i, Duration::ZERO);
            for s in 1..600 {
                let v = cpu(i, Duration::from_secs(s));
                assert!((20.0..=40.0).contains(&v), "{v}");
                assert!((v - last).abs() < 0.25, "moved {} in 1 s", v - last);
                last = v;
            }
        }
    }
}
