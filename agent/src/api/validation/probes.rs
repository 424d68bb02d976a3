//! Probes and lifecycle hooks (k8s `validateProbe`, `validateHandler`,
//! `validateLifecycle`): exactly one handler, sane thresholds.

use k8s_openapi::api::core::v1::{LifecycleHandler, Probe};

use crate::api::FieldError;

const NONNEG: &str = "must be greater than or equal to 0";

/// Exactly one of `handlers` is set.
pub fn handler(f: &str, handlers: &[(&str, bool)], errs: &mut Vec<FieldError>) {
    let set: Vec<&str> = handlers
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    match set.as_slice() {
        [] => errs.push(FieldError::required(f, "must specify a handler type")),
        [_] => {}
        [_, rest @ ..] => {
            for n in rest {
                errs.push(FieldError::forbidden(
                    format!("{f}.{n}"),
                    "may not specify more than 1 handler type",
                ));
            }
        }
    }
}

fn http_scheme(scheme: Option<&str>, f: &str, errs: &mut Vec<FieldError>) {
    if let Some(s) = scheme
        && s != "HTTP"
        && s != "HTTPS"
    {
        errs.push(FieldError::not_supported(
            format!("{f}.scheme"),
            s,
            &["HTTP", "HTTPS"],
        ));
    }
}

pub fn lifecycle_handler(h: &LifecycleHandler, f: &str, errs: &mut Vec<FieldError>) {
    if let Some(g) = h.http_get.as_ref() {
        http_scheme(g.scheme.as_deref(), &format!("{f}.httpGet"), errs);
    }
    if let Some(e) = h.exec.as_ref()
        && e.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(format!("{f}.exec.command"), ""));
    }
    if let Some(s) = h.sleep.as_ref()
        && s.seconds < 0
    {
        errs.push(FieldError::invalid(
            format!("{f}.sleep.seconds"),
            s.seconds,
            NONNEG,
        ));
    }
}

pub fn probe(p: &Probe, f: &str, success_must_be_one: bool, errs: &mut Vec<FieldError>) {
    handler(
        f,
        &[
            ("exec", p.exec.is_some()),
            ("httpGet", p.http_get.is_some()),
            ("tcpSocket", p.tcp_socket.is_some()),
            ("grpc", p.grpc.is_some()),
        ],
        errs,
    );
    if let Some(g) = p.http_get.as_ref() {
        http_scheme(g.scheme.as_deref(), &format!("{f}.httpGet"), errs);
    }
    if let Some(e) = p.exec.as_ref()
        && e.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(format!("{f}.exec.command"), ""));
    }
    for (v, name) in [
        (p.initial_delay_seconds, "initialDelaySeconds"),
        (p.timeout_seconds, "timeoutSeconds"),
        (p.period_seconds, "periodSeconds"),
        (p.success_threshold, "successThreshold"),
        (p.failure_threshold, "failureThreshold"),
    ] {
        if let Some(v) = v
            && v < 0
        {
            errs.push(FieldError::invalid(format!("{f}.{name}"), v, NONNEG));
        }
    }
    if let Some(g) = p.termination_grace_period_seconds
        && g <= 0
    {
        errs.push(FieldError::invalid(
            format!("{f}.terminationGracePeriodSeconds"),
            g,
            "must be greater than 0",
        ));
    }
    if success_must_be_one
        && let Some(s) = p.success_threshold
        && s != 1
        && s >= 0
    {
        errs.push(FieldError::invalid(
            format!("{f}.successThreshold"),
            s,
            "must be 1",
        ));
    }
}
