//! Defaults of the workload kinds (k8s `pkg/apis/apps/v1/defaults.go`,
//! `pkg/apis/batch/v1/defaults.go`, the Job registry's create hook). Pod
//! templates get a Pod's own defaults.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::default_pod_spec;

/// Label the Job registry puts on a Job's selector and pods.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label naming a Job's pods after it.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

fn template(t: &mut PodTemplateSpec) {
    if let Some(spec) = t.spec.as_mut() {
        default_pod_spec(spec);
    }
}

fn percent(p: &str) -> IntOrString {
    IntOrString::String(p.to_string())
}

pub(super) fn deployment(d: &mut Deployment) {
    let Some(spec) = d.spec.as_mut() else {
        return;
    };
    // A pointer in Go: an explicit 0 stays.
    spec.replicas.get_or_insert(1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    if strategy.type_.as_deref().is_none_or(str::is_empty) {
        strategy.type_ = Some("RollingUpdate".to_string());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_unavailable.get_or_insert_with(|| percent("25%"));
        ru.max_surge.get_or_insert_with(|| percent("25%"));
    }
    // A pointer in Go: an explicit 0 stays.
    spec.revision_history_limit.get_or_insert(10);
    // A pointer in Go: an explicit 0 stays.
    spec.progress_deadline_seconds.get_or_insert(600);
    template(&mut spec.template);
}

pub(super) fn replica_set(r: &mut ReplicaSet) {
    let Some(spec) = r.spec.as_mut() else {
        return;
    };
    // A pointer in Go: an explicit 0 stays.
    spec.replicas.get_or_insert(1);
    if let Some(t) = spec.template.as_mut() {
        template(t);
    }
}

pub(super) fn daemon_set(d: &mut DaemonSet) {
    let Some(spec) = d.spec.as_mut() else {
        return;
    };
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    if strategy.type_.as_deref().is_none_or(str::is_empty) {
        strategy.type_ = Some("RollingUpdate".to_string());
    }
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        ru.max_unavailable.get_or_insert(IntOrString::Int(1));
        ru.max_surge.get_or_insert(IntOrString::Int(0));
    }
    // A pointer in Go: an explicit 0 stays.
    spec.revision_history_limit.get_or_insert(10);
    template(&mut spec.template);
}

pub(super) fn job(j: &mut Job) {
    let Some(spec) = j.spec.as_mut() else {
        return;
    };
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        });
    }
    if spec.completion_mode.as_deref().is_none_or(str::is_empty) {
        spec.completion_mode = Some("NonIndexed".to_string());
    }
    spec.suspend.get_or_insert(false);
    if spec
        .pod_replacement_policy
        .as_deref()
        .is_none_or(str::is_empty)
    {
        let p = if spec.pod_failure_policy.is_some() {
            "Failed"
        } else {
            "TerminatingOrFailed"
        };
        spec.pod_replacement_policy = Some(p.to_string());
    }
    spec.manual_selector.get_or_insert(false);
    template(&mut spec.template);
}

/// The Job registry's create hook: unless `manualSelector`, the selector
/// is the Job's uid and the template carries the matching labels.
pub(super) fn job_selector(j: &mut Job) {
    let uid = j.metadata.uid.clone().unwrap_or_default();
    let name = j.metadata.name.clone().unwrap_or_default();
    let Some(spec) = j.spec.as_mut() else {
        return;
    };
    if spec.manual_selector == Some(true) {
        return;
    }
    spec.selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([(
            JOB_CONTROLLER_UID.to_string(),
            uid.clone(),
        )])),
        match_expressions: None,
    });
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    for (k, v) in [
        (JOB_CONTROLLER_UID, &uid),
        ("controller-uid", &uid),
        (JOB_NAME, &name),
        ("job-name", &name),
    ] {
        labels.insert(k.to_string(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use crate::api::defaults::{apply_defaults, on_create};
    use crate::api::manifest::decode;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    #[test]
    fn workload_defaults_are_idempotent_and_fill_templates() {
        let mut d = decode(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 3, "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
        .unwrap();
        apply_defaults(&mut d);
        let once = d.clone();
        apply_defaults(&mut d);
        assert_eq!(d, once);
        let v = d.to_value();
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );

        let mut j = decode(json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"parallelism": 4, "manualSelector": true,
                "selector": {"matchLabels": {"x": "y"}},
                "template": {"metadata": {"labels": {"x": "y"}},
                    "spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "i"}]}}}}))
        .unwrap();
        on_create(&mut j, Some("default"), Timestamp::UNIX_EPOCH);
        let v = j.to_value();
        // completions stays unset when parallelism was given.
        assert_eq!(v["spec"]["completions"], serde_json::Value::Null);
        assert_eq!(v["spec"]["selector"], json!({"matchLabels": {"x": "y"}}));
        assert_eq!(v["metadata"]["generation"], 1);
    }
}
