//! Desired resources, observed resources, and the diff between them.
//!
//! Everything here is pure data: a [`Plan`] is computed without side effects, printed by
//! `iac plan` and executed by `iac up`.

pub mod compare;
pub mod data;
pub mod diff;
pub mod managed;
pub mod resource;
pub mod role;
pub mod scope;
pub mod tags;

pub use diff::diff;
pub use managed::*;
pub use resource::*;
pub use role::*;

use serde::Serialize;

/// Facts about the account that the desired graph depends on, looked up before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub vpc_id: String,
    /// The subnet a single instance goes into (the first of `subnets`).
    pub subnet_id: Option<String>,
    /// Every usable subnet with its availability zone; instances of a pool are spread over them.
    pub subnets: Vec<(String, String)>,
    pub image_id: String,
    /// The image's root device name, for the encrypted root volume mapping.
    pub root_device: String,
    /// Route 53 zone id when the stack names a hosted zone.
    pub hosted_zone_id: Option<String>,
}

/// Builds the command, sent to the leader, that drains and removes the node with a private IP.
pub type DrainCommand = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Nodes of a cluster are drained through its leader before they are terminated (swarm).
#[derive(Clone)]
pub struct Drain {
    pub leader: ResourceId,
    pub command: DrainCommand,
}

/// What `up` will do to one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create,
    /// Changed in place; the reasons say what differs.
    Update {
        reasons: Vec<String>,
    },
    /// Deleted and created anew (a new one first where possible).
    Replace {
        reasons: Vec<String>,
    },
    Keep,
    /// Tagged with the stack but no longer wanted (or a duplicate).
    Delete {
        reason: String,
    },
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update { .. } => "update",
            Action::Replace { .. } => "replace",
            Action::Keep => "keep",
            Action::Delete { .. } => "delete",
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update { .. } => "~",
            Action::Replace { .. } => "-/+",
            Action::Keep => " ",
            Action::Delete { .. } => "-",
        }
    }

    pub fn is_change(&self) -> bool {
        !matches!(self, Action::Keep)
    }
}

/// One line of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub id: ResourceId,
    pub kind: Kind,
    pub action: Action,
    /// The wanted state; absent for deletions.
    #[serde(skip)]
    pub desired: Option<Resource>,
    /// What exists now; absent for creations.
    pub actual: Option<Observed>,
}

/// The full plan for a stack.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub stack: String,
    pub changes: Vec<Change>,
    /// Changes that would destroy data without moving it, one line each: `up` refuses them
    /// unless `--allow-data-loss`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data_loss: Vec<String>,
}

/// Counts per action, for summaries and `--detailed-exitcode`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub keep: usize,
}

impl Summary {
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete > 0
    }

    pub fn is_destructive(&self) -> bool {
        self.replace + self.delete > 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to create, {} to update, {} to replace, {} to delete, {} unchanged",
            self.create, self.update, self.replace, self.delete, self.keep
        )
    }
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update { .. } => s.update += 1,
                Action::Replace { .. } => s.replace += 1,
                Action::Delete { .. } => s.delete += 1,
                Action::Keep => s.keep += 1,
            }
        }
        s
    }
}
