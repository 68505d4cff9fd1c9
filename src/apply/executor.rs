//! Runs a graph of operations: a node starts once its dependencies are done, at most
//! `parallelism` at a time; a failure skips everything that depends on it, not its siblings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::events::{Event, Reporter};
use crate::plan::{Kind, ResourceId};

/// The work of one node; yields the physical id it produced, if any.
pub type Task<E> = Pin<Box<dyn Future<Output = Result<Option<String>, E>> + Send>>;

/// What a finished task reports back: (id, kind, action, result, elapsed ms).
type Finished = (
    ResourceId,
    Kind,
    String,
    Result<Option<String>, String>,
    u64,
);

/// One operation in the graph.
pub struct Node<E> {
    pub id: ResourceId,
    pub kind: Kind,
    /// `create`, `update`, `delete`, … for events.
    pub action: String,
    /// Nodes that must finish first. Ids not in the graph count as done.
    pub deps: Vec<ResourceId>,
    /// The dependencies only order the work: this node still runs when one of them failed
    /// (deletions, where each retries whatever is still in use).
    pub order_only: bool,
    /// Built only when the node starts, so it can read what its dependencies produced.
    pub task: Box<dyn FnOnce() -> Task<E> + Send>,
}

/// What happened to every node.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Nodes in the order they finished successfully.
    pub done: Vec<ResourceId>,
    pub failed: Vec<(ResourceId, String)>,
    pub skipped: Vec<ResourceId>,
    /// The largest number of nodes that ran at the same time.
    pub max_concurrency: usize,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

/// Runs `nodes` to completion.
pub async fn run<E>(nodes: Vec<Node<E>>, parallelism: usize, reporter: Arc<dyn Reporter>) -> Outcome
where
    E: Display + Send + 'static,
{
    let parallelism = parallelism.max(1);
    let ids: BTreeSet<ResourceId> = nodes.iter().map(|n| n.id.clone()).collect();
    let mut waiting_on: BTreeMap<ResourceId, BTreeSet<ResourceId>> = BTreeMap::new();
    let mut dependents: BTreeMap<ResourceId, Vec<ResourceId>> = BTreeMap::new();
    let mut pending: BTreeMap<ResourceId, Node<E>> = BTreeMap::new();
    let mut order: Vec<ResourceId> = Vec::new();
    for n in nodes {
        let deps: BTreeSet<ResourceId> = n
            .deps
            .iter()
            .filter(|d| ids.contains(*d) && **d != n.id)
            .cloned()
            .collect();
        for d in &deps {
            dependents.entry(d.clone()).or_default().push(n.id.clone());
        }
        waiting_on.insert(n.id.clone(), deps);
        order.push(n.id.clone());
        pending.insert(n.id.clone(), n);
    }
    let mut outcome = Outcome::default();
    let mut running: JoinSet<Finished> = JoinSet::new();
    // Ready nodes keep the order in which they were given, so runs are reproducible.
    let mut ready: Vec<ResourceId> = order
        .iter()
        .filter(|id| waiting_on[*id].is_empty())
        .cloned()
        .collect();

    loop {
        while running.len() < parallelism && !ready.is_empty() {
            let id = ready.remove(0);
            let Some(node) = pending.remove(&id) else {
                continue;
            };
            reporter.event(&Event::Started {
                id: node.id.clone(),
                kind: node.kind,
                action: node.action.clone(),
            });
            let fut = (node.task)();
            let (nid, kind, action) = (node.id, node.kind, node.action);
            running.spawn(async move {
                let start = Instant::now();
                let res = fut.await.map_err(|e| e.to_string());
                (nid, kind, action, res, start.elapsed().as_millis() as u64)
            });
            outcome.max_concurrency = outcome.max_concurrency.max(running.len());
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (id, kind, action, res, elapsed_ms) = match joined {
            Ok(v) => v,
            Err(e) => {
                // A panicking task is a bug; report it instead of tearing the run down.
                reporter.event(&Event::Warning {
                    message: format!("internal error in a task: {e}"),
                });
                continue;
            }
        };
        match res {
            Ok(physical_id) => {
                reporter.event(&Event::Done {
                    id: id.clone(),
                    kind,
                    action,
                    physical_id,
                    elapsed_ms,
                });
                release(
                    &id,
                    &dependents,
                    &mut waiting_on,
                    &pending,
                    &mut ready,
                    false,
                );
                // Keep the original order among ready nodes.
                ready.sort_by_key(|r| order.iter().position(|o| o == r));
                outcome.done.push(id);
            }
            Err(error) => {
                reporter.event(&Event::Failed {
                    id: id.clone(),
                    kind,
                    action,
                    error: error.clone(),
                });
                release(
                    &id,
                    &dependents,
                    &mut waiting_on,
                    &pending,
                    &mut ready,
                    true,
                );
                skip_dependents(
                    &id,
                    &dependents,
                    &mut pending,
                    &mut ready,
                    &mut outcome,
                    reporter.as_ref(),
                );
                ready.sort_by_key(|r| order.iter().position(|o| o == r));
                outcome.failed.push((id, error));
            }
        }
    }
    // Whatever is left waits on a cycle (a bug in a tier): report rather than hang.
    for (id, node) in std::mem::take(&mut pending) {
        reporter.event(&Event::Skipped {
            id: id.clone(),
            kind: node.kind,
            because: ResourceId::new("dependency cycle"),
        });
        outcome.skipped.push(id);
    }
    outcome
}

/// Marks `done` as finished for its dependents and queues those now free to run. After a
/// failure (`failed`), only order-only dependents are released; the rest are skipped.
fn release<E>(
    done: &ResourceId,
    dependents: &BTreeMap<ResourceId, Vec<ResourceId>>,
    waiting_on: &mut BTreeMap<ResourceId, BTreeSet<ResourceId>>,
    pending: &BTreeMap<ResourceId, Node<E>>,
    ready: &mut Vec<ResourceId>,
    failed: bool,
) {
    for d in dependents.get(done).cloned().unwrap_or_default() {
        let Some(node) = pending.get(&d) else {
            continue;
        };
        if failed && !node.order_only {
            continue;
        }
        if let Some(w) = waiting_on.get_mut(&d) {
            w.remove(done);
            if w.is_empty() {
                ready.push(d);
            }
        }
    }
}

fn skip_dependents<E>(
    failed: &ResourceId,
    dependents: &BTreeMap<ResourceId, Vec<ResourceId>>,
    pending: &mut BTreeMap<ResourceId, Node<E>>,
    ready: &mut Vec<ResourceId>,
    outcome: &mut Outcome,
    reporter: &dyn Reporter,
) {
    let mut stack = vec![failed.clone()];
    while let Some(cur) = stack.pop() {
        for d in dependents.get(&cur).cloned().unwrap_or_default() {
            if pending.get(&d).is_some_and(|n| n.order_only) {
                continue;
            }
            if let Some(node) = pending.remove(&d) {
                ready.retain(|r| r != &d);
                reporter.event(&Event::Skipped {
                    id: d.clone(),
                    kind: node.kind,
                    because: failed.clone(),
                });
                outcome.skipped.push(d.clone());
                stack.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::apply::events::Silent;

    type Log = Arc<Mutex<Vec<String>>>;

    fn node(
        id: &str,
        deps: &[&str],
        ms: u64,
        fail: bool,
        log: Log,
        live: Arc<AtomicUsize>,
    ) -> Node<String> {
        let name = id.to_string();
        Node {
            id: ResourceId::new(id),
            kind: Kind::Instance,
            action: "create".into(),
            deps: deps.iter().map(|d| ResourceId::new(*d)).collect(),
            order_only: false,
            task: Box::new(move || {
                Box::pin(async move {
                    live.fetch_add(1, Ordering::SeqCst);
                    log.lock().unwrap().push(format!("start {name}"));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    log.lock().unwrap().push(format!("end {name}"));
                    live.fetch_sub(1, Ordering::SeqCst);
                    if fail {
                        Err(format!("{name} broke"))
                    } else {
                        Ok(Some(format!("phys-{name}")))
                    }
                })
            }),
        }
    }

    fn pos(log: &[String], s: &str) -> usize {
        log.iter().position(|x| x == s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn dependencies_finish_before_dependents_start() {
        let log: Log = Default::default();
        let live = Arc::new(AtomicUsize::new(0));
        let nodes = vec![
            node("eip", &["vm"], 10, false, log.clone(), live.clone()),
            node("vm", &["sg", "key"], 50, false, log.clone(), live.clone()),
            node("sg", &[], 30, false, log.clone(), live.clone()),
            node("key", &[], 10, false, log.clone(), live.clone()),
        ];
        let out = run(nodes, 8, Arc::new(Silent)).await;
        assert!(out.ok());
        let log = log.lock().unwrap().clone();
        assert!(pos(&log, "end sg") < pos(&log, "start vm"));
        assert!(pos(&log, "end key") < pos(&log, "start vm"));
        assert!(pos(&log, "end vm") < pos(&log, "start eip"));
        // sg and key are independent: they ran side by side.
        assert_eq!(out.max_concurrency, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn parallelism_is_bounded() {
        let log: Log = Default::default();
        let live = Arc::new(AtomicUsize::new(0));
        let nodes = (0..10)
            .map(|i| node(&format!("n{i}"), &[], 100, false, log.clone(), live.clone()))
            .collect();
        let start = Instant::now();
        let out = run(nodes, 3, Arc::new(Silent)).await;
        assert_eq!(out.max_concurrency, 3);
        assert_eq!(out.done.len(), 10);
        // ceil(10 / 3) rounds of 100 ms.
        assert_eq!(start.elapsed().as_millis() / 100, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_skips_only_its_dependents() {
        let log: Log = Default::default();
        let live = Arc::new(AtomicUsize::new(0));
        let nodes = vec![
            node("db", &[], 10, true, log.clone(), live.clone()),
            node("app", &["db"], 10, false, log.clone(), live.clone()),
            node("dns", &["app"], 10, false, log.clone(), live.clone()),
            node("lb", &[], 50, false, log.clone(), live.clone()),
        ];
        let out = run(nodes, 8, Arc::new(Silent)).await;
        assert_eq!(out.failed.len(), 1);
        assert_eq!(
            out.skipped,
            vec![ResourceId::new("app"), ResourceId::new("dns")]
        );
        assert_eq!(out.done, vec![ResourceId::new("lb")]);
    }

    #[tokio::test(start_paused = true)]
    async fn order_only_dependents_run_after_a_failure() {
        let log: Log = Default::default();
        let live = Arc::new(AtomicUsize::new(0));
        let mut later = node("group", &["vm"], 10, false, log.clone(), live.clone());
        later.order_only = true;
        let nodes = vec![node("vm", &[], 10, true, log.clone(), live.clone()), later];
        let out = run(nodes, 2, Arc::new(Silent)).await;
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.done, vec![ResourceId::new("group")]);
        let log = log.lock().unwrap().clone();
        assert!(pos(&log, "end vm") < pos(&log, "start group"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_is_reported_not_hung() {
        let log: Log = Default::default();
        let live = Arc::new(AtomicUsize::new(0));
        let nodes = vec![
            node("a", &["b"], 10, false, log.clone(), live.clone()),
            node("b", &["a"], 10, false, log.clone(), live.clone()),
        ];
        let out = run(nodes, 2, Arc::new(Silent)).await;
        assert_eq!(out.skipped.len(), 2);
    }
}
