//! Executing plans: the DAG executor, events and waits with deadlines.

pub mod events;
pub mod executor;
pub mod wait;

pub use events::{Event, Recorder, Reporter};
pub use executor::{run, Node, Outcome, Task};
