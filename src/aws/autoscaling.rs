//! autoscaling (being written).
