//! Security contexts (k8s `validatePodSpecSecurityContext`,
//! `ValidateSecurityContext`): ids, seccomp, capabilities, sysctls.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};

use super::invalid_each;
use super::names;
use crate::api::FieldError;

const ID_DETAIL: &str = "must be between 0 and 2147483647, inclusive";

/// Capabilities Linux knows, without the `CAP_` prefix.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn id(v: Option<i64>, f: &str, errs: &mut Vec<FieldError>) {
    if let Some(v) = v
        && !(0..=i64::from(i32::MAX)).contains(&v)
    {
        errs.push(FieldError::invalid(f, v, ID_DETAIL));
    }
}

fn seccomp(p: Option<&SeccompProfile>, f: &str, errs: &mut Vec<FieldError>) {
    let Some(p) = p else { return };
    const T: [&str; 3] = ["Localhost", "RuntimeDefault", "Unconfined"];
    if !T.contains(&p.type_.as_str()) {
        errs.push(FieldError::not_supported(
            format!("{f}.seccompProfile.type"),
            &p.type_,
            &T,
        ));
    } else if p.type_ == "Localhost" && p.localhost_profile.as_deref().is_none_or(str::is_empty) {
        errs.push(FieldError::required(
            format!("{f}.seccompProfile.localhostProfile"),
            "must be set when seccomp type is Localhost",
        ));
    }
}

pub fn pod_security_context(sc: &PodSecurityContext, errs: &mut Vec<FieldError>) {
    let f = "spec.securityContext";
    id(sc.run_as_user, &format!("{f}.runAsUser"), errs);
    id(sc.run_as_group, &format!("{f}.runAsGroup"), errs);
    id(sc.fs_group, &format!("{f}.fsGroup"), errs);
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        id(Some(*g), &format!("{f}.supplementalGroups[{i}]"), errs);
    }
    seccomp(sc.seccomp_profile.as_ref(), f, errs);
    let mut seen = BTreeSet::new();
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        let fs = format!("{f}.sysctls[{i}].name");
        if s.name.is_empty() {
            errs.push(FieldError::required(fs, ""));
            continue;
        }
        invalid_each(errs, &fs, &s.name, names::sysctl_name(&s.name));
        if !seen.insert(s.name.replace('/', ".")) {
            errs.push(FieldError::duplicate(fs, &s.name));
        }
    }
}

fn capabilities(c: &Capabilities, f: &str, errs: &mut Vec<FieldError>) {
    for (list, name) in [(c.add.as_ref(), "add"), (c.drop.as_ref(), "drop")] {
        for (i, cap) in list.into_iter().flatten().enumerate() {
            let bare = cap.to_ascii_uppercase();
            let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
            if bare != "ALL" && !CAPABILITIES.contains(&bare) {
                errs.push(FieldError::invalid(
                    format!("{f}.capabilities.{name}[{i}]"),
                    cap,
                    "unknown capability",
                ));
            }
        }
    }
}

pub fn security_context(sc: &SecurityContext, f: &str, errs: &mut Vec<FieldError>) {
    id(sc.run_as_user, &format!("{f}.runAsUser"), errs);
    id(sc.run_as_group, &format!("{f}.runAsGroup"), errs);
    seccomp(sc.seccomp_profile.as_ref(), f, errs);
    if let Some(c) = sc.capabilities.as_ref() {
        capabilities(c, f, errs);
    }
    if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
        errs.push(FieldError::invalid(
            f.to_string(),
            "",
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        ));
    }
    if let Some(pm) = sc.proc_mount.as_deref() {
        const P: [&str; 2] = ["Default", "Unmasked"];
        if !P.contains(&pm) {
            errs.push(FieldError::not_supported(format!("{f}.procMount"), pm, &P));
        }
    }
}
