//! Pods of a [`Cluster`] as the API and runc see them: the live pods of an
//! app and their placement, waiting for a wanted count, and the containers
//! runc runs on a node.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use super::Cluster;
use crate::agent::host::runc_roots;

/// True when the pod's phase is Running.
pub fn is_running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
}

/// True when the pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    crate::agent::condition(pod, "Ready") == Some("True")
}

impl Cluster {
    /// Live (not being deleted) pods in `default` labelled `app=<app>`, as
    /// node `from`'s replica has them.
    pub fn app_pods(&self, from: usize, app: &str) -> Result<Vec<Value>> {
        let list = self.get(
            from,
            &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
        )?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect())
    }

    /// Node index of each of `pods` (`None` when unbound or unknown).
    pub fn placement(&self, pods: &[Value]) -> Vec<Option<usize>> {
        pods.iter()
            .map(|p| self.index_of(p["spec"]["nodeName"].as_str().unwrap_or_default()))
            .collect()
    }

    /// Waits until node `from` sees exactly `n` live pods of `app`, all
    /// Running (and Ready if `ready`), none on the nodes in `not_on`.
    pub fn wait_app(
        &self,
        from: usize,
        app: &str,
        (n, ready): (usize, bool),
        not_on: &[usize],
        timeout: Duration,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let pods = self.app_pods(from, app).unwrap_or_default();
            let placed = self.placement(&pods);
            let ok = pods.len() == n
                && pods
                    .iter()
                    .all(|p| is_running(p) && (!ready || is_ready(p)))
                && placed
                    .iter()
                    .all(|i| i.is_some_and(|i| !not_on.contains(&i)));
            if ok {
                return Ok(pods);
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = pods
                    .iter()
                    .zip(&placed)
                    .map(|(p, i)| {
                        format!(
                            "{} node {i:?} {} ready {}",
                            p["metadata"]["name"],
                            p["status"]["phase"],
                            is_ready(p)
                        )
                    })
                    .collect();
                bail!(
                    "{app}: not {n} running pods after {timeout:?}: {seen:?}\n{}",
                    self.logs_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Names of the objects in the list at `path`, as node `i` has them.
    pub fn names(&self, i: usize, path: &str) -> Result<BTreeSet<String>> {
        let list = self.get(i, path)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["metadata"]["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Ids of the runc containers running on node `i` (`runc list` over the
    /// agent's runc roots): `<pod uid>-<container>-<attempt>`.
    pub fn running_containers(&self, i: usize) -> Vec<String> {
        let a = self.node(i);
        let mut ids = vec![];
        for root in runc_roots(&[a.run_dir(), a.run_dir().join("runtime"), a.root()]) {
            let Ok(out) = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["list", "--format", "json"])
                .output()
            else {
                continue;
            };
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            for c in list.as_array().into_iter().flatten() {
                if c["status"] == "running"
                    && let Some(id) = c["id"].as_str()
                {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    }
}
