//! Exec stream framing of the `v4.channel.k8s.io` / `v5.channel.k8s.io`
//! WebSocket subprotocols.
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout,
//! 2 stderr, 3 error (a `Status` JSON closing the session), 4 resize
//! (`{"Width":w,"Height":h}`); v5 adds 255 "close", followed by the byte of
//! the channel being closed (the client closes stdin this way).

use serde_json::Value;

/// The negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V4,
    V5,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// Reads the server's `Sec-WebSocket-Protocol` answer.
    pub fn from_header(v: &str) -> Option<Protocol> {
        match v.trim() {
            "v4.channel.k8s.io" => Some(Protocol::V4),
            "v5.channel.k8s.io" => Some(Protocol::V5),
            _ => None,
        }
    }

    /// Whether the client can half-close stdin.
    pub fn can_close(self) -> bool {
        self == Protocol::V5
    }
}

/// Stream channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdin,
    Stdout,
    Stderr,
    Error,
    Resize,
    Close,
}

impl Channel {
    pub fn byte(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
            Channel::Error => 3,
            Channel::Resize => 4,
            Channel::Close => 255,
        }
    }

    pub fn from_byte(b: u8) -> Option<Channel> {
        Some(match b {
            0 => Channel::Stdin,
            1 => Channel::Stdout,
            2 => Channel::Stderr,
            3 => Channel::Error,
            4 => Channel::Resize,
            255 => Channel::Close,
            _ => return None,
        })
    }
}

/// A frame that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty exec frame")]
    Empty,
    #[error("exec frame on unknown channel {0}")]
    UnknownChannel(u8),
    #[error("invalid exec status: {0}")]
    Status(String),
}

/// A channel byte followed by the payload.
pub fn encode(channel: Channel, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel.byte());
    v.extend_from_slice(data);
    v
}

/// Splits a message into its channel and payload.
pub fn decode(msg: &[u8]) -> Result<(Channel, &[u8]), FrameError> {
    let (&b, rest) = msg.split_first().ok_or(FrameError::Empty)?;
    let ch = Channel::from_byte(b).ok_or(FrameError::UnknownChannel(b))?;
    Ok((ch, rest))
}

/// The resize message for a `width`×`height` terminal.
pub fn resize(width: u16, height: u16) -> Vec<u8> {
    encode(
        Channel::Resize,
        format!("{{\"Width\":{width},\"Height\":{height}}}").as_bytes(),
    )
}

/// The v5 message closing stdin.
pub fn close_stdin() -> Vec<u8> {
    vec![Channel::Close.byte(), Channel::Stdin.byte()]
}

/// How the remote command ended, from the error channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecStatus {
    Success,
    ExitCode(i32),
    /// Any other failure (message from the server).
    Failure(String),
}

/// Reads the `Status` JSON on the error channel. v4 servers may also send
/// a bare error text, taken as a failure message.
pub fn exec_status(payload: &[u8]) -> Result<ExecStatus, FrameError> {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        let text = String::from_utf8_lossy(payload).trim().to_string();
        if text.is_empty() {
            return Err(FrameError::Status("empty payload".into()));
        }
        return Ok(ExecStatus::Failure(text));
    };
    match v["status"].as_str() {
        Some("Success") => return Ok(ExecStatus::Success),
        Some("Failure") => {}
        _ => return Err(FrameError::Status(v.to_string())),
    }
    if v["reason"] == "NonZeroExitCode" {
        let code = v["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.trim().parse::<i32>().ok());
        if let Some(code) = code {
            return Ok(ExecStatus::ExitCode(code));
        }
    }
    Ok(ExecStatus::Failure(
        v["message"].as_str().unwrap_or("exec failed").to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = encode(Channel::Stdout, b"hello");
        assert_eq!(f[0], 1);
        assert_eq!(decode(&f).unwrap(), (Channel::Stdout, &b"hello"[..]));
        assert_eq!(decode(&[2]).unwrap(), (Channel::Stderr, &b""[..]));
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert_eq!(decode(&[9, 1]), Err(FrameError::UnknownChannel(9)));
        assert_eq!(close_stdin(), vec![255, 0]);
        assert_eq!(resize(80, 24), b"\x04{\"Width\":80,\"Height\":24}".to_vec());
    }

    #[test]
    fn statuses() {
        assert_eq!(
            exec_status(br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            ExecStatus::Success
        );
        let fail = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(exec_status(fail).unwrap(), ExecStatus::ExitCode(3));
        let other = br#"{"status":"Failure","message":"container not found"}"#;
        assert_eq!(
            exec_status(other).unwrap(),
            ExecStatus::Failure("container not found".into())
        );
        assert!(exec_status(b"").is_err());
        assert!(exec_status(br#"{"status":"Weird"}"#).is_err());
        assert_eq!(
            Protocol::from_header(" v5.channel.k8s.io"),
            Some(Protocol::V5)
        );
    }
}
