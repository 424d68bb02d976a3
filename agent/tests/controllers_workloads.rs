//! ReplicaSet, Deployment, DaemonSet and Job controllers under the runner,
//! against a real `LocalStore` (redb files in a temp dir). A fake kubelet
//! (a watch on pods) plays the node: it marks new pods Running + Ready, or
//! Succeeded/Failed, depending on the pod's `sim` label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::controllers::Controller;
use herd_agent::controllers::daemonset::DaemonSetController;
use herd_agent::controllers::deployment::DeploymentController;
use herd_agent::controllers::job::JobController;
use herd_agent::controllers::replicaset::ReplicaSetController;
use herd_agent::controllers::runner::{RunnerConfig, run_with};
use herd_agent::store::local::LocalStore;
use herd_agent::store::{Datastore, EventType, Key, StoreError, update_with};
use serde_json::{Value, json};
use tokio::sync::watch;

const NS: &str = "default";

struct Cluster {
    _dir: tempfile::TempDir,
    store: Arc<LocalStore>,
    stop: watch::Sender<bool>,
    runner: Option<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    async fn start(controllers: Vec<Arc<dyn Controller>>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            LocalStore::open(&dir.path().join("store.redb"), &dir.path().join("s.redb")).unwrap(),
        );
        let (stop, rx) = watch::channel(false);
        kubelet(store.clone(), rx.clone());
        let config = RunnerConfig {
            resync: Duration::from_secs(2),
            ..RunnerConfig::default()
        };
        let dyn_store: Arc<dyn Datastore> = store.clone();
        let runner = Some(run_with(dyn_store, controllers, rx, config));
        Cluster {
            _dir: dir,
            store,
            stop,
            runner,
        }
    }

    fn create(&self, resource: Resource, name: &str, mut obj: Value) -> Key {
        let key = if resource.namespaced() {
            Key::namespaced(resource, NS, name)
        } else {
            Key::cluster(resource, name)
        };
        obj["metadata"]["name"] = json!(name);
        if resource.namespaced() {
            obj["metadata"]["namespace"] = json!(NS);
        }
        obj["metadata"]["uid"] = json!(format!("uid-{}-{name}", resource.plural()));
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
        self.store.create(&key, obj).unwrap();
        key
    }

    fn edit(&self, key: &Key, f: impl Fn(&mut Value)) {
        update_with(self.store.as_ref(), key, |mut v| {
            f(&mut v);
            let g = v["metadata"]["generation"].as_i64().unwrap_or(1);
            v["metadata"]["generation"] = json!(g + 1);
            Ok(Some(v))
        })
        .unwrap();
    }

    fn get(&self, key: &Key) -> Value {
        self.store.get(key).unwrap()
    }

    fn pods(&self) -> Vec<Value> {
        self.store.list(Resource::Pods, Some(NS)).unwrap().0
    }

    fn delete(&self, resource: Resource, name: &str) {
        let key = if resource.namespaced() {
            Key::namespaced(resource, NS, name)
        } else {
            Key::cluster(resource, name)
        };
        self.store.delete(&key, None).unwrap();
    }

    async fn stop(mut self) {
        self.stop.send(true).unwrap();
        let h = self.runner.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("runner stops promptly")
            .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `f` until it returns `Some` or 20 s pass.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn owner(p: &Value) -> String {
    p["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The fake kubelet: pods labelled `sim: succeed|fail` finish that way,
/// others become Running and Ready.
fn kubelet(store: Arc<LocalStore>, mut stop: watch::Receiver<bool>) {
    let mut w = store.watch(Resource::Pods, None, None).unwrap();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.changed() => return,
                ev = w.next() => match ev { Ok(Some(ev)) => ev, _ => return },
            };
            if ev.kind == EventType::Deleted || ev.object["status"]["phase"] != "Pending" {
                continue;
            }
            let sim = ev.object["metadata"]["labels"]["sim"]
                .as_str()
                .unwrap_or("run")
                .to_string();
            let now = jiff::Timestamp::now().to_string();
            let status = match sim.as_str() {
                "succeed" => json!({"phase": "Succeeded"}),
                "fail" => json!({"phase": "Failed"}),
                _ => json!({"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}]}),
            };
            let _ = update_with(store.as_ref(), &ev.key, |mut p| {
                if p["status"]["phase"] != "Pending" {
                    return Ok(None);
                }
                p["status"] = status.clone();
                Ok(Some(p))
            });
        }
    });
}

fn template(app: &str, image: &str, sim: &str) -> Value {
    json!({"metadata": {"labels": {"app": app, "sim": sim}},
           "spec": {"containers": [{"name": "c", "image": image}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_creates_replaces_and_scales() {
    let c = Cluster::start(vec![Arc::new(ReplicaSetController)]).await;
    let rs = c.create(
        Resource::ReplicaSets,
        "web",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": template("web", "img:1", "run")}}),
    );
    let ready = |n: usize| {
        let c = &c;
        move || {
            let pods = c.pods();
            let ok = pods.len() == n && pods.iter().all(is_ready);
            let st = &c.get(&Key::namespaced(Resource::ReplicaSets, NS, "web"))["status"];
            (ok && st["readyReplicas"] == n && st["availableReplicas"] == n && st["replicas"] == n)
                .then_some(pods)
        }
    };
    let pods = wait_for("3 ready pods", ready(3)).await;
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let suffix = name.strip_prefix("web-").unwrap();
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(
            suffix
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{name}"
        );
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (r["kind"].as_str(), r["uid"].as_str()),
            (Some("ReplicaSet"), Some("uid-replicasets-web"))
        );
        assert_eq!(
            (r["controller"].as_bool(), r["blockOwnerDeletion"].as_bool()),
            (Some(true), Some(true))
        );
    }
    assert_eq!(c.get(&rs)["status"]["observedGeneration"], 1);

    // A deleted pod is replaced.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.delete(Resource::Pods, &victim);
    let pods = wait_for("replacement", ready(3)).await;
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["name"] != victim.as_str())
    );

    // A failed pod is replaced (it stays, not counted).
    let failed = pods[1]["metadata"]["name"].as_str().unwrap().to_string();
    update_with(
        c.store.as_ref(),
        &Key::namespaced(Resource::Pods, NS, &failed),
        |mut p| {
            p["status"] = json!({"phase": "Failed"});
            Ok(Some(p))
        },
    )
    .unwrap();
    wait_for("failed pod replaced", || {
        let live: Vec<Value> = c
            .pods()
            .into_iter()
            .filter(|p| p["status"]["phase"] != "Failed")
            .collect();
        (live.len() == 3 && live.iter().all(is_ready)).then_some(())
    })
    .await;
    c.delete(Resource::Pods, &failed);

    c.edit(&rs, |v| v["spec"]["replicas"] = json!(5));
    wait_for("scale up to 5", ready(5)).await;
    c.edit(&rs, |v| v["spec"]["replicas"] = json!(2));
    wait_for("scale down to 2", ready(2)).await;
    assert_eq!(c.get(&rs)["status"]["observedGeneration"], 3);

    // An orphan matching the selector is adopted (and the surplus deleted).
    c.create(Resource::Pods, "stray", json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Pending"}}));
    wait_for("adopt and trim to 2", ready(2)).await;
    c.stop().await;
}

/// Ready pods of `app` and the min seen, checked on every store event.
fn watch_min_ready(
    store: Arc<LocalStore>,
    min: Arc<Mutex<Option<usize>>>,
    total_spec: Arc<Mutex<i64>>,
) {
    let mut pods = store.watch(Resource::Pods, None, None).unwrap();
    let mut rss = store.watch(Resource::ReplicaSets, None, None).unwrap();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = pods.next() => if !matches!(ev, Ok(Some(_))) { return },
                ev = rss.next() => if !matches!(ev, Ok(Some(_))) { return },
            }
            let ready = store
                .list(Resource::Pods, Some(NS))
                .unwrap()
                .0
                .iter()
                .filter(|p| is_ready(p))
                .count();
            let mut m = min.lock().unwrap();
            *m = Some(m.map_or(ready, |m| m.min(ready)));
            let spec: i64 = store
                .list(Resource::ReplicaSets, Some(NS))
                .unwrap()
                .0
                .iter()
                .map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0))
                .sum();
            let mut t = total_spec.lock().unwrap();
            *t = (*t).max(spec);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_within_bounds_and_rolls_back_to_the_old_replicaset() {
    let c = Cluster::start(vec![
        Arc::new(ReplicaSetController),
        Arc::new(DeploymentController),
    ])
    .await;
    let d = c.create(Resource::Deployments, "app", json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {}, "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "app"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
        "template": template("app", "img:1", "run")}}));
    let done = |image: &'static str| {
        let c = &c;
        move || {
            let pods = c.pods();
            let ok = pods.len() == 4
                && pods
                    .iter()
                    .all(|p| is_ready(p) && p["spec"]["containers"][0]["image"] == image);
            let st = &c.get(&Key::namespaced(Resource::Deployments, NS, "app"))["status"];
            let conds = st["conditions"].as_array().cloned().unwrap_or_default();
            let progressed = conds
                .iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable");
            let available = conds
                .iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True");
            (ok && st["updatedReplicas"] == 4
                && st["availableReplicas"] == 4
                && st["replicas"] == 4
                && progressed
                && available)
                .then_some(pods)
        }
    };
    let first = wait_for("first rollout", done("img:1")).await;
    let rs1 = owner(&first[0]);
    assert_eq!(
        c.get(&d)["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let rs1_obj = c.get(&Key::namespaced(Resource::ReplicaSets, NS, &rs1));
    let hash = rs1_obj["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rs1, format!("app-{hash}"));
    assert!(
        first
            .iter()
            .all(|p| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str())
    );

    // Rolling update: maxUnavailable 25% of 4 = 1, so >= 3 ready always;
    // maxSurge 1, so ReplicaSet replicas never sum above 5.
    let min = Arc::new(Mutex::new(None));
    let spec_max = Arc::new(Mutex::new(0));
    watch_min_ready(c.store.clone(), min.clone(), spec_max.clone());
    c.edit(&d, |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2")
    });
    let second = wait_for("second rollout", done("img:2")).await;
    let rs2 = owner(&second[0]);
    assert_ne!(rs1, rs2);
    let seen = min.lock().unwrap().expect("events seen");
    assert!(seen >= 3, "ready pods dropped to {seen}");
    assert!(
        *spec_max.lock().unwrap() <= 5,
        "surge exceeded: {}",
        spec_max.lock().unwrap()
    );
    assert_eq!(
        c.get(&d)["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        c.get(&Key::namespaced(Resource::ReplicaSets, NS, &rs1))["spec"]["replicas"],
        0
    );
    assert_eq!(c.get(&d)["status"]["observedGeneration"], 2);

    // Rollback (what `kubectl rollout undo` writes): the old ReplicaSet is
    // scaled up again and gets revision 3.
    c.edit(&d, |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:1")
    });
    let third = wait_for("rollback", done("img:1")).await;
    assert!(third.iter().all(|p| owner(p) == rs1));
    let rss = c.store.list(Resource::ReplicaSets, Some(NS)).unwrap().0;
    assert_eq!(rss.len(), 2, "no third ReplicaSet");
    let rs1_obj = c.get(&Key::namespaced(Resource::ReplicaSets, NS, &rs1));
    assert_eq!(
        rs1_obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        c.get(&d)["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let seen = min.lock().unwrap().expect("events seen");
    assert!(seen >= 3, "ready pods dropped to {seen} during rollback");

    // Paused: a template change rolls nothing; resuming rolls.
    c.edit(&d, |v| {
        v["spec"]["paused"] = json!(true);
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:3");
    });
    wait_for("paused condition", || {
        let st = c.get(&d)["status"].clone();
        st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["reason"] == "DeploymentPaused")
            .then_some(())
    })
    .await;
    assert_eq!(
        c.store
            .list(Resource::ReplicaSets, Some(NS))
            .unwrap()
            .0
            .len(),
        2
    );
    c.edit(&d, |v| v["spec"]["paused"] = json!(false));
    wait_for("resumed rollout", done("img:3")).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_deployment_and_revision_history_limit() {
    let c = Cluster::start(vec![
        Arc::new(ReplicaSetController),
        Arc::new(DeploymentController),
    ])
    .await;
    let d = c.create(
        Resource::Deployments,
        "re",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {}, "spec": {"replicas": 2, "revisionHistoryLimit": 1,
        "selector": {"matchLabels": {"app": "re"}}, "strategy": {"type": "Recreate"},
        "template": template("re", "img:1", "run")}}),
    );
    let all_on = |image: &'static str| {
        let c = &c;
        move || {
            let pods = c.pods();
            (pods.len() == 2
                && pods
                    .iter()
                    .all(|p| is_ready(p) && p["spec"]["containers"][0]["image"] == image))
            .then_some(())
        }
    };
    wait_for("first", all_on("img:1")).await;
    // Recreate: never old and new pods at once.
    let mixed = Arc::new(Mutex::new(false));
    let (m, store) = (mixed.clone(), c.store.clone());
    let mut w = c.store.watch(Resource::Pods, None, None).unwrap();
    tokio::spawn(async move {
        while let Ok(Some(_)) = w.next().await {
            let images: std::collections::BTreeSet<String> = store
                .list(Resource::Pods, Some(NS))
                .unwrap()
                .0
                .iter()
                .map(|p| {
                    p["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            if images.len() > 1 {
                *m.lock().unwrap() = true;
            }
        }
    });
    for image in ["img:2", "img:3"] {
        c.edit(&d, |v| {
            v["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image)
        });
        wait_for(image, all_on(image)).await;
    }
    assert!(!*mixed.lock().unwrap(), "old and new pods ran together");
    wait_for("history trimmed to 1 old ReplicaSet", || {
        (c.store
            .list(Resource::ReplicaSets, Some(NS))
            .unwrap()
            .0
            .len()
            == 2)
            .then_some(())
    })
    .await;
    c.stop().await;
}

fn node(name: &str, labels: Value, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
           "spec": {"taints": taints}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_eligible_node() {
    let c = Cluster::start(vec![Arc::new(DaemonSetController)]).await;
    c.create(
        Resource::Nodes,
        "n1",
        node("n1", json!({"role": "worker"}), json!([])),
    );
    c.create(
        Resource::Nodes,
        "n2",
        node(
            "n2",
            json!({"role": "worker"}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        ),
    );
    c.create(
        Resource::Nodes,
        "n3",
        node(
            "n3",
            json!({"role": "worker"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        ),
    );
    c.create(
        Resource::Nodes,
        "n4",
        node("n4", json!({"role": "db"}), json!([])),
    );
    let mut tpl = template("agent", "img:1", "run");
    tpl["spec"]["nodeSelector"] = json!({"role": "worker"});
    let ds = c.create(
        Resource::DaemonSets,
        "agent",
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {}, "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": tpl}}),
    );
    let on_nodes = |want: &'static [&'static str]| {
        let c = &c;
        move || {
            let pods = c.pods();
            let mut nodes: Vec<String> = pods.iter().map(|p| {
                p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0].as_str().unwrap_or("?").to_string()
            }).collect();
            nodes.sort();
            let st = &c.get(&Key::namespaced(Resource::DaemonSets, NS, "agent"))["status"];
            (nodes == want
                && pods.iter().all(is_ready)
                && st["desiredNumberScheduled"] == want.len()
                && st["numberReady"] == want.len()
                && st["numberAvailable"] == want.len())
            .then_some(pods)
        }
    };
    let pods = wait_for("pods on n1 and n3", on_nodes(&["n1", "n3"])).await;
    let tolerations = pods[0]["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
    );
    c.create(
        Resource::Nodes,
        "n5",
        node("n5", json!({"role": "worker"}), json!([])),
    );
    wait_for("pod on new node", on_nodes(&["n1", "n3", "n5"])).await;
    c.delete(Resource::Nodes, "n1");
    wait_for("pod of removed node gone", on_nodes(&["n3", "n5"])).await;

    // Rolling update: every pod replaced with the new template.
    c.edit(&ds, |v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("img:2")
    });
    wait_for("updated pods", || {
        let pods = on_nodes(&["n3", "n5"])()?;
        let st = c.get(&ds)["status"].clone();
        (pods
            .iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "img:2")
            && st["updatedNumberScheduled"] == 2)
            .then_some(())
    })
    .await;
    c.stop().await;
}

fn job(completions: Option<i64>, parallelism: i64, backoff: i64, sim: &str) -> Value {
    let mut tpl = template("job", "img:1", sim);
    tpl["spec"]["restartPolicy"] = json!("Never");
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {},
           "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
                    "template": tpl}})
}

fn condition(v: &Value, type_: &str) -> Option<Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_completes_with_parallelism_and_fails_after_backoff_limit() {
    let c = Cluster::start(vec![Arc::new(JobController::default())]).await;
    let max_active = Arc::new(Mutex::new(0usize));
    let (m, store) = (max_active.clone(), c.store.clone());
    let mut w = c.store.watch(Resource::Pods, None, None).unwrap();
    tokio::spawn(async move {
        while let Ok(Some(_)) = w.next().await {
            let active = store
                .list(Resource::Pods, Some(NS))
                .unwrap()
                .0
                .iter()
                .filter(|p| {
                    p["metadata"]["labels"]["job-name"] == "ok"
                        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                })
                .count();
            let mut m = m.lock().unwrap();
            *m = (*m).max(active);
        }
    });
    let ok = c.create(Resource::Jobs, "ok", job(Some(5), 2, 6, "succeed"));
    let done = wait_for("job complete", || {
        condition(&c.get(&ok), "Complete").map(|_| c.get(&ok))
    })
    .await;
    assert_eq!(done["status"]["succeeded"], 5);
    assert_eq!(done["status"]["active"], 0);
    assert!(
        done["status"]["completionTime"].is_string() && done["status"]["startTime"].is_string()
    );
    assert!(*max_active.lock().unwrap() <= 2, "parallelism exceeded");
    let pods: Vec<Value> = c
        .pods()
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["job-name"] == "ok")
        .collect();
    assert_eq!(pods.len(), 5);
    for p in &pods {
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "ok"
        );
        assert_eq!(p["metadata"]["labels"]["controller-uid"], "uid-jobs-ok");
        assert_eq!(p["spec"]["restartPolicy"], "Never");
    }

    let bad = c.create(Resource::Jobs, "bad", job(Some(3), 1, 2, "fail"));
    let failed = wait_for("job failed", || condition(&c.get(&bad), "Failed")).await;
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    let st = c.get(&bad)["status"].clone();
    assert_eq!(st["failed"], 3);
    assert_eq!(st["active"], 0);
    assert!(condition(&c.get(&bad), "Complete").is_none());

    // Indexed: every index succeeds once.
    let mut spec = job(Some(3), 3, 6, "succeed");
    spec["spec"]["completionMode"] = json!("Indexed");
    let ix = c.create(Resource::Jobs, "ix", spec);
    wait_for("indexed job complete", || {
        condition(&c.get(&ix), "Complete")
    })
    .await;
    assert_eq!(c.get(&ix)["status"]["completedIndexes"], "0-2");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_active_deadline_fails_the_job() {
    let c = Cluster::start(vec![Arc::new(JobController::default())]).await;
    let mut spec = job(Some(1), 1, 6, "run");
    spec["spec"]["activeDeadlineSeconds"] = json!(1);
    let j = c.create(Resource::Jobs, "slow", spec);
    let cond = wait_for("deadline", || condition(&c.get(&j), "Failed")).await;
    assert_eq!(cond["reason"], "DeadlineExceeded");
    wait_for("active pods deleted", || c.pods().is_empty().then_some(())).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_survives_garbage_objects_and_stops() {
    let c = Cluster::start(vec![Arc::new(ReplicaSetController)]).await;
    // Not a ReplicaSet at all: a typed error, logged and retried, no panic.
    let key = Key::namespaced(Resource::ReplicaSets, NS, "junk");
    c.store
        .create(
            &key,
            json!({"metadata": {"name": "junk", "namespace": NS}, "spec": {"replicas": "many"}}),
        )
        .unwrap();
    let err = ReplicaSetController
        .reconcile(c.store.as_ref(), &key, jiff::Timestamp::now())
        .unwrap_err();
    assert!(err.to_string().contains("junk"), "{err}");
    // The runner keeps serving other keys.
    c.create(
        Resource::ReplicaSets,
        "fine",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "fine"}},
        "template": template("fine", "img", "run")}}),
    );
    wait_for("pod of the good ReplicaSet", || {
        (c.pods().len() == 1).then_some(())
    })
    .await;
    assert!(matches!(
        c.store.get(&Key::namespaced(Resource::Pods, NS, "x")),
        Err(StoreError::NotFound { .. })
    ));
    c.stop().await;
}
