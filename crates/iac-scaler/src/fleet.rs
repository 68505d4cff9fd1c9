//! Where the monitor's instances come from. The monitor only launches, terminates and lists;
//! a fleet decides what an instance is: a real `iac-agent` process on this machine (`local`, for
//! demos and tests) or an EC2 instance (`ec2`, to come).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A fleet operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Launches and terminates instances; ids are instance ids, the same the agents register with.
#[async_trait::async_trait]
pub trait Fleet: Send + Sync {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError>;
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError>;
    /// Instances the fleet runs now (after a monitor restart, the pool is rebuilt from this and
    /// the agents' re-registrations, so nothing is launched twice).
    async fn list(&self) -> Result<Vec<String>, FleetError>;
    /// Whether `id` is one of this fleet's running instances: the monitor admits a registration
    /// only for such an id, so the shared token alone cannot add members.
    async fn owns(&self, id: &str) -> Result<bool, FleetError>;
}

/// Real agent processes on this machine, each with its admin endpoint on a loopback port.
pub struct LocalFleet {
    agent: PathBuf,
    monitor_url: String,
    token: String,
    /// Extra agent arguments, e.g. `--simulate steady:10`.
    args: Vec<String>,
    next: AtomicU32,
    children: Mutex<BTreeMap<String, (Child, u16)>>,
}

impl LocalFleet {
    pub fn new(agent: PathBuf, monitor_url: &str, token: &str, args: Vec<String>) -> LocalFleet {
        LocalFleet {
            agent,
            monitor_url: monitor_url.to_string(),
            token: token.to_string(),
            args,
            next: AtomicU32::new(1),
            children: Mutex::new(BTreeMap::new()),
        }
    }

    /// The admin port of each running agent, by instance id.
    pub fn admin_ports(&self) -> BTreeMap<String, u16> {
        self.children
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(id, (_, port))| (id.clone(), *port))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The process id of an agent (tests kill it to play a crash).
    pub fn pid(&self, id: &str) -> Option<u32> {
        self.children
            .lock()
            .ok()
            .and_then(|c| c.get(id).map(|(child, _)| child.id()))
    }

    fn free_port() -> Result<u16, FleetError> {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|source| FleetError::Spawn {
                what: "a loopback port for the agent's admin endpoint".into(),
                source,
            })
    }
}

#[async_trait::async_trait]
impl Fleet for LocalFleet {
    async fn launch(&self, count: u32) -> Result<Vec<String>, FleetError> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let id = format!("local-{}", self.next.fetch_add(1, Ordering::SeqCst));
            let port = Self::free_port()?;
            let mut child = Command::new(&self.agent)
                .args([
                    "--monitor",
                    &self.monitor_url,
                    "--instance-id",
                    &id,
                    "--admin",
                    &format!("127.0.0.1:{port}"),
                ])
                // Monitor and agents share this machine: their traffic stays on loopback.
                .args(
                    self.monitor_url
                        .starts_with("http://")
                        .then_some("--allow-plaintext"),
                )
                .args(&self.args)
                // The token travels through a pipe: never on a command line (`ps`) nor in an
                // environment (`/proc/<pid>/environ`); one the monitor was itself given in its
                // environment is not passed on either.
                .args(["--token-file", "/dev/stdin"])
                .env_remove("IAC_AGENT_TOKEN")
                .env_remove("IAC_SCALER_TOKEN")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|source| FleetError::Spawn {
                    what: self.agent.display().to_string(),
                    source,
                })?;
            // A token is far smaller than a pipe's buffer, so this never blocks; dropping the
            // pipe ends the agent's read.
            let sent = match child.stdin.take() {
                Some(mut pipe) => pipe.write_all(self.token.as_bytes()),
                None => Err(std::io::Error::other("no pipe to the agent's stdin")),
            };
            if let Err(source) = sent {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FleetError::Spawn {
                    what: format!("{} (handing it the token)", self.agent.display()),
                    source,
                });
            }
            // Inserted right after the spawn: the child needs far longer to start and register
            // than this takes, and a registration refused meanwhile is retried.
            if let Ok(mut c) = self.children.lock() {
                c.insert(id.clone(), (child, port));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        let mut children = self
            .children
            .lock()
            .map_err(|_| FleetError::Other("fleet lock poisoned".into()))?;
        for id in ids {
            if let Some((mut child, _)) = children.remove(id) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, FleetError> {
        let mut children = self
            .children
            .lock()
            .map_err(|_| FleetError::Other("fleet lock poisoned".into()))?;
        // A process that exited by itself is no instance any more.
        children.retain(|_, (child, _)| matches!(child.try_wait(), Ok(None)));
        Ok(children.keys().cloned().collect())
    }

    async fn owns(&self, id: &str) -> Result<bool, FleetError> {
        let mut children = self
            .children
            .lock()
            .map_err(|_| FleetError::Other("fleet lock poisoned".into()))?;
        Ok(match children.get_mut(id) {
            Some((child, _)) => matches!(child.try_wait(), Ok(None)),
            None => false,
        })
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        if let Ok(mut c) = self.children.lock() {
            for (_, (mut child, _)) in std::mem::take(&mut *c) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
