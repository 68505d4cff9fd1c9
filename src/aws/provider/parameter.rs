//! SSM parameters under `/iac/<stack>/`: values iac writes (generated passwords and TLS
//! bundles, filled templates, the app's spec) and those the stack's instances write. A changed
//! value that instances act on is announced to them by Run Command ([`Notify`]), one instance
//! at a time, with a rollback to the last good value when one of them fails.

use super::{not_mine, Applier, Discovered, Known, Provider};
use crate::apply::events::Event;
use crate::aws::error::{AwsError, ErrorClass};
use crate::aws::{autoscaling, ssm, Aws};
use crate::plan::compare::{kind_changed, Compare, Context};
use crate::plan::diff::resolve_template;
use crate::plan::*;

pub struct Parameters;

#[async_trait::async_trait]
impl Provider for Parameters {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::SsmParameter]
    }

    async fn discover(&self, aws: &Aws, stack: &str) -> Result<Discovered, AwsError> {
        Ok(Discovered::of(ssm::discover(aws, stack).await?))
    }

    async fn create(&self, cx: &Applier, r: &Resource) -> Result<Option<String>, AwsError> {
        let Spec::SsmParameter(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let value = match &s.value {
            ParamValue::WrittenByInstances => return Ok(None),
            ParamValue::Generated => ssm::generate_password()?,
            ParamValue::GeneratedTls { server_name } => iac_scaler::tls::generate_for(server_name)
                .map_err(|e| AwsError::state("ssm:PutParameter", ErrorClass::Other, e.to_string()))?
                .bundle(),
            ParamValue::Template { .. } => filled(cx, r, s)?,
        };
        let t = ssm::param_tags(&cx.stack, &r.id, &cx.extra_tags);
        put(cx, s, &value, Some(&t)).await?;
        remember(cx, r, s, value);
        Ok(Some(s.name.clone()))
    }

    /// A template's value is written again; a generated one is never regenerated. A changed
    /// value is announced to the instances that were there before this run.
    async fn update(
        &self,
        cx: &Applier,
        r: &Resource,
        actual: &Observed,
    ) -> Result<Option<String>, AwsError> {
        let Spec::SsmParameter(s) = &r.spec else {
            return Err(not_mine(r));
        };
        let value = match &s.value {
            ParamValue::WrittenByInstances => return Ok(None),
            ParamValue::Generated | ParamValue::GeneratedTls { .. } => {
                return Ok(Some(s.name.clone()))
            }
            ParamValue::Template { .. } => filled(cx, r, s)?,
        };
        put(cx, s, &value, None).await?;
        remember(cx, r, s, value.clone());
        let previous = match &actual.details {
            Details::SsmParameter {
                value: Some(v),
                secure: false,
            } if v != &value => Some(v.clone()),
            _ => None,
        };
        notify_all(cx, &r.id, s, previous).await?;
        Ok(Some(s.name.clone()))
    }

    async fn delete(&self, cx: &Applier, o: &Observed) -> Result<(), AwsError> {
        ssm::delete(&cx.aws, &o.physical_id).await
    }
}

/// The parameter known by its name, and by its value when that is not a secret.
fn remember(cx: &Applier, r: &Resource, s: &SsmParameterSpec, value: String) {
    cx.remember(
        &r.id,
        Known::id(&s.name).with_some("value", (!s.secure).then_some(value)),
    );
}

/// A template's text with what it refers to filled in.
fn filled(cx: &Applier, r: &Resource, s: &SsmParameterSpec) -> Result<String, AwsError> {
    let ParamValue::Template { text, refs } = &s.value else {
        return Err(not_mine(r));
    };
    fill_template(text, refs, &|id| cx.lookup(id).map(|k| k.attrs)).ok_or_else(|| {
        AwsError::state(
            "ssm:PutParameter",
            ErrorClass::Other,
            format!("{}: a resource it refers to is not available yet", r.id),
        )
    })
}

async fn put(
    cx: &Applier,
    s: &SsmParameterSpec,
    value: &str,
    create_tags: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), AwsError> {
    ssm::put(&cx.aws, &s.name, value, s.secure, create_tags)
        .await
        .map_err(|e| {
            if e.is(ErrorClass::AlreadyExists) {
                AwsError::state(
                    "ssm:PutParameter",
                    ErrorClass::AlreadyExists,
                    format!(
                        "parameter {} exists but was not found under the stack's path; delete it",
                        s.name
                    ),
                )
            } else {
                e
            }
        })
}

/// Sends a changed parameter's commands one at a time (only to instances that existed
/// before this run: new ones read the value at boot). When one fails, the parameter goes
/// back to `previous` and the commands already sent are sent again, so every instance runs
/// the last good value; the error names the step that failed.
async fn notify_all(
    cx: &Applier,
    id: &ResourceId,
    s: &SsmParameterSpec,
    previous: Option<String>,
) -> Result<(), AwsError> {
    let due: Vec<&Notify> = s
        .notify
        .iter()
        .filter(|n| cx.is_preexisting(&n.instance))
        .collect();
    for (i, n) in due.iter().enumerate() {
        let Err(e) = notify_one(cx, id, n).await else {
            continue;
        };
        let Some(previous) = &previous else {
            return Err(e);
        };
        ssm::put(&cx.aws, &s.name, previous, s.secure, None).await?;
        cx.reporter.event(&Event::Info {
            message: format!("{id}: set {} back to its last good value", s.name),
        });
        for done in &due[..i] {
            if let Err(again) = notify_one(cx, id, done).await {
                cx.reporter.event(&Event::Info {
                    message: format!("{id}: rolling back failed too: {}", again.message),
                });
            }
        }
        return Err(e);
    }
    Ok(())
}

/// The instances a command for `target` goes to: the instance itself, or the instances an
/// Auto Scaling group has in service now (it may have replaced one since discovery).
async fn command_targets(cx: &Applier, target: &ResourceId) -> Result<Vec<String>, AwsError> {
    let known = cx.need(target, "ssm:SendCommand")?;
    let kind = cx.desired_kind(target);
    if kind == Some(Kind::AutoScalingGroup) {
        autoscaling::in_service_instances(&cx.aws, &known.physical_id).await
    } else {
        Ok(vec![known.physical_id])
    }
}

/// One [`Notify`]: `around.before`, the command (to each of its targets, one at a time),
/// then `around.after` (also after a failure).
async fn notify_one(cx: &Applier, id: &ResourceId, n: &Notify) -> Result<(), AwsError> {
    let targets = command_targets(cx, &n.instance).await?;
    if targets.is_empty() {
        // A group between instances: the next one reads the new value at boot.
        cx.reporter.event(&Event::Info {
            message: format!(
                "{id}: {} has no instance in service; its next one reads the new value at boot",
                n.instance
            ),
        });
        return Ok(());
    }
    let around = match &n.around {
        Some(a) if cx.is_preexisting(&a.instance) => {
            let other = cx.need(&a.instance, "ssm:SendCommand")?;
            let comment = format!("{} ({}: before)", a.comment, n.instance);
            cx.run_and_wait(id, &other.physical_id, &a.before, &comment)
                .await?;
            Some((a, other))
        }
        _ => None,
    };
    let mut result = Ok(());
    for target in &targets {
        result = cx
            .run_and_wait(id, target, &n.command, &n.comment)
            .await
            .map(|_| ());
        if result.is_err() {
            break;
        }
    }
    if let Some((a, other)) = around {
        let comment = format!("{} ({}: after)", a.comment, n.instance);
        cx.run_and_wait(id, &other.physical_id, &a.after, &comment)
            .await?;
    }
    result.map(|_| ())
}

impl Compare for SsmParameterSpec {
    /// A value made from a template is compared once its references are known; generated
    /// values (secrets, certificates) and values the instances write are never compared.
    fn compare(&self, found: &Observed, cx: &Context) -> Action {
        let Details::SsmParameter { value, secure } = &found.details else {
            return kind_changed();
        };
        if self.secure != *secure {
            return Action::Replace {
                reasons: vec![format!(
                    "type {} → {}",
                    param_type(*secure),
                    param_type(self.secure)
                )],
            };
        }
        match &self.value {
            ParamValue::Generated
            | ParamValue::GeneratedTls { .. }
            | ParamValue::WrittenByInstances => Action::Keep,
            ParamValue::Template { text, refs } => match resolve_template(text, refs, cx.kept) {
                Some(want) if value.as_deref() == Some(want.as_str()) => Action::Keep,
                Some(_) => Action::Update {
                    reasons: vec!["value changed".to_string()],
                },
                None => Action::Update {
                    reasons: vec![format!(
                        "value depends on new {}",
                        refs.iter()
                            .filter(|r| !cx.kept.contains_key(r))
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )],
                },
            },
        }
    }
}

fn param_type(secure: bool) -> &'static str {
    if secure {
        "SecureString"
    } else {
        "String"
    }
}
