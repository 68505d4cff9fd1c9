//! The head every multi-VM boot script starts with (`templates/script-head.sh.j2`: logging,
//! retries, packages, IMDSv2, SSM reads and the embedded files): its context, shared by the
//! lb-vms, swarm, alb-asg and custom-scaler tiers.

use serde::Serialize;

use super::{
    check_tier, require_word, script_files, RenderError, RenderedFile, ScriptFile, EOF_MARK,
    ETC_DIR, LOG_FILE, PROJECT_ROOT,
};
use crate::stack::{Stack, Tier};

/// Context of `templates/script-head.sh.j2`; a script's own context flattens it in.
#[derive(Serialize)]
pub(crate) struct ScriptHead<'a> {
    stack: &'a str,
    /// Named in the script's first comment line.
    tier: &'static str,
    role: &'static str,
    region: Option<&'a str>,
    /// Where the instance publishes its boot report (`templates/boot-report.sh.j2`).
    boot_reports: String,
    log_file: &'static str,
    project_dir: String,
    etc_dir: &'static str,
    /// Written by the head as heredocs before the script's own steps.
    pub files: Vec<ScriptFile>,
    eof: &'static str,
}

impl<'a> ScriptHead<'a> {
    /// What the head places unquoted: the stack is of `tier` (`what` names the script asked
    /// for), its name and region are plain words.
    pub fn check(stack: &Stack, tier: Tier, what: &str) -> Result<(), RenderError> {
        check_tier(stack, tier, what)?;
        if let Some(region) = &stack.spec.region {
            require_word("region", region, "-")?;
        }
        Ok(())
    }

    /// The head of `role`'s script, embedding `files` as `(path, mode, content)`.
    pub fn new(
        stack: &'a Stack,
        role: &'static str,
        files: Vec<(String, &'static str, String)>,
    ) -> Result<Self, RenderError> {
        let s = &stack.spec;
        Ok(ScriptHead {
            stack: &s.name,
            tier: s.tier.as_str(),
            role,
            region: s.region.as_deref(),
            boot_reports: super::boot_reports_path(&s.name),
            log_file: LOG_FILE,
            project_dir: format!("{PROJECT_ROOT}/{}", s.name),
            etc_dir: ETC_DIR,
            files: script_files(files)?,
            eof: EOF_MARK,
        })
    }

    /// The embedded files, as `iac render --files` shows them.
    pub fn into_files(self) -> Vec<RenderedFile> {
        self.files.into_iter().map(RenderedFile::from).collect()
    }
}
