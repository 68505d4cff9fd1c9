//! Boot reports: each instance publishes how its boot script is doing as one SSM parameter,
//! `/iac/<stack>/boot/<instance-id>` (written by `templates/boot-report.sh.j2` with the
//! instance's own role). `iac logs`, `iac status` and `up` read them; `down` deletes them. They
//! are not resources of the stack (nothing declares them, `up` never deletes them), so stack
//! discovery leaves them out.

use serde::{Deserialize, Serialize};

use super::error::AwsError;
use super::Aws;

/// The path under which the stack's instances publish their reports.
pub fn path(stack: &str) -> String {
    crate::render::boot_reports_path(stack)
}

/// Where a boot stands, as the script last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootState {
    /// The first step has begun.
    Starting,
    Running,
    /// The script finished and the app passed its health check.
    Ready,
    /// The script exited non-zero; the report names the step and holds the log's tail.
    Failed,
    /// A report this version of iac cannot read.
    #[serde(other)]
    Unknown,
}

impl BootState {
    pub fn as_str(self) -> &'static str {
        match self {
            BootState::Starting => "starting",
            BootState::Running => "running",
            BootState::Ready => "ready",
            BootState::Failed => "failed",
            BootState::Unknown => "unknown",
        }
    }

    /// The script has exited: nothing will change until the instance boots again.
    pub fn is_final(self) -> bool {
        matches!(self, BootState::Ready | BootState::Failed)
    }
}

/// One step, when it began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootStep {
    pub name: String,
    pub at: String,
}

/// One instance's report, as the script wrote it (plus the instance id, from its name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootReport {
    #[serde(default)]
    pub instance_id: String,
    pub state: BootState,
    /// The current step, or the failed one.
    #[serde(default)]
    pub step: String,
    /// When the script started and when it last wrote (UTC, RFC 3339).
    #[serde(default)]
    pub started: String,
    #[serde(default)]
    pub updated: String,
    /// Every step so far, in order.
    #[serde(default)]
    pub steps: Vec<BootStep>,
    /// The script's exit code, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// The log's last lines, when it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

impl BootReport {
    /// Parses the parameter `value` of `instance_id`; a value that is no report becomes an
    /// `unknown` one saying so, rather than hiding the instance.
    pub fn parse(instance_id: &str, value: &str) -> BootReport {
        match serde_json::from_str::<BootReport>(value) {
            Ok(mut r) => {
                r.instance_id = instance_id.to_string();
                r
            }
            Err(e) => BootReport {
                instance_id: instance_id.to_string(),
                state: BootState::Unknown,
                step: String::new(),
                started: String::new(),
                updated: String::new(),
                steps: Vec::new(),
                exit: None,
                log: vec![format!("unreadable boot report: {e}")],
            },
        }
    }
}

/// Every report of the stack, by instance id.
pub async fn list(aws: &Aws, stack: &str) -> Result<Vec<BootReport>, AwsError> {
    let prefix = path(stack);
    let pages = aws
        .ssm
        .get_parameters_by_path()
        .path(&prefix)
        .recursive(false)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("ssm:GetParametersByPath", e))?;
    let mut out: Vec<BootReport> = pages
        .iter()
        .flat_map(|p| p.parameters())
        .filter_map(|p| {
            let id = p.name()?.strip_prefix(&prefix)?;
            Some(BootReport::parse(id, p.value().unwrap_or_default()))
        })
        .collect();
    out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(out)
}

/// Deletes every report of the stack (`down`); returns how many there were.
pub async fn delete_all(aws: &Aws, stack: &str) -> Result<usize, AwsError> {
    let names: Vec<String> = list(aws, stack)
        .await?
        .iter()
        .map(|r| format!("{}{}", path(stack), r.instance_id))
        .collect();
    // DeleteParameters takes at most 10 names.
    for chunk in names.chunks(10) {
        aws.ssm
            .delete_parameters()
            .set_names(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:DeleteParameters", e))?;
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_report_parses_with_its_step_and_log() {
        let r = BootReport::parse(
            "i-1",
            r#"{"state":"failed","step":"5/6 app container","started":"a","updated":"b","steps":[{"name":"1/6 packages","at":"a"}],"exit":1,"log":["x \"y\""]}"#,
        );
        assert_eq!(r.state, BootState::Failed);
        assert_eq!(r.step, "5/6 app container");
        assert_eq!(r.exit, Some(1));
        assert_eq!(r.log, vec!["x \"y\"".to_string()]);
        assert_eq!(r.instance_id, "i-1");
    }

    #[test]
    fn an_unreadable_report_is_unknown_not_lost() {
        let r = BootReport::parse("i-2", "not json");
        assert_eq!(r.state, BootState::Unknown);
        assert!(r.log[0].starts_with("unreadable boot report"));
        let r = BootReport::parse("i-3", r#"{"state":"rebooting"}"#);
        assert_eq!(r.state, BootState::Unknown);
    }
}
