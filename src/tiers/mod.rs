//! Tiers declare the resources a stack needs. They never call AWS: what must be looked up first
//! (VPC, subnets, image, hosted zone) arrives as [`Inputs`].

pub mod alb_asg;
pub mod lb_vms;
pub mod single_vm;
pub mod swarm;

use crate::plan::Resource;
use crate::render::RenderError;
use crate::stack::{Stack, Tier};

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
    pub leader: crate::plan::ResourceId,
    pub command: DrainCommand,
}

/// The drain hook of a stack's tier, if it has one.
pub fn drain(stack: &Stack) -> Option<Drain> {
    match stack.spec.tier {
        Tier::Swarm => Some(swarm::drain(stack)),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("tier `{0}` is not available in this version of iac")]
    NotImplemented(&'static str),
}

/// The desired resources of a stack, in creation order.
pub fn desired(stack: &Stack, inputs: &Inputs) -> Result<Vec<Resource>, TierError> {
    match stack.spec.tier {
        Tier::SingleVm => single_vm::desired(stack, inputs),
        Tier::LbVms => lb_vms::desired(stack, inputs),
        Tier::Swarm => swarm::desired(stack, inputs),
        Tier::AlbAsg => alb_asg::desired(stack, inputs),
        other => Err(TierError::NotImplemented(other.as_str())),
    }
}
