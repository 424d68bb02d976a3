//! Stopping: preStop, SIGTERM, SIGKILL after the grace period (regular
//! containers together, sidecars after them in reverse order), releasing
//! the network, removing the sandbox and the pod object.

use super::*;

impl PodWorker {
    pub(super) async fn kill_container(
        &self,
        pod: &Pod,
        spec: Option<&Container>,
        rec: ContainerRecord,
        grace: Duration,
    ) {
        let started = Instant::now();
        if let Some(c) = spec
            && let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && !grace.is_zero()
        {
            let target: Arc<dyn ProbeTarget> = Arc::new(Target {
                runtime: self.ctx.runtime.clone(),
                record: rec.clone(),
                pod_ip: self.pod_ip,
            });
            if let Err(msg) = lifecycle::run_handler(h, c, target, grace).await {
                self.ctx
                    .events
                    .record(pod, EventKind::Warning, "FailedPreStopHook", msg);
            }
        }
        let left = grace.saturating_sub(started.elapsed());
        if let Err(e) = self.rt(move |rt| rt.stop_container(&rec, left)).await {
            tracing::warn!(pod = %self.uid, "stopping a container: {e}");
        }
    }

    /// Stops every running container: regular ones together (preStop,
    /// SIGTERM, SIGKILL after the grace period), then sidecars in reverse
    /// order, as the kubelet does.
    pub(super) async fn kill_pod(&mut self, pod: &Pod, grace: Duration) -> Result<(), WorkerError> {
        self.probers.clear();
        let attempts = self.attempts().await?;
        let (inits, mains) = spec_containers(pod);
        let started = Instant::now();
        let running = |name: &str| {
            attempts
                .get(name)
                .filter(|(c, _)| is_running(c) || matches!(c.state, ContainerState::Created))
                .map(|(c, _)| c.record.clone())
        };
        let mut regular = Vec::new();
        for c in mains {
            if let Some(rec) = running(&c.name) {
                self.ctx.events.record(
                    pod,
                    EventKind::Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
                regular.push(self.kill_container(pod, Some(c), rec, grace));
            }
        }
        futures_util::future::join_all(regular).await;
        for c in inits.iter().rev() {
            if let Some(rec) = running(&c.name) {
                let left = grace.saturating_sub(started.elapsed());
                self.kill_container(pod, Some(c), rec, left).await;
            }
        }
        // Anything left (containers no longer in the spec).
        let known: HashSet<&str> = mains.iter().chain(inits).map(|c| c.name.as_str()).collect();
        for (name, (c, _)) in &attempts {
            if !known.contains(name.as_str()) && is_running(c) {
                self.kill_container(pod, None, c.record.clone(), Duration::ZERO)
                    .await;
            }
        }
        Ok(())
    }

    /// A finished pod (Succeeded, Failed, Evicted) keeps its containers'
    /// records and logs until it is deleted, as with the kubelet; its
    /// address goes back to the pool.
    pub(super) async fn release_network(&mut self) {
        self.probers.clear();
        // The netns outlives this (until the pod is deleted): the veth goes
        // now, so the address is not in use when it is handed out again.
        let netns = self
            .ctx
            .runtime
            .config()
            .run_dir
            .join("pods")
            .join(&self.uid)
            .join("ns")
            .join("net");
        if let Some(net) = &self.ctx.network
            && let Err(e) = net.teardown(&self.uid, Some(&netns)).await
        {
            tracing::warn!(pod = %self.uid, "network teardown: {e}");
        }
    }

    /// Removes the sandbox, its network and volumes. With `forget`, the
    /// pod is gone for good: its logs go too.
    pub(super) async fn remove_sandbox(
        &mut self,
        pod: &Pod,
        forget: bool,
    ) -> Result<(), WorkerError> {
        self.probers.clear();
        if let Some(net) = &self.ctx.network
            && let Err(e) = net.teardown(&self.uid, None).await
        {
            tracing::warn!(pod = %self.uid, "network teardown: {e}");
        }
        let uid = self.uid.clone();
        self.rt(move |rt| rt.remove_pod_sandbox(&uid)).await?;
        self.sandbox_ready = false;
        let pods_dir = self.ctx.cfg.pods_dir.clone();
        let uid = self.uid.clone();
        let torn = tokio::task::spawn_blocking(move || volumes::teardown(&uid, &pods_dir)).await;
        if let Ok(Err(e)) = torn {
            tracing::warn!(pod = %self.uid, "volume teardown: {e}");
        }
        if forget
            && let Ok(dir) = herd_runtime::logs::pod_log_dir(
                &self.ctx.runtime.config().log_dir,
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default(),
                &self.uid,
            )
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }

    /// Deletes the pod object (or a static pod's mirror) once everything
    /// is stopped, if it still is this uid.
    pub(super) async fn delete_from_store(&self, pod: &Pod) {
        let key = pod_key(pod);
        let store = self.ctx.store.clone();
        let uid = self.uid.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Ok(cur) = store.get(&key) else { return };
            if cur.pointer("/metadata/uid").and_then(|v| v.as_str()) != Some(uid.as_str()) {
                return;
            }
            let rv = store::resource_version(&cur);
            if let Err(e) = store.delete(&key, rv) {
                tracing::debug!("deleting pod {}: {e}", key.name);
            }
        })
        .await;
    }
}
