//! Deployments, ReplicaSets, DaemonSets and Jobs (k8s
//! `pkg/apis/apps/validation`, `pkg/apis/batch/validation`): selectors
//! that are non-empty and match the template's labels, pod templates
//! validated as Pods (paths under `spec.template.spec`), counts and
//! rollout parameters in range.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{invalid_each, names, objects, pod};
use crate::api::FieldError;
use crate::api::label_selector;

const NONNEG: &str = "must be greater than or equal to 0";

fn nonneg(field: &str, v: Option<i64>, errs: &mut Vec<FieldError>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(FieldError::invalid(field, v, NONNEG));
    }
}

/// `ValidateLabelSelector`: keys and values, known operators, values only
/// where the operator takes them.
pub fn label_selector(sel: &LabelSelector, field: &str, errs: &mut Vec<FieldError>) {
    objects::labels(
        sel.match_labels.as_ref(),
        &format!("{field}.matchLabels"),
        errs,
    );
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let n = e.values.as_ref().map_or(0, Vec::len);
        match e.operator.as_str() {
            "In" | "NotIn" if n == 0 => errs.push(FieldError::required(
                format!("{f}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => errs.push(FieldError::forbidden(
                format!("{f}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldError::invalid(
                format!("{f}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        invalid_each(
            errs,
            &format!("{f}.key"),
            &e.key,
            names::qualified_name(&e.key),
        );
    }
}

/// The selector of an apps/v1 object: required, non-empty, matching the
/// template's labels.
fn selector_and_template(
    sel: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    errs: &mut Vec<FieldError>,
) {
    match sel {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(s) if label_selector::is_empty(s) => errs.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        )),
        Some(s) => {
            label_selector(s, "spec.selector", errs);
            let labels = template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref());
            if !label_selector::matches(s, labels) {
                let shown = labels
                    .map(|l| {
                        l.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    shown,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
}

/// A pod template, checked as a Pod would be; `restart_policies` lists
/// what the kind allows.
fn template(t: &PodTemplateSpec, restart_policies: &[&str], errs: &mut Vec<FieldError>) {
    let labels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
    objects::labels(labels, "spec.template.metadata.labels", errs);
    let Some(spec) = t.spec.as_ref() else {
        errs.push(FieldError::required("spec.template.spec", ""));
        return;
    };
    let mut inner = Vec::new();
    pod::pod_spec(spec, &mut inner);
    for mut e in inner {
        if let Some(rest) = e.field.strip_prefix("spec") {
            e.field = format!("spec.template.spec{rest}");
        }
        errs.push(e);
    }
    let rp = spec.restart_policy.as_deref().unwrap_or("Always");
    if !restart_policies.contains(&rp) {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            restart_policies,
        ));
    }
}

/// `maxUnavailable`/`maxSurge`: a non-negative int or a percentage of at
/// most 100%.
fn int_or_percent(v: Option<&IntOrString>, field: &str, errs: &mut Vec<FieldError>) -> bool {
    match v {
        None => false,
        Some(IntOrString::Int(i)) => {
            nonneg(field, Some(i64::from(*i)), errs);
            *i == 0
        }
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
                Some(n) if (0..=100).contains(&n) => n == 0,
                Some(n) if n < 0 => {
                    errs.push(FieldError::invalid(field, s, NONNEG));
                    false
                }
                Some(_) => {
                    errs.push(FieldError::invalid(
                        field,
                        s,
                        "must not be greater than 100%",
                    ));
                    false
                }
                None => {
                    errs.push(FieldError::invalid(
                        field,
                        s,
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    ));
                    false
                }
            }
        }
    }
}

pub fn deployment(d: &Deployment, errs: &mut Vec<FieldError>) {
    let Some(spec) = d.spec.as_ref() else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    nonneg("spec.replicas", spec.replicas.map(i64::from), errs);
    nonneg(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        errs,
    );
    nonneg(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
        errs,
    );
    selector_and_template(Some(&spec.selector), Some(&spec.template), errs);
    template(&spec.template, &["Always"], errs);
    if spec
        .template
        .spec
        .as_ref()
        .is_some_and(|s| s.active_deadline_seconds.is_some())
    {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    if let Some(s) = spec.strategy.as_ref() {
        match s.type_.as_deref().unwrap_or("RollingUpdate") {
            "Recreate" if s.rolling_update.is_some() => errs.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )),
            "Recreate" => {}
            "RollingUpdate" => {
                if let Some(ru) = s.rolling_update.as_ref() {
                    let f = "spec.strategy.rollingUpdate";
                    let u0 = int_or_percent(
                        ru.max_unavailable.as_ref(),
                        &format!("{f}.maxUnavailable"),
                        errs,
                    );
                    let s0 = int_or_percent(ru.max_surge.as_ref(), &format!("{f}.maxSurge"), errs);
                    if u0 && s0 {
                        errs.push(FieldError::invalid(
                            format!("{f}.maxUnavailable"),
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            }
            t => errs.push(FieldError::not_supported(
                "spec.strategy.type",
                t,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    if let Some(p) = spec.progress_deadline_seconds {
        nonneg("spec.progressDeadlineSeconds", Some(i64::from(p)), errs);
        if p <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                p,
                "must be greater than minReadySeconds",
            ));
        }
    }
}

pub fn replica_set(r: &ReplicaSet, errs: &mut Vec<FieldError>) {
    let Some(spec) = r.spec.as_ref() else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    nonneg("spec.replicas", spec.replicas.map(i64::from), errs);
    nonneg(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        errs,
    );
    selector_and_template(Some(&spec.selector), spec.template.as_ref(), errs);
    match spec.template.as_ref() {
        Some(t) => template(t, &["Always"], errs),
        None if spec.replicas.unwrap_or(1) > 0 => {
            errs.push(FieldError::required("spec.template", ""))
        }
        None => {}
    }
}

pub fn daemon_set(d: &DaemonSet, errs: &mut Vec<FieldError>) {
    let Some(spec) = d.spec.as_ref() else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    nonneg(
        "spec.minReadySeconds",
        spec.min_ready_seconds.map(i64::from),
        errs,
    );
    nonneg(
        "spec.revisionHistoryLimit",
        spec.revision_history_limit.map(i64::from),
        errs,
    );
    selector_and_template(Some(&spec.selector), Some(&spec.template), errs);
    template(&spec.template, &["Always"], errs);
    if let Some(s) = spec.update_strategy.as_ref() {
        match s.type_.as_deref().unwrap_or("RollingUpdate") {
            "OnDelete" | "RollingUpdate" => {}
            t => errs.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                t,
                &["OnDelete", "RollingUpdate"],
            )),
        }
        if let Some(ru) = s.rolling_update.as_ref() {
            let f = "spec.updateStrategy.rollingUpdate";
            let u0 = int_or_percent(
                ru.max_unavailable.as_ref(),
                &format!("{f}.maxUnavailable"),
                errs,
            );
            let s0 = int_or_percent(ru.max_surge.as_ref(), &format!("{f}.maxSurge"), errs);
            if u0 && s0 {
                errs.push(FieldError::invalid(
                    format!("{f}.maxUnavailable"),
                    0,
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
    }
}

pub fn job(j: &Job, errs: &mut Vec<FieldError>) {
    let Some(spec) = j.spec.as_ref() else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    nonneg("spec.parallelism", spec.parallelism.map(i64::from), errs);
    nonneg("spec.completions", spec.completions.map(i64::from), errs);
    nonneg("spec.backoffLimit", spec.backoff_limit.map(i64::from), errs);
    nonneg(
        "spec.ttlSecondsAfterFinished",
        spec.ttl_seconds_after_finished.map(i64::from),
        errs,
    );
    if let Some(a) = spec.active_deadline_seconds
        && a <= 0
    {
        errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            a,
            "must be greater than 0",
        ));
    }
    if let Some(m) = spec.completion_mode.as_deref() {
        const M: [&str; 2] = ["NonIndexed", "Indexed"];
        if !M.contains(&m) {
            errs.push(FieldError::not_supported("spec.completionMode", m, &M));
        } else if m == "Indexed" && spec.completions.is_none() {
            errs.push(FieldError::required(
                "spec.completions",
                "when completion mode is Indexed",
            ));
        }
    }
    match spec.selector.as_ref() {
        Some(sel) => selector_and_template(Some(sel), Some(&spec.template), errs),
        None if spec.manual_selector == Some(true) => {
            errs.push(FieldError::required("spec.selector", ""))
        }
        None => {}
    }
    template(&spec.template, &["OnFailure", "Never"], errs);
}

#[cfg(test)]
mod tests {
    use crate::api::manifest::decode;
    use crate::api::validation::collect;
    use serde_json::{Value, json};

    fn fields(v: Value) -> Vec<String> {
        let mut o = decode(v).unwrap();
        crate::api::defaults::on_create(
            &mut o,
            Some("default"),
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        collect(&o).into_iter().map(|e| e.field).collect()
    }

    fn deploy(spec: Value) -> Value {
        let mut s = json!({"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": s})
    }

    #[test]
    fn deployment_rules() {
        assert!(fields(deploy(json!({}))).is_empty());
        assert_eq!(fields(deploy(json!({"selector": {}}))), ["spec.selector"]);
        assert_eq!(
            fields(deploy(
                json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}})
            )),
            ["spec.strategy.rollingUpdate.maxUnavailable"]
        );
        assert_eq!(
            fields(deploy(
                json!({"strategy": {"type": "Recreate", "rollingUpdate": {}}})
            )),
            ["spec.strategy.rollingUpdate"]
        );
        assert_eq!(
            fields(deploy(
                json!({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})
            )),
            [
                "spec.selector.matchExpressions[0].values",
                "spec.template.metadata.labels"
            ]
        );
        let mut d = deploy(json!({}));
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let f = fields(d);
        assert!(
            f.contains(&"spec.template.spec.containers[0].image".to_string()),
            "{f:?}"
        );
        assert!(
            f.contains(&"spec.template.spec.restartPolicy".to_string()),
            "{f:?}"
        );
    }

    #[test]
    fn job_rules() {
        let job = |rp: Option<&str>| {
            let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
            if let Some(rp) = rp {
                spec["restartPolicy"] = json!(rp);
            }
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                "spec": {"template": {"spec": spec}}})
        };
        assert!(fields(job(Some("OnFailure"))).is_empty());
        // Unset defaults to Always, which a Job refuses.
        assert_eq!(fields(job(None)), ["spec.template.spec.restartPolicy"]);
        let mut j = job(Some("Never"));
        j["spec"]["completionMode"] = json!("Sometimes");
        j["spec"]["backoffLimit"] = json!(-1);
        assert_eq!(fields(j), ["spec.backoffLimit", "spec.completionMode"]);
    }
}
