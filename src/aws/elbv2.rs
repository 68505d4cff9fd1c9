//! elbv2 (being written).
