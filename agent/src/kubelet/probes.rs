//! Probes: liveness, readiness and startup (exec, httpGet, tcpSocket; grpc
//! reports a failure), with the kubelet's timing and thresholds
//! (`pkg/kubelet/prober/worker.go`).
//!
//! Guarantees of a prober task:
//! - It first sends the initial result: readiness failure, liveness
//!   success (so a container is neither ready nor killed before its first
//!   probe). Startup sends nothing first: its initial result is the
//!   kubelet's "unknown" (not started yet, not failed either); its first
//!   update is success (started) or failure after `failureThreshold`.
//! - It waits `initialDelaySeconds` (plus, with [`ProberOptions::jitter`],
//!   a random part of one period, like a restarted kubelet), then probes at
//!   once and every `periodSeconds` (default 10, at least 1), each probe
//!   bounded by `timeoutSeconds` (default 1).
//! - A result is reported only after `successThreshold` consecutive
//!   successes (default 1; always 1 for liveness and startup) or
//!   `failureThreshold` consecutive failures (default 3), and only when it
//!   differs from the last reported one.
//! - After reporting a liveness or startup failure it holds (probes no
//!   more): the worker restarts the container and starts a new prober. After
//!   a startup success it stops too: the worker then starts liveness and
//!   readiness probers (they never run before startup succeeded).
//! - Results that could not be obtained (the exec itself failed) are thrown
//!   away, as the kubelet does; they count neither way.
//! - All waiting uses tokio time, so tests can `tokio::time::pause()`
//!   (except for exec, which runs on a blocking thread in real time).
//! - It stops when `tx` is closed or the task is aborted.
//!
//! [`ProbeUpdate::message`] is the bare reason ("HTTP probe failed with
//! statuscode: 500"); the worker prefixes "Liveness probe failed: " for
//! the event.

pub mod handlers;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::MissedTickBehavior;

pub use handlers::Outcome;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// "Liveness", "Readiness", "Startup" (as in the kubelet's events).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The result assumed before the first probe: liveness success,
    /// readiness failure, startup none (unknown: not started, not failed).
    pub fn initial_result(self) -> Option<bool> {
        match self {
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
            ProbeKind::Startup => None,
        }
    }
}

/// A probe result change, sent to the pod worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeUpdate {
    pub container: String,
    /// The runtime container id the prober watched (results for an old
    /// attempt are ignored by the worker).
    pub container_id: String,
    pub kind: ProbeKind,
    pub success: bool,
    /// Why it failed (for events and `describe`).
    pub message: String,
}

/// What a probe or hook needs from the container it targets.
pub trait ProbeTarget: Send + Sync + std::fmt::Debug {
    /// Runs `command` inside the container (blocking); exit code and
    /// combined output. `Err` means the exec itself failed; an error whose
    /// text contains "timed out" or "did not finish within" (herd-runtime's
    /// exec timeout) is taken as the command timing out.
    fn exec(&self, command: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), String>;
    /// The pod's IP (the default host of httpGet/tcpSocket).
    fn pod_ip(&self) -> Option<IpAddr>;
}

/// A probe's timing and thresholds after the kubelet's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// Defaults: period 10 s (min 1 s), timeout 1 s (min 1 s), success 1
    /// (forced to 1 for liveness/startup), failure 3; negatives count as 0.
    pub fn of(kind: ProbeKind, probe: &Probe) -> ProbeTiming {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default)).unwrap_or(1).max(1);
        let success_threshold = match kind {
            ProbeKind::Readiness => count(probe.success_threshold, 1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        ProbeTiming {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Options of a prober beyond the probe itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProberOptions {
    /// Wait a random part of one period before the first probe (the kubelet
    /// does so when it started less than a period ago, to spread the probes
    /// of adopted containers). Off in [`spawn_prober`].
    pub jitter: bool,
}

/// Starts the prober task of one probe of one container. It sleeps
/// `initialDelaySeconds`, then probes every `periodSeconds` with
/// `timeoutSeconds`, applies `successThreshold`/`failureThreshold`, and
/// sends an update on every change of the thresholded result (and the first
/// one). It stops when `tx` is closed or the task is aborted.
pub fn spawn_prober(
    kind: ProbeKind,
    probe: Probe,
    container: Container,
    container_id: String,
    target: Arc<dyn ProbeTarget>,
    tx: UnboundedSender<ProbeUpdate>,
) -> tokio::task::JoinHandle<()> {
    spawn_prober_with(
        kind,
        probe,
        container,
        container_id,
        target,
        tx,
        ProberOptions::default(),
    )
}

/// [`spawn_prober`] with options.
pub fn spawn_prober_with(
    kind: ProbeKind,
    probe: Probe,
    container: Container,
    container_id: String,
    target: Arc<dyn ProbeTarget>,
    tx: UnboundedSender<ProbeUpdate>,
    options: ProberOptions,
) -> tokio::task::JoinHandle<()> {
    let prober = Prober {
        kind,
        timing: ProbeTiming::of(kind, &probe),
        probe,
        container,
        container_id,
        target,
        tx,
    };
    tokio::spawn(async move {
        let tx = prober.tx.clone();
        tokio::select! {
            _ = tx.closed() => {}
            _ = prober.run(options) => {}
        }
    })
}

/// Runs one probe once (no thresholds): what a single tick does.
pub async fn probe_once(
    probe: &Probe,
    container: &Container,
    target: Arc<dyn ProbeTarget>,
    timeout: Duration,
) -> Outcome {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        handlers::exec(&command, target, timeout).await
    } else if let Some(http) = &probe.http_get {
        handlers::http_get(http, container, target.as_ref(), timeout).await
    } else if let Some(tcp) = &probe.tcp_socket {
        handlers::tcp_socket(tcp, container, target.as_ref(), timeout).await
    } else if probe.grpc.is_some() {
        Outcome::Failure("grpc probes are not supported".to_string())
    } else {
        Outcome::Failure("probe has no handler".to_string())
    }
}

/// Counts consecutive results and decides when one is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
    reported: Option<bool>,
}

impl Thresholds {
    pub fn new(kind: ProbeKind, timing: &ProbeTiming) -> Thresholds {
        Thresholds {
            success_threshold: timing.success_threshold,
            failure_threshold: timing.failure_threshold,
            last: None,
            run: 0,
            reported: kind.initial_result(),
        }
    }

    /// The currently reported result (`None`: nothing yet).
    pub fn reported(&self) -> Option<bool> {
        self.reported
    }

    /// Records one result; `Some(result)` when the reported result changes.
    pub fn observe(&mut self, success: bool) -> Option<bool> {
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let needed = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < needed || self.reported == Some(success) {
            return None;
        }
        self.reported = Some(success);
        Some(success)
    }
}

struct Prober {
    kind: ProbeKind,
    timing: ProbeTiming,
    probe: Probe,
    container: Container,
    container_id: String,
    target: Arc<dyn ProbeTarget>,
    tx: UnboundedSender<ProbeUpdate>,
}

impl Prober {
    fn send(&self, success: bool, message: String) -> bool {
        self.tx
            .send(ProbeUpdate {
                container: self.container.name.clone(),
                container_id: self.container_id.clone(),
                kind: self.kind,
                success,
                message,
            })
            .is_ok()
    }

    async fn run(self, options: ProberOptions) {
        let mut thresholds = Thresholds::new(self.kind, &self.timing);
        if let Some(initial) = thresholds.reported()
            && !self.send(initial, String::new())
        {
            return;
        }
        if options.jitter {
            tokio::time::sleep(self.timing.period.mul_f64(random_fraction())).await;
        }
        tokio::time::sleep(self.timing.initial_delay).await;
        let mut ticker = tokio::time::interval(self.timing.period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let outcome = probe_once(
                &self.probe,
                &self.container,
                self.target.clone(),
                self.timing.timeout,
            )
            .await;
            let (success, message) = match outcome {
                Outcome::Success(m) => (true, m),
                Outcome::Failure(m) => (false, m),
                Outcome::Unknown(m) => {
                    tracing::debug!(container = %self.container.name, kind = self.kind.as_str(),
                        error = %m, "probe errored, result ignored");
                    continue;
                }
            };
            let Some(changed) = thresholds.observe(success) else {
                continue;
            };
            let message = if changed { String::new() } else { message };
            if !self.send(changed, message) {
                return;
            }
            let done = match self.kind {
                ProbeKind::Liveness => !changed,
                ProbeKind::Startup => true,
                ProbeKind::Readiness => false,
            };
            if done {
                // On hold until the worker aborts us or closes the channel.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A number in [0, 1) from the std hasher's random keys (no rand crate).
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: Option<i32>, failure: Option<i32>) -> Probe {
        Probe {
            success_threshold: success,
            failure_threshold: failure,
            ..Probe::default()
        }
    }

    #[test]
    fn timing_defaults_and_minimums() {
        let t = ProbeTiming::of(ProbeKind::Readiness, &Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
        let p = Probe {
            period_seconds: Some(0),
            timeout_seconds: Some(-3),
            initial_delay_seconds: Some(-1),
            success_threshold: Some(4),
            ..Probe::default()
        };
        let t = ProbeTiming::of(ProbeKind::Liveness, &p);
        assert_eq!(t.period, Duration::from_secs(1));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!(t.initial_delay, Duration::ZERO);
        assert_eq!(t.success_threshold, 1, "liveness success threshold is 1");
        assert_eq!(
            ProbeTiming::of(ProbeKind::Readiness, &p).success_threshold,
            4
        );
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let p = probe(Some(2), Some(3));
        let mut t = Thresholds::new(
            ProbeKind::Readiness,
            &ProbeTiming::of(ProbeKind::Readiness, &p),
        );
        assert_eq!(t.reported(), Some(false));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(true), None, "no repeat of an unchanged result");
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn liveness_starts_successful() {
        let p = probe(None, Some(1));
        let mut t = Thresholds::new(
            ProbeKind::Liveness,
            &ProbeTiming::of(ProbeKind::Liveness, &p),
        );
        assert_eq!(t.reported(), Some(true));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn startup_reports_failure_after_threshold() {
        let p = probe(None, Some(2));
        let mut t = Thresholds::new(ProbeKind::Startup, &ProbeTiming::of(ProbeKind::Startup, &p));
        assert_eq!(t.reported(), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn jitter_fraction_is_in_range() {
        for _ in 0..100 {
            let f = random_fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
    }
}
