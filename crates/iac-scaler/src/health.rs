//! Members of the pool as the monitor sees them, and their health derived from registration
//! and heartbeat times alone (no clock is read here).

use std::collections::VecDeque;
use std::time::Duration;

use super::config::PolicyConfig;

/// A member's state in the membership table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Launched, not yet registered: counts towards capacity, reports no load.
    Booting,
    Healthy,
    /// One heartbeat overdue: still counts and serves, but its load is stale and ignored.
    Suspect,
    Dead,
}

/// One instance as the monitor sees it. Times are monotonic offsets from monitor start.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    /// Health as last recorded by the monitor; `Dead` here (e.g. deregistered) is final, anything
    /// else is recomputed from the timestamps by [`health_at`].
    pub health: Health,
    pub launched_at: Duration,
    pub registered_at: Option<Duration>,
    pub last_heartbeat: Option<Duration>,
    /// Last reported CPU %.
    pub load: Option<f64>,
    /// Recent samples (time, CPU %), bounded by the caller; used when `load` predates warm-up end.
    pub samples: VecDeque<(Duration, f64)>,
    /// When its heartbeat stream ended without a `Deregister` (the agent process died, or its
    /// host closed the connection). A crash closes the connection at once, so this is a much
    /// earlier sign than a missing heartbeat; a new registration or stream clears it.
    pub stream_lost: Option<Duration>,
}

/// A member's health at `now`: booting until registered (dead if not registered within
/// `boot_deadline`), suspect once a heartbeat is half an interval overdue, dead after
/// `dead_after` without one. A member whose stream ended without a `Deregister` is suspect at
/// once and dead one interval later unless it came back; a silent partition (no stream end)
/// still waits for `dead_after`, so a slow link never causes replacements.
pub fn health_at(now: Duration, m: &Member, cfg: &PolicyConfig) -> Health {
    if m.health == Health::Dead {
        return Health::Dead;
    }
    let Some(registered) = m.registered_at else {
        return if now.saturating_sub(m.launched_at) > cfg.boot_deadline {
            Health::Dead
        } else {
            Health::Booting
        };
    };
    // Registration is itself a sign of life, so it stands in for a heartbeat until the first one.
    let last = m.last_heartbeat.map_or(registered, |h| h.max(registered));
    let silent = now.saturating_sub(last);
    if let Some(lost) = m.stream_lost.filter(|lost| *lost >= last) {
        return if now.saturating_sub(lost) > cfg.heartbeat || silent > cfg.dead_after {
            Health::Dead
        } else {
            Health::Suspect
        };
    }
    if silent > cfg.dead_after {
        Health::Dead
    } else if silent > cfg.heartbeat + cfg.heartbeat / 2 {
        // Half an interval of grace: scheduling jitter alone must not drop a member's load.
        Health::Suspect
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn health_follows_registration_and_heartbeats() {
        let c = cfg(thresholds());
        let mut m = healthy("a", s(100), 50.0);
        m.registered_at = None;
        m.last_heartbeat = None;
        assert_eq!(health_at(s(300), &m, &c), Health::Booting);
        assert_eq!(health_at(s(301), &m, &c), Health::Dead);
        m.registered_at = Some(s(10));
        m.last_heartbeat = Some(s(100));
        assert_eq!(health_at(s(105), &m, &c), Health::Healthy);
        assert_eq!(health_at(s(107), &m, &c), Health::Healthy);
        assert_eq!(health_at(s(108), &m, &c), Health::Suspect);
        assert_eq!(health_at(s(115), &m, &c), Health::Suspect);
        assert_eq!(health_at(s(116), &m, &c), Health::Dead);
        m.health = Health::Dead;
        assert_eq!(health_at(s(100), &m, &c), Health::Dead);
    }

    #[test]
    fn a_lost_stream_is_suspect_at_once_and_dead_one_interval_later() {
        let c = cfg(thresholds());
        let mut m = healthy("a", s(100), 50.0);
        m.stream_lost = Some(s(101));
        assert_eq!(health_at(s(101), &m, &c), Health::Suspect);
        assert_eq!(health_at(s(106), &m, &c), Health::Suspect);
        assert_eq!(health_at(s(107), &m, &c), Health::Dead);
        // A heartbeat after the loss (a new stream) clears it.
        m.last_heartbeat = Some(s(102));
        assert_eq!(health_at(s(103), &m, &c), Health::Healthy);
    }
}
