//! Lifecycle hooks: postStart and preStop (exec, httpGet, sleep), as the
//! kubelet's `pkg/kubelet/lifecycle/handlers.go` runs them.
//!
//! Guarantees: [`run_handler`] returns within `timeout` (exec: the target's
//! own timeout plus a short grace); `Err` carries the kubelet's event
//! message. Like the kubelet, an httpGet hook fails only on transport
//! errors (any HTTP status counts as delivered), a `tcpSocket` hook is not
//! supported ("Cannot run handler: invalid handler…"), and a sleep cut
//! short by the timeout is an error ("container terminated before sleep
//! hook finished").

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use super::probes::ProbeTarget;
use super::probes::handlers::{self, Outcome};

/// Runs a hook handler to completion or `timeout`; `Err` carries the
/// message the kubelet would put in the FailedPostStartHook /
/// FailedPreStopHook event.
pub async fn run_handler(
    handler: &LifecycleHandler,
    container: &Container,
    target: Arc<dyn ProbeTarget>,
    timeout: Duration,
) -> Result<(), String> {
    run_hook(handler, None, container, target, timeout).await
}

/// [`run_handler`] with the pod's name for the messages
/// (`… for Container "c" in Pod "p" failed …`).
pub async fn run_hook(
    handler: &LifecycleHandler,
    pod: Option<&str>,
    container: &Container,
    target: Arc<dyn ProbeTarget>,
    timeout: Duration,
) -> Result<(), String> {
    let whose = match pod {
        Some(p) => format!("Container {:?} in Pod {:?}", container.name, p),
        None => format!("Container {:?}", container.name),
    };
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let shown = format!("[{}]", command.join(" "));
        return match handlers::exec(&command, target, timeout).await {
            Outcome::Success(_) => Ok(()),
            Outcome::Failure(output) | Outcome::Unknown(output) => Err(format!(
                "Exec lifecycle hook ({shown}) for {whose} failed - error: command '{}' failed, message: {output:?}",
                command.join(" ")
            )),
        };
    }
    if let Some(http) = &handler.http_get {
        let path = http.path.as_deref().unwrap_or("");
        return handlers::http_fetch(http, container, target.as_ref(), timeout)
            .await
            .map(drop)
            .map_err(|e| format!("HTTP lifecycle hook ({path}) for {whose} failed - error: {e}"));
    }
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        if wanted > timeout {
            tokio::time::sleep(timeout).await;
            return Err(format!(
                "Sleep lifecycle hook ({}) for {whose} failed - error: container terminated before sleep hook finished",
                sleep.seconds
            ));
        }
        tokio::time::sleep(wanted).await;
        return Ok(());
    }
    let what = if handler.tcp_socket.is_some() {
        "tcpSocket is not supported in lifecycle hooks"
    } else {
        "no action specified"
    };
    Err(format!("Cannot run handler: invalid handler: {what}"))
}
