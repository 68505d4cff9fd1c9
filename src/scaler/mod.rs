//! The custom scaler. Its core (policy, simulation, monitor, admin API, local fleet) is the
//! `iac-scaler` crate, which has no AWS SDK; this module adds what needs AWS: the `ec2` fleet.
//! The policy a stack's `scaler` section describes is `ScalerConf::policy`, beside its checks.

pub mod ec2;

pub use iac_scaler::{admin, config, fleet, health, monitor, plot, policy, simulate, stats, trace};
