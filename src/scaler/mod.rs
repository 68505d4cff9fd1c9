//! The custom scaler's decision core, with no I/O: [`policy`] turns the membership table
//! ([`health`]) and the configuration ([`config`]) into a decision, and [`simulate`] replays a
//! load trace ([`trace`]) in virtual time to compare that policy with two baselines, rendering
//! timelines through [`plot`]. The gRPC monitor and the agents call into these modules; they add
//! the clock, the network and the fleet.

pub mod config;
pub mod health;
pub mod plot;
pub mod policy;
pub mod simulate;
pub mod trace;
