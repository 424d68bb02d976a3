//! The agent ↔ monitor protocol on `<pod_dir>/monitor.sock`: one JSON
//! object per line in each direction, one response per request, in order.
//!
//! A request line longer than [`MAX_REQUEST`] bytes is refused and the
//! connection closed; a line that is not a valid request gets an `Error`
//! response and the connection stays usable. `Wait` is the only request
//! whose response may be delayed (until the container's exit is recorded).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::state::{ContainerRecord, ExitRecord};
use crate::logs::LogLimits;
use crate::oci::RuntimeBinary;

/// The protocol this build speaks. A change that an older monitor or
/// agent would misread bumps it; the agent only uses a separate
/// `herd-monitor` binary whose `--version` names the same protocol.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line the monitor accepts.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Longest response line the client accepts.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Start one container of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartContainer {
    /// The OCI runtime's container id.
    pub id: String,
    /// Absolute path of the OCI bundle.
    pub bundle: PathBuf,
    pub runtime: RuntimeBinary,
    /// Absolute path of the CRI log (`…/<container>/<attempt>.log`).
    pub log_path: PathBuf,
    pub log_limits: LogLimits,
    /// `memory.events` (v2) or `memory.oom_control` (v1) of the cgroup
    /// whose OOM kills count as this container's.
    pub oom_counter_file: Option<PathBuf>,
    /// The bundle's `process.terminal` is true: the runtime sends a pty
    /// master through a console socket.
    pub tty: bool,
    /// Keep a stdin pipe open for the container (otherwise /dev/null).
    pub stdin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Request {
    StartContainer(StartContainer),
    /// Blocks until the container's exit is recorded (at once if it is).
    Wait {
        id: String,
    },
    List,
    /// Exit once no container is running; refuse new starts meanwhile.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    Started {
        pid: u32,
    },
    Error {
        message: String,
        /// The runtime's exit status when it was the runtime that failed.
        exit_status: Option<i32>,
        /// The runtime's stderr (bounded).
        stderr: Option<String>,
    },
    Exited(ExitRecord),
    Containers {
        containers: Vec<ContainerRecord>,
    },
    ShuttingDown {
        /// Containers still running; the monitor exits after the last.
        running: usize,
    },
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
            exit_status: None,
            stderr: None,
        }
    }
}

/// Encodes one message as a line.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these types cannot fail (no maps with non-string keys,
    // no failing Serialize impls); fall back to an error line regardless.
    let mut line = serde_json::to_vec(msg).unwrap_or_else(|_| {
        br#"{"type":"Error","message":"cannot encode","exit_status":null,"stderr":null}"#.to_vec()
    });
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let line = encode(&Request::Wait { id: "c".into() });
        assert_eq!(line, b"{\"type\":\"Wait\",\"id\":\"c\"}\n");
        let back: Request = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, Request::Wait { id: "c".into() });
        let r: Request = serde_json::from_str(r#"{"type":"List"}"#).unwrap();
        assert_eq!(r, Request::List);
        assert!(serde_json::from_str::<Request>(r#"{"type":"Nope"}"#).is_err());
        let exited = Response::Exited(ExitRecord {
            exit_code: 3,
            signal: None,
            oom_killed: false,
            finished_at: "f".into(),
            started_at: "s".into(),
        });
        let back: Response = serde_json::from_slice(&encode(&exited)).unwrap();
        assert_eq!(back, exited);
    }
}
