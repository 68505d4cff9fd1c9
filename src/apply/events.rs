//! What the core tells the outside world while it works.

use serde::Serialize;

use crate::plan::{Kind, ResourceId};

/// One thing that happened. Serialized as one NDJSON line with `--output json`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A resource operation began.
    Started {
        id: ResourceId,
        kind: Kind,
        action: String,
    },
    /// A long operation is waiting for something.
    Waiting {
        id: ResourceId,
        what: String,
        status: String,
        elapsed_s: u64,
        deadline_s: u64,
    },
    Done {
        id: ResourceId,
        kind: Kind,
        action: String,
        physical_id: Option<String>,
        elapsed_ms: u64,
    },
    Failed {
        id: ResourceId,
        kind: Kind,
        action: String,
        error: String,
    },
    /// Not attempted because something it depends on failed.
    Skipped {
        id: ResourceId,
        kind: Kind,
        because: ResourceId,
    },
    Info {
        message: String,
    },
    Warning {
        message: String,
    },
}

/// Receives events. The CLI implements it with progress bars, plain lines or NDJSON.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// Discards everything (library use, tests).
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _event: &Event) {}
}

/// Keeps every event (tests; events held back until they may be shown).
#[derive(Default)]
pub struct Recorder(pub std::sync::Mutex<Vec<Event>>);

impl Recorder {
    /// The events kept so far, oldest first; the recorder is left empty.
    pub fn take(&self) -> Vec<Event> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl Reporter for Recorder {
    fn event(&self, event: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}
