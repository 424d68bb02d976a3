//! Starting containers: the sandbox and its network, volumes, images (pull
//! policies and backoff), create + start with postStart, restarts with
//! CrashLoopBackOff, exit waiters and probers.

use super::*;

impl PodWorker {
    pub(super) async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), WorkerError> {
        let cfg = convert::sandbox_config(pod, &self.ctx.cfg.sandbox).map_err(|e| {
            WorkerError::Other {
                uid: self.uid.clone(),
                what: e.to_string(),
            }
        })?;
        let host_network = cfg.namespaces.host_network;
        let netns = self.rt(move |rt| rt.run_pod_sandbox(&cfg)).await?;
        let ip = match (&netns, &self.ctx.network) {
            (Some(ns), Some(net)) => {
                Some(
                    net.setup(&self.uid, ns)
                        .await
                        .map_err(|e| WorkerError::Other {
                            uid: self.uid.clone(),
                            what: format!("network: {e}"),
                        })?,
                )
            }
            _ if host_network => self.ctx.host_ip,
            _ => None,
        };
        if let Some(ip) = ip {
            let uid = self.uid.clone();
            self.rt(move |rt| rt.set_pod_ip(&uid, ip)).await?;
        }
        self.pod_ip = ip;
        if self.start_time.is_none() {
            self.start_time = Some(Timestamp::now());
        }
        self.sandbox_ready = true;
        Ok(())
    }

    pub(super) async fn setup_volumes(&self, pod: &Arc<Pod>) -> Result<PodVolumes, String> {
        let ctx = self.ctx.clone();
        let pod = pod.clone();
        tokio::task::spawn_blocking(move || {
            let objects = env::StoreObjects(&*ctx.store);
            let vctx = VolumeContext {
                objects: &objects,
                pods_dir: &ctx.cfg.pods_dir,
                node_name: &ctx.cfg.node_name,
                node_memory_bytes: ctx.cfg.node_memory_bytes,
                node_cpu_millis: ctx.cfg.node_cpu_millis,
            };
            volumes::setup(&pod, &vctx).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("volume task: {e}"))?
    }

    /// Starts a container that has not run, or restarts one that exited if
    /// `restart` allows it and its backoff has passed. Returns when the
    /// worker should look again (backoff expiry).
    pub(super) async fn start_or_restart(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        cur: Option<&RtContainer>,
        restart: bool,
        vols: &Arc<PodVolumes>,
    ) -> Option<Duration> {
        let attempt = match cur {
            None => 0,
            Some(cur) if is_running(cur) => return None,
            Some(cur) if matches!(cur.state, ContainerState::Created) => {
                // A start that failed midway: retry it.
                cur.record.config.attempt
            }
            Some(cur) => {
                let code = exit_code(cur).unwrap_or(1);
                let again =
                    restart && (restart_policy(pod) != "OnFailure" || code != 0 || is_sidecar(c));
                if !again {
                    self.waiting.remove(&c.name);
                    return None;
                }
                self.count_exit(cur);
                if let Some(left) = self.backoff.remaining(&c.name, Instant::now()) {
                    let delay = self.backoff.delay(&c.name).unwrap_or_default();
                    let msg = format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        humantime(delay),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        self.uid
                    );
                    if self
                        .waiting
                        .get(&c.name)
                        .is_none_or(|w| w.reason != "CrashLoopBackOff")
                    {
                        self.ctx.events.record(
                            pod,
                            EventKind::Warning,
                            "BackOff",
                            "Back-off restarting failed container".to_string()
                                + &format!(
                                    " {} in pod {}",
                                    c.name,
                                    pod.metadata.name.as_deref().unwrap_or_default()
                                ),
                        );
                    }
                    self.waiting.insert(
                        c.name.clone(),
                        Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: msg,
                        },
                    );
                    return Some(left);
                }
                cur.record.config.attempt + 1
            }
        };
        match self.start_container(pod, c, attempt, vols).await {
            Ok(()) => {
                self.waiting.remove(&c.name);
                None
            }
            Err((w, retry)) => {
                self.waiting.insert(c.name.clone(), w);
                Some(retry)
            }
        }
    }

    /// Pull policy: Always / IfNotPresent / Never. Returns the image's name
    /// in the store.
    pub(super) async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
    ) -> Result<String, (Waiting, Duration)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tagged = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            if image.contains('@') || (tagged && !image.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let images = self.ctx.runtime.images().clone();
        let present = {
            let image = image.clone();
            tokio::task::spawn_blocking(move || images.resolve(&image))
                .await
                .ok()
                .and_then(Result::ok)
        };
        if let Some(rec) = &present {
            self.image_ids.insert(
                c.name.clone(),
                format!(
                    "{}@{}",
                    rec.name
                        .rsplit_once(':')
                        .map_or(rec.name.as_str(), |(n, _)| n),
                    rec.manifest
                ),
            );
        }
        match (policy.as_str(), present) {
            ("Never", Some(rec)) | ("IfNotPresent", Some(rec)) => return Ok(rec.name),
            ("Never", None) => {
                return Err((
                    Waiting {
                        reason: "ErrImageNeverPull".into(),
                        message: format!(
                            "Container image \"{image}\" is not present with pull policy of Never"
                        ),
                    },
                    self.ctx.cfg.relist_interval,
                ));
            }
            _ => {}
        }
        let key = format!("image:{image}");
        if let Some(left) = self.backoff.remaining(&key, Instant::now()) {
            return Err((
                Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image \"{image}\""),
                },
                left,
            ));
        }
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let opts = PullOptions {
            plain_http: loopback_registry(&image),
            ..PullOptions::default()
        };
        let started = std::time::Instant::now();
        // The pull future is not `Send` (a rustc limitation with the
        // image store's iterators): drive it on a blocking thread.
        let pulled: Result<_, String> = {
            let images = self.ctx.runtime.images().clone();
            let image = image.clone();
            let handle = tokio::runtime::Handle::current();
            match tokio::task::spawn_blocking(move || {
                handle.block_on(images.pull(&image, &opts, Arc::new(|_| {})))
            })
            .await
            {
                Ok(r) => r.map_err(|e: ImageError| e.to_string()),
                Err(e) => Err(format!("pull task: {e}")),
            }
        };
        match pulled {
            Ok(rec) => {
                self.backoff.clear(&key);
                self.ctx.events.record(
                    pod,
                    EventKind::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                self.image_ids.insert(
                    c.name.clone(),
                    format!(
                        "{}@{}",
                        rec.name
                            .rsplit_once(':')
                            .map_or(rec.name.as_str(), |(n, _)| n),
                        rec.manifest
                    ),
                );
                Ok(rec.name)
            }
            Err(e) => {
                let d = self.backoff.failed(&key, Instant::now(), None);
                let message = format!("Failed to pull image \"{image}\": {e}");
                self.ctx
                    .events
                    .record(pod, EventKind::Warning, "Failed", message.clone());
                Err((
                    Waiting {
                        reason: "ErrImagePull".into(),
                        message,
                    },
                    d,
                ))
            }
        }
    }

    pub(super) async fn start_container(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        attempt: u32,
        vols: &Arc<PodVolumes>,
    ) -> Result<(), (Waiting, Duration)> {
        let image = self.ensure_image(pod, c).await?;
        let retry = self.ctx.cfg.relist_interval;
        let config_err = |what: String| {
            (
                Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: what,
                },
                retry,
            )
        };
        let env = {
            let objects = env::StoreObjects(&*self.ctx.store);
            let ectx = EnvContext {
                objects: &objects,
                node_name: &self.ctx.cfg.node_name,
                pod_ip: self.pod_ip,
                host_ip: self.ctx.host_ip,
                node_cpu_millis: self.ctx.cfg.node_cpu_millis,
                node_memory_bytes: self.ctx.cfg.node_memory_bytes,
            };
            env::container_env(pod, c, &ectx).map_err(|e| config_err(e.to_string()))?
        };
        let mounts = volumes::container_mounts(c, vols).map_err(|e| config_err(e.to_string()))?;
        let mut cfg = convert::container_config(pod, c, attempt, env, mounts)
            .map_err(|e| config_err(e.to_string()))?;
        cfg.image = image;
        let uid = self.uid.clone();
        let created = self.rt(move |rt| rt.create_container(&uid, &cfg)).await;
        let rec = match created {
            Ok(r) => r,
            Err(e) => {
                let d = self.backoff.failed(&c.name, Instant::now(), None);
                let message = e.to_string();
                self.ctx.events.record(
                    pod,
                    EventKind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                return Err((
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message,
                    },
                    d,
                ));
            }
        };
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        let r2 = rec.clone();
        if let Err(e) = self.rt(move |rt| rt.start_container(&r2)).await {
            let r3 = rec.clone();
            let _ = self.rt(move |rt| rt.remove_container(&r3)).await;
            let d = self.backoff.failed(&c.name, Instant::now(), None);
            let message = e.to_string();
            self.ctx.events.record(
                pod,
                EventKind::Warning,
                "Failed",
                format!("Error: {message}"),
            );
            return Err((
                Waiting {
                    reason: "RunContainerError".into(),
                    message,
                },
                d,
            ));
        }
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Started",
            format!("Started container {}", c.name),
        );
        self.spawn_waiter(&rec);
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target: Arc<dyn ProbeTarget> = Arc::new(Target {
                runtime: self.ctx.runtime.clone(),
                record: rec.clone(),
                pod_ip: self.pod_ip,
            });
            if let Err(msg) = lifecycle::run_handler(h, c, target, grace_period(pod)).await {
                self.ctx
                    .events
                    .record(pod, EventKind::Warning, "FailedPostStartHook", msg);
                let r = rec.clone();
                let grace = grace_period(pod);
                let _ = self.rt(move |rt| rt.stop_container(&r, grace)).await;
            }
        }
        Ok(())
    }

    pub(super) fn spawn_waiter(&mut self, rec: &ContainerRecord) {
        if !self.waiters.insert(rec.id.clone()) {
            return;
        }
        let pod_dir = self
            .ctx
            .runtime
            .config()
            .run_dir
            .join("pods")
            .join(&self.uid);
        let id = rec.id.clone();
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("herd-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Ok(c) = herd_runtime::monitor::MonitorClient::connect(&pod_dir) {
                    let _ = c.wait(&id, None);
                }
                let _ = tx.send(WorkerMsg::Wake);
            });
        if spawned.is_err() {
            self.waiters.remove(&rec.id);
        }
    }

    pub(super) fn ensure_waiters(&mut self, attempts: &Attempts) {
        let running: Vec<ContainerRecord> = attempts
            .values()
            .filter(|(c, _)| is_running(c))
            .map(|(c, _)| c.record.clone())
            .collect();
        for r in &running {
            self.spawn_waiter(r);
        }
        let live: HashSet<&str> = running.iter().map(|r| r.id.as_str()).collect();
        self.waiters.retain(|id| live.contains(id.as_str()));
    }

    /// Probers for running containers; startup first, then liveness and
    /// readiness once started. Probers of gone attempts are dropped.
    pub(super) fn ensure_probers(&mut self, pod: &Pod, attempts: &Attempts) {
        let (inits, mains) = spec_containers(pod);
        let mut want: HashMap<
            (String, ProbeKind),
            (Container, RtContainer, k8s_openapi::api::core::v1::Probe),
        > = HashMap::new();
        for c in mains.iter().chain(inits.iter().filter(|c| is_sidecar(c))) {
            let Some((cur, _)) = attempts.get(&c.name) else {
                continue;
            };
            if !is_running(cur) || self.unhealthy.contains(&cur.record.id) {
                continue;
            }
            let started = c.startup_probe.is_none()
                || self
                    .results
                    .get(&(cur.record.id.clone(), ProbeKind::Startup))
                    .copied()
                    .unwrap_or(false);
            if !started {
                if let Some(p) = &c.startup_probe {
                    want.insert(
                        (c.name.clone(), ProbeKind::Startup),
                        (c.clone(), cur.clone(), p.clone()),
                    );
                }
                continue;
            }
            if let Some(p) = &c.liveness_probe {
                want.insert(
                    (c.name.clone(), ProbeKind::Liveness),
                    (c.clone(), cur.clone(), p.clone()),
                );
            }
            if let Some(p) = &c.readiness_probe {
                want.insert(
                    (c.name.clone(), ProbeKind::Readiness),
                    (c.clone(), cur.clone(), p.clone()),
                );
            }
        }
        self.probers.retain(|k, p| {
            want.get(k)
                .is_some_and(|(_, cur, _)| cur.record.id == p.container_id)
        });
        for (k, (c, cur, probe)) in want {
            if self.probers.contains_key(&k) {
                continue;
            }
            let target: Arc<dyn ProbeTarget> = Arc::new(Target {
                runtime: self.ctx.runtime.clone(),
                record: cur.record.clone(),
                pod_ip: self.pod_ip,
            });
            let task = probes::spawn_prober(
                k.1,
                probe,
                c,
                cur.record.id.clone(),
                target,
                self.probe_tx.clone(),
            );
            self.probers.insert(
                k,
                Prober {
                    container_id: cur.record.id.clone(),
                    task,
                },
            );
        }
        let live: HashSet<String> = attempts
            .values()
            .map(|(c, _)| c.record.id.clone())
            .collect();
        self.results.retain(|(id, _), _| live.contains(id));
    }

    /// A container failed its liveness (or startup) probe: kill it, the
    /// restart policy decides what comes next.
    pub(super) async fn kill_unhealthy(&mut self, pod: &Pod, c: &Container, cur: &RtContainer) {
        self.ctx.events.record(
            pod,
            EventKind::Normal,
            "Killing",
            format!(
                "Container {} failed liveness probe, will be restarted",
                c.name
            ),
        );
        self.probers.retain(|_, p| p.container_id != cur.record.id);
        self.kill_container(pod, Some(c), cur.record.clone(), grace_period(pod))
            .await;
        self.unhealthy.remove(&cur.record.id);
    }
}

/// Does the registry part of a reference name a loopback host (plain HTTP,
/// as docker treats `localhost` registries)?
fn loopback_registry(image: &str) -> bool {
    let first = image.split('/').next().unwrap_or_default();
    if !image.contains('/') || !(first.contains('.') || first.contains(':')) {
        return false;
    }
    let host = first.rsplit_once(':').map_or(first, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// `10s`, `2m40s`, `5m0s`: Go's `time.Duration` string for whole seconds.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() != 0 && s == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(loopback_registry("127.0.0.1:5000/busybox:1"));
        assert!(loopback_registry("localhost:5000/x/y"));
        assert!(!loopback_registry("busybox"));
        assert!(!loopback_registry("docker.io/library/busybox"));
        assert!(!loopback_registry("library/busybox"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(humantime(Duration::from_secs(10)), "10s");
        assert_eq!(humantime(Duration::from_secs(300)), "5m0s");
        assert_eq!(humantime(Duration::from_secs(160)), "2m40s");
    }
}
