//! Static pods from manifest files in temp dirs: add, change, invalid
//! files, removal, the background scanner's latency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use herd_agent::kubelet::static_pods::{
    CONFIG_HASH, CONFIG_SEEN, CONFIG_SOURCE, StaticPodChange, StaticPodSource,
};
use tokio::sync::mpsc;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: IMAGE\n";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn upserts(changes: &[StaticPodChange]) -> Vec<&k8s_openapi::api::core::v1::Pod> {
    changes
        .iter()
        .filter_map(|c| match c {
            StaticPodChange::Upsert(p) => Some(p.as_ref()),
            StaticPodChange::Remove { .. } => None,
        })
        .collect()
}

#[test]
fn static_pods_add_change_invalid_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "web.yaml", &POD.replace("IMAGE", "busybox:1"));
    write(
        d,
        ".hidden.yaml",
        &POD.replace("web", "hidden").replace("IMAGE", "x"),
    );
    write(d, "notes.txt", "not a manifest");
    std::fs::create_dir(d.join("sub")).unwrap();
    write(
        &d.join("sub"),
        "nested.yaml",
        &POD.replace("web", "nested").replace("IMAGE", "x"),
    );
    write(
        d,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n",
    );

    let mut src = StaticPodSource::new(d.to_path_buf(), "node1".into());
    let changes = src.scan();
    let pods = upserts(&changes);
    let errors: Vec<String> = src.errors().map(|(_, e)| e.to_string()).collect();
    assert_eq!(pods.len(), 1, "{changes:?} {errors:?}");
    let pod = pods[0];
    assert_eq!(pod.metadata.name.as_deref(), Some("web-node1"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    let uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 32);
    assert!(uid.chars().all(|c| c.is_ascii_hexdigit()));
    let ann = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann.get(CONFIG_SOURCE).map(String::as_str), Some("file"));
    assert_eq!(ann.get(CONFIG_HASH), Some(&uid));
    assert!(ann.contains_key(CONFIG_SEEN));
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node1")
    );

    assert_eq!(src.scan(), Vec::new(), "nothing changed");
    // Touching without a content change keeps the uid: no upsert.
    write(d, "web.yaml", &POD.replace("IMAGE", "busybox:1"));
    assert_eq!(src.scan(), Vec::new());

    // A restart (new source) derives the same uid.
    let mut again = StaticPodSource::new(d.to_path_buf(), "node1".into());
    assert_eq!(upserts(&again.scan())[0].metadata.uid.as_ref(), Some(&uid));

    // Changed content: a new uid.
    write(d, "web.yaml", &POD.replace("IMAGE", "busybox:2"));
    let changes = src.scan();
    let pods = upserts(&changes);
    assert_eq!(pods.len(), 1);
    assert_ne!(pods[0].metadata.uid.as_ref(), Some(&uid));
    let image = pods[0].spec.as_ref().unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("busybox:2"));

    // A malformed file changes nothing, and says why.
    write(
        d,
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n",
    );
    assert_eq!(src.scan(), Vec::new());
    let errors: Vec<String> = src.errors().map(|(_, e)| e.to_string()).collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("web.yaml"), "{errors:?}");
    assert_eq!(src.pods().count(), 1, "the previous pod stays");
    // So does a file that parses but does not validate: the field is named.
    write(
        d,
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n",
    );
    assert_eq!(src.scan(), Vec::new());
    let errors: Vec<String> = src.errors().map(|(_, e)| e.to_string()).collect();
    assert!(errors[0].contains("spec.containers[0].image"), "{errors:?}");
    assert_eq!(src.pods().count(), 1, "the previous pod stays");

    // A second file with another pod, then the first file removed.
    write(
        d,
        "db.json",
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db","namespace":"data"},"spec":{"containers":[{"name":"db","image":"pg"}]}}"#,
    );
    let changes = src.scan();
    assert_eq!(
        upserts(&changes)[0].metadata.name.as_deref(),
        Some("db-node1")
    );
    std::fs::remove_file(d.join("web.yaml")).unwrap();
    assert_eq!(
        src.scan(),
        vec![StaticPodChange::Remove {
            namespace: "default".into(),
            name: "web-node1".into()
        }]
    );
    assert_eq!(src.errors().count(), 0);
    std::fs::remove_file(d.join("db.json")).unwrap();
    assert_eq!(
        src.scan(),
        vec![StaticPodChange::Remove {
            namespace: "data".into(),
            name: "db-node1".into()
        }]
    );
}

#[test]
fn static_pod_document_removed_from_multi_document_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = format!(
        "{}---\n{}",
        POD.replace("IMAGE", "a"),
        POD.replace("web", "api").replace("IMAGE", "b")
    );
    write(d, "pods.yml", &two);
    let mut src = StaticPodSource::new(d.to_path_buf(), "n".into());
    assert_eq!(upserts(&src.scan()).len(), 2);
    write(d, "pods.yml", &POD.replace("IMAGE", "a"));
    assert_eq!(
        src.scan(),
        vec![StaticPodChange::Remove {
            namespace: "default".into(),
            name: "api-n".into()
        }]
    );
    // The same pod name in a second file is skipped.
    write(d, "dup.yaml", &POD.replace("IMAGE", "c"));
    assert_eq!(src.scan(), Vec::new());
    assert_eq!(src.pods().count(), 1);
}

#[tokio::test]
async fn static_pods_spawn_applies_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let src = StaticPodSource::new(d.clone(), "n".into());
    let task = herd_agent::kubelet::static_pods::spawn(src, Duration::from_millis(250), tx);
    write(&d, "web.yaml", &POD.replace("IMAGE", "a"));
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("applied within a second");
    assert!(matches!(got, Some(StaticPodChange::Upsert(_))), "{got:?}");
    std::fs::remove_file(d.join("web.yaml")).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("removed within a second");
    assert!(
        matches!(got, Some(StaticPodChange::Remove { .. })),
        "{got:?}"
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("ends when the channel closes")
        .unwrap();
}
