//! How a desired resource compares with the one found: the one question the diff asks of each
//! kind. Every kind's spec implements [`Compare`] in the provider module that creates and
//! updates that kind (beside the tags it writes and the changes it can make in place), so a
//! kind is described in one module; [`Spec::compare`](super::Spec::compare) dispatches to it
//! and the compiler refuses a kind that has none. The rules are pure: they see only the spec,
//! what discovery found and [`Context`].

use std::collections::{BTreeMap, BTreeSet};

use super::resource::{Observed, ResourceId};
use super::Action;

/// What the diff knows about the rest of the stack while it compares one resource.
pub struct Context<'a> {
    /// Resources that stay as they are, by logical id: references to them resolve to these.
    pub kept: &'a BTreeMap<&'a ResourceId, &'a Observed>,
    /// Resources that will be new after `up` (created or replaced): their ids are not known yet.
    pub renewed: &'a BTreeSet<&'a ResourceId>,
    /// Resources changed in place (a new launch template version, …).
    pub updated: &'a BTreeSet<&'a ResourceId>,
}

impl Context<'_> {
    /// The AWS id of a resource that stays.
    pub fn physical(&self, id: &ResourceId) -> Option<&str> {
        self.kept.get(id).map(|o| o.physical_id.as_str())
    }
}

/// How a kind's desired spec compares with what discovery found of it.
pub trait Compare {
    /// Keep, update in place (saying what differs) or replace (saying why it cannot change in
    /// place). `found` is of the spec's kind; [`kind_changed`] answers when its details are not.
    fn compare(&self, found: &Observed, cx: &Context) -> Action;
}

/// The answer when what was found is of another kind than the spec.
pub fn kind_changed() -> Action {
    Action::Replace {
        reasons: vec!["kind changed".to_string()],
    }
}

/// An update for these reasons, or keep when there are none.
pub fn update_if(reasons: Vec<String>) -> Action {
    if reasons.is_empty() {
        Action::Keep
    } else {
        Action::Update { reasons }
    }
}

/// Adds `what have → want` to the reasons when they differ.
pub fn differs<T: PartialEq + std::fmt::Debug>(
    reasons: &mut Vec<String>,
    what: &str,
    have: T,
    want: T,
) {
    if have != want {
        reasons.push(format!("{what} {have:?} → {want:?}"));
    }
}

/// Why a protection change is an update.
pub fn protection(on: bool) -> String {
    if on {
        "protect: turn protection on".to_string()
    } else {
        "protect: turn protection off".to_string()
    }
}
