//! What a plan does to data: the notes that make a replacement say where the data goes, and the
//! changes that would destroy it, which `up` refuses unless `--allow-data-loss`.

use super::resource::*;
use super::{Action, Change};

/// Says what happens to data: a replaced instance whose data volume is kept gets the reason
/// "the data volume moves to the new VM"; an instance replaced while its data volume does not
/// exist yet (it kept its data on its own disk), a data volume that cannot follow its instance,
/// and a data volume or file system no longer wanted are returned as data losses.
pub fn notes(changes: &mut [Change]) -> Vec<String> {
    let mut moves: Vec<(ResourceId, ResourceId)> = Vec::new();
    let mut loss = Vec::new();
    let action_of = |changes: &[Change], id: &ResourceId| {
        changes
            .iter()
            .find(|c| &c.id == id && c.kind == Kind::Instance)
            .map(|c| c.action.clone())
    };
    for c in changes.iter() {
        let kept_data = matches!(
            c.actual.as_ref().map(|a| &a.details),
            Some(
                Details::Volume {
                    keep_on_down: true,
                    ..
                } | Details::FileSystem {
                    keep_on_down: true,
                    ..
                }
            )
        );
        match (&c.action, &c.desired) {
            (Action::Delete { .. }, _) if kept_data => loss.push(format!(
                "{} {} ({}): deleting it deletes the data on it",
                c.kind,
                c.id,
                c.actual.as_ref().map_or("", |a| a.physical_id.as_str())
            )),
            (Action::Replace { reasons }, _) if kept_data => loss.push(format!(
                "{} {}: {}; a new one would be empty",
                c.kind,
                c.id,
                reasons.join(", ")
            )),
            (
                action,
                Some(Resource {
                    spec: Spec::Volume(v),
                    ..
                }),
            ) if v.keep_on_down => {
                if let Some(Action::Replace { .. }) = action_of(changes, &v.attach_to) {
                    if matches!(action, Action::Create) {
                        loss.push(format!(
                            "instance {}: its data is on its own disk (it was made before its data volume `{}`); replacing it deletes that data",
                            v.attach_to, c.id
                        ));
                    } else {
                        moves.push((v.attach_to.clone(), c.id.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    for (instance, volume) in moves {
        if let Some(Change {
            action: Action::Replace { reasons },
            ..
        }) = changes
            .iter_mut()
            .find(|c| c.id == instance && c.kind == Kind::Instance)
        {
            reasons.push(format!("the data volume ({volume}) moves to the new VM"));
        }
    }
    loss
}
