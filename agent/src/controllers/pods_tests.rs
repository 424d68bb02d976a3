//! Unit tests of the shared pod helpers.

use super::*;
use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

fn pod(name: &str, node: bool, phase: &str, ready: Option<i64>, created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.then(|| "n1".to_string()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    }
}

#[test]
fn deletion_prefers_unscheduled_pending_unready_then_newest() {
    let mut pods = [
        pod("running-ready-old", true, "Running", Some(100), 10),
        pod("running-ready-new", true, "Running", Some(100), 20),
        pod("running-notready", true, "Running", None, 5),
        pod("pending", true, "Pending", None, 1),
        pod("unscheduled", false, "Pending", None, 0),
        pod("ready-recently", true, "Running", Some(500), 1),
    ];
    pods.sort_by(deletion_order);
    let names: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "unscheduled",
            "pending",
            "running-notready",
            "ready-recently",
            "running-ready-new",
            "running-ready-old"
        ]
    );
}

#[test]
fn selectors_follow_label_selector_semantics() {
    let labels: BTreeMap<String, String> = [
        ("app".to_string(), "web".to_string()),
        ("tier".into(), "fe".into()),
    ]
    .into();
    let sel = |ml: &[(&str, &str)], ex: Vec<(&str, &str, Vec<&str>)>| LabelSelector {
        match_labels: Some(
            ml.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: Some(
            ex.into_iter()
                .map(|(k, op, vs)| LabelSelectorRequirement {
                    key: k.into(),
                    operator: op.into(),
                    values: Some(vs.into_iter().map(String::from).collect()),
                })
                .collect(),
        ),
    };
    assert!(selector_matches(
        &sel(&[("app", "web")], vec![]),
        Some(&labels)
    ));
    assert!(!selector_matches(
        &sel(&[("app", "db")], vec![]),
        Some(&labels)
    ));
    assert!(selector_matches(
        &sel(&[], vec![("tier", "In", vec!["fe", "be"])]),
        Some(&labels)
    ));
    assert!(!selector_matches(
        &sel(&[], vec![("tier", "NotIn", vec!["fe"])]),
        Some(&labels)
    ));
    assert!(selector_matches(
        &sel(&[], vec![("x", "DoesNotExist", vec![])]),
        Some(&labels)
    ));
    assert!(!selector_matches(
        &sel(&[], vec![("x", "Exists", vec![])]),
        Some(&labels)
    ));
    assert!(!selector_matches(
        &sel(&[], vec![("app", "Bogus", vec![])]),
        Some(&labels)
    ));
    assert!(selector_is_empty(&LabelSelector::default()));
}

#[test]
fn template_hash_is_stable_safe_and_changes_with_the_template() {
    let t = PodTemplateSpec::default();
    let h = template_hash(&t, None);
    assert_eq!(h, template_hash(&t, None));
    assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
    assert_ne!(h, template_hash(&t, Some(1)));
    let mut t2 = t.clone();
    t2.spec = Some(PodSpec::default());
    assert_ne!(h, template_hash(&t2, None));
}

#[test]
fn availability_waits_for_min_ready_seconds() {
    let p = pod("p", true, "Running", Some(100), 0);
    let at = |s| Timestamp::from_second(s).unwrap();
    assert!(is_available(&p, 0, at(100)));
    assert!(!is_available(&p, 10, at(105)));
    assert!(is_available(&p, 10, at(110)));
    assert_eq!(available_at(&p, 10, at(105)), Some(at(110)));
    assert!(!is_available(&pod("q", true, "Running", None, 0), 0, at(0)));
}
