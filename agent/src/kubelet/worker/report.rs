//! What the worker reports: the view of the pod's containers and the status
//! written to the store.

use super::*;

impl PodWorker {
    pub(super) fn view(&self, pod: &Pod, attempts: &Attempts, initialized: bool) -> PodView {
        let (inits, mains) = spec_containers(pod);
        let cv = |c: &Container| {
            let (cur, prev) = match attempts.get(&c.name) {
                Some((cur, prev)) => (Some(cur.clone()), prev.clone()),
                None => (None, None),
            };
            let id = cur
                .as_ref()
                .map(|c| c.record.id.clone())
                .unwrap_or_default();
            let running = cur.as_ref().is_some_and(is_running);
            let started = running
                && (c.startup_probe.is_none()
                    || self
                        .results
                        .get(&(id.clone(), ProbeKind::Startup))
                        .copied()
                        .unwrap_or(false));
            let ready = started
                && (c.readiness_probe.is_none()
                    || self
                        .results
                        .get(&(id.clone(), ProbeKind::Readiness))
                        .copied()
                        .unwrap_or(false));
            ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: self.image_ids.get(&c.name).cloned().unwrap_or_default(),
                waiting: if running {
                    None
                } else {
                    self.waiting.get(&c.name).cloned()
                },
                current: cur,
                previous: prev,
                ready,
                started,
            }
        };
        PodView {
            phase: Phase::Pending,
            reason: None,
            message: None,
            pod_ip: self.pod_ip,
            host_ip: self.ctx.host_ip,
            start_time: self.start_time,
            sandbox_ready: self.sandbox_ready,
            initialized,
            init_containers: inits.iter().map(cv).collect(),
            containers: mains.iter().map(cv).collect(),
            qos_class: convert::qos_class(pod).as_str().to_string(),
        }
    }

    /// Writes the status if it changed (to the pod, or a static pod's
    /// mirror). A pod that is gone or has another uid is left alone.
    pub(super) async fn write_status(&mut self, pod: &Pod, view: &PodView) {
        let status = status::pod_status(view, self.last_status.as_ref(), Timestamp::now());
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let Ok(json) = serde_json::to_value(&status) else {
            return;
        };
        let key = pod_key(pod);
        let store = self.ctx.store.clone();
        let uid = self.uid.clone();
        let written = tokio::task::spawn_blocking(move || {
            store::update_with(&*store, &key, |mut obj| {
                if obj.pointer("/metadata/uid").and_then(|v| v.as_str()) != Some(uid.as_str()) {
                    return Ok(None);
                }
                obj["status"] = json.clone();
                Ok(Some(obj))
            })
        })
        .await;
        match written {
            Ok(Ok(_)) | Ok(Err(StoreError::NotFound { .. })) => self.last_status = Some(status),
            Ok(Err(e)) => tracing::warn!(pod = %self.uid, "writing status: {e}"),
            Err(e) => tracing::warn!(pod = %self.uid, "writing status: {e}"),
        }
    }
}
