//! The container's process: arguments (Kubernetes' command/args rules over
//! the image's Entrypoint/Cmd), environment, working directory, user,
//! capabilities and `noNewPrivileges`.
//!
//! No rlimits are set: like containerd's CRI plugin (which drops the
//! default `RLIMIT_NOFILE` 1024), containers inherit the runtime's limits.

use std::path::PathBuf;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Process, UserBuilder};

use super::{SpecError, SpecInputs};
use crate::spec::{mounts, user};

/// `PATH` given to containers whose image sets none (containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves the process arguments as Kubernetes does:
///
/// | command | args | result |
/// |---|---|---|
/// | – | – | Entrypoint + Cmd |
/// | set | – | command (Entrypoint and Cmd ignored) |
/// | – | set | Entrypoint + args |
/// | set | set | command + args |
///
/// The empty result is an error; the caller maps it to the container name.
pub fn resolve_args(
    entrypoint: &[String],
    cmd: &[String],
    command: &[String],
    args: &[String],
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = if command.is_empty() {
        entrypoint.to_vec()
    } else {
        command.to_vec()
    };
    if !args.is_empty() {
        out.extend_from_slice(args);
    } else if command.is_empty() {
        out.extend_from_slice(cmd);
    }
    if out.is_empty() {
        return Err(SpecError::NoCommand {
            container: String::new(),
        });
    }
    Ok(out)
}

/// Merges the environment: `PATH` default first, then the image's
/// variables, then the container's; a later variable with the same key
/// replaces the earlier one in place (containerd's `WithEnv`).
pub fn merge_env(image_env: &[String], env: &[(String, String)]) -> Vec<String> {
    merge_env_with(&[format!("PATH={DEFAULT_PATH}")], image_env, env)
}

fn merge_env_with(base: &[String], image_env: &[String], env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(base.len() + image_env.len() + env.len());
    for kv in base.iter().chain(image_env.iter()).cloned() {
        replace_or_append(&mut out, kv);
    }
    for (k, v) in env {
        replace_or_append(&mut out, format!("{k}={v}"));
    }
    out
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

fn replace_or_append(list: &mut Vec<String>, kv: String) {
    let key = env_key(&kv).to_string();
    match list.iter_mut().find(|e| env_key(e) == key) {
        Some(slot) => *slot = kv,
        None => list.push(kv),
    }
}

/// A process for `runc exec --process`: the container's defaults (user,
/// env, cwd, capabilities, noNewPrivileges, rlimits, oom_score_adj) with
/// the arguments and terminal replaced and `extra_env` merged over the env
/// (plus `TERM=xterm` with a tty when the env has no `TERM`).
pub fn exec_process(
    base: &Process,
    args: Vec<String>,
    tty: bool,
    extra_env: &[(String, String)],
) -> Process {
    let mut p = base.clone();
    p.set_args(Some(args));
    p.set_terminal(Some(tty));
    p.set_console_size(None);
    let mut env = base.env().clone().unwrap_or_default();
    if tty && !env.iter().any(|e| env_key(e) == "TERM") {
        env.push("TERM=xterm".to_string());
    }
    for (k, v) in extra_env {
        replace_or_append(&mut env, format!("{k}={v}"));
    }
    p.set_env(Some(env));
    p
}

/// Builds the container's process section. `caps` is the effective set
/// (already resolved from defaults, add/drop and privileged).
pub(super) fn build_process(
    inputs: &SpecInputs<'_>,
    caps: &Capabilities,
) -> Result<Process, SpecError> {
    let c = inputs.container;
    let sec = &c.security;
    let img = inputs.image_config.config().as_ref();
    let none: Vec<String> = Vec::new();
    let entrypoint = img.and_then(|i| i.entrypoint().as_ref()).unwrap_or(&none);
    let cmd = img.and_then(|i| i.cmd().as_ref()).unwrap_or(&none);
    let args =
        resolve_args(entrypoint, cmd, &c.command, &c.args).map_err(|_| SpecError::NoCommand {
            container: c.name.clone(),
        })?;

    let image_env = img.and_then(|i| i.env().as_ref()).unwrap_or(&none);
    // containerd: PATH default, HOSTNAME, TERM with a tty, then the
    // image's and the container's variables over them.
    let mut base = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", inputs.sandbox.hostname),
    ];
    if c.tty {
        base.push("TERM=xterm".to_string());
    }
    let env = merge_env_with(&base, image_env, &c.env);

    let cwd = match c.working_dir.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => d.to_string(),
        None => img
            .and_then(|i| i.working_dir().clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".to_string()),
    };
    if mounts::clean_absolute(&cwd).is_none() {
        return Err(SpecError::BadWorkingDir {
            container: c.name.clone(),
            dir: cwd,
        });
    }

    let image_user = img.and_then(|i| i.user().clone()).unwrap_or_default();
    let resolved = user::resolve_user(
        inputs.rootfs,
        &c.name,
        &image_user,
        sec.run_as_user,
        sec.run_as_group,
        &sec.supplemental_groups,
    )?;
    if sec.run_as_non_root && resolved.uid == 0 {
        return Err(SpecError::RunsAsRoot {
            container: c.name.clone(),
        });
    }
    let user = UserBuilder::default()
        .uid(resolved.uid)
        .gid(resolved.gid)
        .additional_gids(resolved.additional_gids.clone())
        .build()
        .map_err(|source| SpecError::Build {
            what: "process.user",
            source,
        })?;

    let mut linux_caps = LinuxCapabilities::default();
    linux_caps.set_bounding(Some(caps.clone()));
    linux_caps.set_effective(Some(caps.clone()));
    linux_caps.set_permitted(Some(caps.clone()));
    linux_caps.set_inheritable(Some(Capabilities::new()));
    linux_caps.set_ambient(Some(Capabilities::new()));

    let mut p = Process::default();
    p.set_terminal(Some(c.tty));
    p.set_user(user);
    p.set_args(Some(args));
    p.set_env(Some(env));
    p.set_cwd(PathBuf::from(cwd));
    p.set_capabilities(Some(linux_caps));
    p.set_rlimits(None);
    p.set_no_new_privileges(Some(no_new_privileges(inputs, caps)));
    p.set_oom_score_adj(Some(inputs.oom_score_adj));
    Ok(p)
}

/// Kubernetes' `allowPrivilegeEscalation` default: true (so no
/// `noNewPrivileges`) when privileged or CAP_SYS_ADMIN is granted.
fn no_new_privileges(inputs: &SpecInputs<'_>, caps: &Capabilities) -> bool {
    let sec = &inputs.container.security;
    if sec.privileged {
        return false;
    }
    match sec.allow_privilege_escalation {
        Some(allow) => !allow,
        None => !caps.contains(&Capability::SysAdmin),
    }
}
