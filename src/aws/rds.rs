//! rds (being written).
