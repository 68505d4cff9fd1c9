//! `iac render`: exactly the user-data an instance receives. No AWS call.

use std::io::Write;

use super::output::Printer;
use super::stack_args::StackArgs;
use super::{Exit, UsageError};
use crate::render::{self, UserData};
use crate::stack::{Stack, Tier};

/// The user-data of every role of the stack's tier, by role name.
pub fn user_data(stack: &Stack) -> Result<Vec<(&'static str, UserData)>, render::RenderError> {
    Ok(match stack.spec.tier {
        Tier::LbVms => vec![
            ("balancer", render::lb_vms::balancer(stack)?),
            ("web", render::lb_vms::web(stack)?),
            ("database", render::lb_vms::database(stack)?),
        ],
        Tier::Swarm => {
            let mut roles = vec![("manager-1", render::swarm::manager(stack, 1)?)];
            if stack.spec.swarm.as_ref().is_some_and(|s| s.managers > 1) {
                roles.push(("manager", render::swarm::manager(stack, 2)?));
            }
            roles.push(("worker", render::swarm::worker(stack)?));
            roles
        }
        Tier::AlbAsg => vec![("web", render::alb_asg::web(stack)?)],
        Tier::SingleVm => vec![("vm", render::single_vm(stack)?)],
        Tier::CustomScaler => {
            // The monitor VM exists only when the stack does not name a monitor of its own.
            let mut roles = vec![("agent", render::custom_scaler::agent(stack)?)];
            if stack
                .spec
                .scaler
                .as_ref()
                .is_some_and(|s| s.monitor.address.is_none())
            {
                roles.push(("monitor", render::custom_scaler::monitor(stack)?));
            }
            roles
        }
    })
}

/// Whether everything `iac` renders from a valid stack can be rendered: every role's user-data
/// and the app or service spec it publishes. Run by the stack loader (see [`StackArgs::load`])
/// so that such a stack is refused as invalid input, at the position of the value at fault,
/// before any AWS call.
pub fn findings(stack: &Stack) -> Vec<crate::stack::Finding> {
    // A local fleet launches nothing: there is no user-data to render.
    let local = stack
        .spec
        .scaler
        .as_ref()
        .is_some_and(|s| s.fleet == crate::stack::FleetKind::Local);
    if stack.spec.tier == Tier::CustomScaler && local {
        return Vec::new();
    }
    let specs = || -> Result<(), render::RenderError> {
        match stack.spec.tier {
            Tier::SingleVm | Tier::LbVms => render::app_spec::app_spec(stack).map(drop),
            Tier::Swarm => render::swarm::service_spec(stack).map(drop),
            Tier::AlbAsg | Tier::CustomScaler => Ok(()),
        }
    };
    match user_data(stack).map(drop).and_then(|()| specs()) {
        Ok(()) => Vec::new(),
        Err(e) => vec![finding(e)],
    }
}

fn finding(e: render::RenderError) -> crate::stack::Finding {
    use render::RenderError as E;
    let (path, expected) = match &e {
        E::Invalid { field, .. } => (
            field.clone(),
            "a value iac can write into the instance's files and parameters",
        ),
        E::TooLarge { .. } => (
            "app.environment".to_string(),
            "fewer or shorter environment values",
        ),
        E::Template { .. } | E::Compress(_) => (String::new(), ""),
    };
    let message = match e {
        E::Invalid { message, .. } => message,
        other => other.to_string(),
    };
    crate::stack::Finding {
        path,
        message,
        expected: expected.to_string(),
    }
}

pub fn run(
    printer: &Printer,
    src: &StackArgs,
    files: bool,
    role: Option<&str>,
) -> anyhow::Result<Exit> {
    let stack = src.load()?.stack;
    let mut all = user_data(&stack)?;
    if let Some(r) = role {
        let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
        all.retain(|(n, _)| *n == r);
        if all.is_empty() {
            return Err(UsageError(format!(
                "no role `{r}` in a {} stack; roles: {}",
                stack.spec.tier.as_str(),
                names.join(", ")
            ))
            .into());
        }
    }
    let several = all.len() > 1;
    // Written with `?`: a closed pipe (`iac render ... | head`) ends the command, as success.
    let mut out = std::io::stdout().lock();
    for (name, ud) in &all {
        if printer.json() {
            printer.record(&serde_json::json!({
                "event": "rendered",
                "role": name,
                "bytes": ud.script.len(),
                "sha256": ud.sha256(),
                "script": ud.script,
                "files": ud.files.iter().map(|f| serde_json::json!({"path": f.path, "content": f.content})).collect::<Vec<_>>(),
            }));
        } else if files {
            for f in &ud.files {
                writeln!(out, "==> {name}: {} <==\n{}", f.path, f.content)?;
            }
        } else {
            if several {
                writeln!(
                    out,
                    "# ==== role: {name} ({} bytes; `--role {name}` prints it alone) ====",
                    ud.script.len()
                )?;
            }
            write!(out, "{}", ud.script)?;
        }
    }
    Ok(Exit::Ok)
}
