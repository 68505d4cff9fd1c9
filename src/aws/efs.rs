//! efs (being written).
