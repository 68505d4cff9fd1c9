//! The gRPC side of the monitor: registration, heartbeat streams, deregistration and drain
//! acknowledgements. The token only lets a caller in: a registration must name an instance the
//! fleet launched or lists, and every later call for a member must carry the session its
//! registration returned, so a token holder cannot speak for another member. Every refusal is
//! counted and leaves the pool as it was.

use std::sync::Arc;

use iac_proto::{
    check_token, AckDrainReply, AckDrainRequest, DeregisterReply, DeregisterRequest, Directive,
    HeartbeatReply, HeartbeatRequest, Monitor, RegisterReply, RegisterRequest,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::guard::{capped, new_session, Limits};
use super::state::{booting, send_directive, Entry, Pool, Shared, SAMPLES};
use crate::fleet::Fleet;
use crate::policy::Health;
use crate::stats::{add, Refusal};

/// Labels an agent may send at registration, and their total size.
const MAX_LABELS: usize = 16;

/// What a heartbeat did to the pool.
enum Beat {
    Counted,
    /// Out of order (a replayed or delayed message): ignored.
    Stale,
    /// The member is not in the pool (any more).
    Unknown,
    /// A newer registration of this member took over; this stream is over.
    Superseded,
    Refused(Refusal),
}

type Replies = mpsc::Sender<Result<HeartbeatReply, Status>>;

/// The gRPC side.
pub struct MonitorService {
    pub shared: Arc<Shared>,
    /// Asked whether an instance id it does not know yet is one of its own.
    fleet: Arc<dyn Fleet>,
    limits: Limits,
}

impl MonitorService {
    pub fn new(shared: Arc<Shared>, fleet: Arc<dyn Fleet>) -> MonitorService {
        MonitorService::with_limits(shared, fleet, Limits::default())
    }

    pub fn with_limits(shared: Arc<Shared>, fleet: Arc<dyn Fleet>, limits: Limits) -> Self {
        MonitorService {
            shared,
            fleet,
            limits,
        }
    }

    /// An unauthenticated call is refused and counted; the pool is not touched.
    fn auth<T>(&self, req: &Request<T>) -> Result<(), Status> {
        check_token(req, &self.shared.token).inspect_err(|_| {
            let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            self.shared.refuse(Refusal::Token, &peer);
        })
    }

    /// Refuses (counted, logged at most once a second) with `status`.
    fn refuse(&self, why: Refusal, caller: &str, status: Status) -> Status {
        self.shared.refuse(why, caller);
        status
    }

    /// Applies `f` to the member, if the caller holds its session. An unknown member is fine
    /// (already gone: nothing to undo); a wrong session is refused and counted.
    fn as_member(&self, id: &str, session: &str, f: impl FnOnce(&mut Entry)) -> Result<(), Status> {
        let ok = self.shared.with_pool(|p| match p.entries.get_mut(id) {
            Some(e) if e.session_matches(session) => {
                f(e);
                true
            }
            Some(_) => false,
            None => true,
        })?;
        if ok {
            return Ok(());
        }
        Err(self.refuse(
            Refusal::Session,
            id,
            Status::permission_denied("not this member's session"),
        ))
    }

    /// The cheap checks of a registration: sizes and characters of what the caller sent.
    fn check_fields(&self, r: &RegisterRequest) -> Result<(), Status> {
        if r.encoded_len() > self.limits.max_message {
            return Err(self.refuse(
                Refusal::Oversized,
                &r.instance_id,
                Status::resource_exhausted("the registration is too large"),
            ));
        }
        let labels_ok = r.labels.len() <= MAX_LABELS;
        if r.instance_id.is_empty()
            || r.instance_id.len() > 128
            || !r.instance_id.chars().all(|c| c.is_ascii_graphic())
            || r.address.len() > 256
            || r.version.len() > 64
            || !labels_ok
        {
            return Err(self.refuse(
                Refusal::Malformed,
                &r.instance_id,
                Status::invalid_argument(
                    "instance_id must be 1 to 128 visible characters, address at most 256, \
                     version at most 64, and at most 16 labels",
                ),
            ));
        }
        Ok(())
    }
}

/// Applies one heartbeat to the table. `bound` is the member this stream speaks for (set by its
/// first message, which must carry the member's session).
fn beat(
    p: &mut Pool,
    bound: &mut Option<String>,
    hb: &HeartbeatRequest,
    tx: &Replies,
    now: std::time::Duration,
) -> Beat {
    if bound.as_ref().is_some_and(|b| *b != hb.member_id) {
        return Beat::Refused(Refusal::OtherMember);
    }
    let Some(e) = p.entries.get_mut(&hb.member_id) else {
        return Beat::Unknown;
    };
    if bound.is_none() {
        if !e.session_matches(&hb.session) {
            return Beat::Refused(Refusal::Session);
        }
        // This stream now speaks for the member; an older one (if any) is superseded.
        e.replies = Some(tx.clone());
        *bound = Some(hb.member_id.clone());
    } else if !e.replies.as_ref().is_some_and(|r| r.same_channel(tx)) {
        return Beat::Superseded;
    }
    if hb.seq <= e.last_seq {
        return Beat::Stale;
    }
    if hb.seq != e.last_seq + 1 {
        // One message with a huge seq would otherwise make every later one look stale.
        return Beat::Refused(Refusal::SeqJump);
    }
    e.last_seq = hb.seq;
    e.member.last_heartbeat = Some(now);
    e.member.stream_lost = None;
    if hb.cpu_percent.is_finite()
        && (0.0..=100.0).contains(&hb.cpu_percent)
        && !hb.draining
        && e.drain_since.is_none()
    {
        e.member.load = Some(hb.cpu_percent);
        e.member.samples.push_back((now, hb.cpu_percent));
        while e.member.samples.len() > SAMPLES {
            e.member.samples.pop_front();
        }
    }
    Beat::Counted
}

#[tonic::async_trait]
impl Monitor for MonitorService {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.check_fields(&r)?;
        let shared = &self.shared;
        let id = r.instance_id.as_str();
        if !shared.registrations.allow() {
            return Err(self.refuse(
                Refusal::RateLimited,
                id,
                Status::resource_exhausted("too many registrations; retry later"),
            ));
        }
        let cap = shared.table_cap();
        let known = shared.with_pool(|p| {
            p.entries
                .get(id)
                .map(|e| e.stream_live())
                .ok_or(p.entries.len())
        })?;
        let admitted_by_fleet = match known {
            Ok(true) => {
                return Err(self.refuse(Refusal::Live, id, registration_refused(Refusal::Live)))
            }
            Ok(false) => false,
            Err(len) if len >= cap => {
                return Err(self.refuse(
                    Refusal::TableFull,
                    id,
                    registration_refused(Refusal::TableFull),
                ))
            }
            Err(_) => match self.fleet.owns(id).await {
                Ok(true) => true,
                Ok(false) => {
                    return Err(self.refuse(
                        Refusal::NotInFleet,
                        id,
                        registration_refused(Refusal::NotInFleet),
                    ))
                }
                Err(e) => {
                    add(&shared.stats.fleet_errors, 1);
                    tracing::warn!(error = %e, instance = %capped(id), "cannot ask the fleet about a registration");
                    return Err(Status::unavailable(
                        "cannot check the instance; retry later",
                    ));
                }
            },
        };
        let session = new_session().map_err(|e| {
            tracing::error!(error = %e, "cannot generate a session");
            Status::internal("cannot generate a session")
        })?;
        let now = shared.now();
        let outcome = shared.with_pool(|p| {
            if !p.entries.contains_key(id) {
                // Removed (or the table filled) while the fleet was asked.
                if !admitted_by_fleet {
                    return Err(Refusal::NotInFleet);
                }
                if p.entries.len() >= cap {
                    return Err(Refusal::TableFull);
                }
            }
            let e = p
                .entries
                .entry(id.to_string())
                .or_insert_with(|| booting(id, now));
            if e.stream_live() {
                return Err(Refusal::Live);
            }
            e.member.health = Health::Healthy;
            e.member.registered_at.get_or_insert(now);
            e.member.last_heartbeat = Some(now);
            e.member.stream_lost = None;
            // A new registration starts a new heartbeat stream, sequence and session.
            e.replies = None;
            e.last_seq = 0;
            e.session.clone_from(&session);
            Ok(())
        })?;
        if let Err(why) = outcome {
            // The same answer as the checks above give, when the table changed meanwhile.
            return Err(self.refuse(why, id, registration_refused(why)));
        }
        add(&shared.stats.registrations, 1);
        tracing::info!(instance = %capped(id), address = %capped(&r.address), "registered");
        Ok(Response::new(RegisterReply {
            member_id: r.instance_id,
            heartbeat_interval_ms: shared.policy.heartbeat.as_millis() as u32,
            accepted: true,
            session,
        }))
    }

    type HeartbeatStream = ReceiverStream<Result<HeartbeatReply, Status>>;

    async fn heartbeat(
        &self,
        req: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        self.auth(&req)?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let shared = self.shared.clone();
        let max_message = self.limits.max_message;
        tokio::spawn(async move {
            let mut bound: Option<String> = None;
            loop {
                let hb = match inbound.message().await {
                    Ok(Some(hb)) => hb,
                    Ok(None) => break,
                    Err(s) => {
                        if matches!(s.code(), Code::OutOfRange | Code::ResourceExhausted) {
                            shared.refuse(Refusal::Oversized, bound.as_deref().unwrap_or(""));
                        }
                        break;
                    }
                };
                let received = std::time::Instant::now();
                let outcome = if hb.encoded_len() > max_message {
                    Beat::Refused(Refusal::Oversized)
                } else {
                    let now = shared.now();
                    shared
                        .with_pool(|p| beat(p, &mut bound, &hb, &tx, now))
                        .unwrap_or(Beat::Unknown)
                };
                match outcome {
                    Beat::Counted => shared.stats.heartbeat_handled(received.elapsed()),
                    Beat::Stale => {
                        add(&shared.stats.stale, 1);
                        tracing::debug!(member = %capped(&hb.member_id), seq = hb.seq, "stale heartbeat ignored");
                    }
                    Beat::Unknown => {
                        // The member was removed (terminated or deregistered), or the monitor
                        // restarted: tell the agent to go through registration again or leave.
                        add(&shared.stats.stale, 1);
                        send_directive(&hb.member_id, &tx, Directive::Deregister).await;
                        break;
                    }
                    Beat::Superseded => break,
                    Beat::Refused(why) => {
                        shared.refuse(why, &hb.member_id);
                        if bound.is_none() {
                            // Nothing to speak for: close the stream.
                            let _ = tx
                                .send(Err(Status::permission_denied(
                                    "the first heartbeat must carry the registration's session",
                                )))
                                .await;
                            break;
                        }
                    }
                }
            }
            // The stream ended. If it was its member's current stream and the member did not
            // deregister, the agent died or lost its connection: suspect now, dead unless a new
            // stream comes within one interval.
            if let Some(id) = bound {
                let now = shared.now();
                let _ = shared.with_pool(|p| {
                    if let Some(e) = p.entries.get_mut(&id) {
                        if e.replies.as_ref().is_some_and(|r| r.same_channel(&tx)) {
                            e.replies = None;
                            if e.member.health != Health::Dead {
                                e.member.stream_lost = Some(now);
                            }
                        }
                    }
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn deregister(
        &self,
        req: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterReply>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.as_member(&r.member_id, &r.session, |e| {
            // It leaves by itself: dead to the policy, which replaces it if the pool needs it.
            e.member.health = Health::Dead;
            e.drained = true;
        })?;
        add(&self.shared.stats.deregistrations, 1);
        tracing::info!(member = %capped(&r.member_id), reason = %capped(&r.reason), "deregistered");
        Ok(Response::new(DeregisterReply {}))
    }

    async fn ack_drain(
        &self,
        req: Request<AckDrainRequest>,
    ) -> Result<Response<AckDrainReply>, Status> {
        self.auth(&req)?;
        let r = req.into_inner();
        self.as_member(&r.member_id, &r.session, |e| e.drained = true)?;
        Ok(Response::new(AckDrainReply {}))
    }
}
/// What a refused registration is told: the same whether the check fails before the fleet is
/// asked or after it, when the table changed meanwhile.
fn registration_refused(why: Refusal) -> Status {
    match why {
        Refusal::TableFull => Status::resource_exhausted("the membership table is full"),
        Refusal::NotInFleet => Status::permission_denied("not an instance of this fleet"),
        Refusal::Live => Status::already_exists("this member's heartbeat stream is open"),
        _ => Status::failed_precondition("the registration is no longer possible; retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_registration_refused_in_the_race_gets_the_code_of_its_reason() {
        assert_eq!(
            registration_refused(Refusal::TableFull).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            registration_refused(Refusal::NotInFleet).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            registration_refused(Refusal::Live).code(),
            Code::AlreadyExists
        );
    }
}
