//! `iac`: provision a containerized web application onto AWS from one YAML stack file.
//!
//! Data flows one way: stack file → validated [`stack::Stack`] → desired resources
//! ([`tiers`]) → discovered actual resources ([`aws::provider`]) → [`plan::Plan`] →
//! [`apply`] → outputs.

pub mod apply;
pub mod aws;
pub mod cli;
pub mod cost;
pub mod lease;
pub mod plan;
pub mod render;
pub mod scaler;
pub mod stack;
pub mod tiers;
