//! Streaming answers: watch events, log chunks, the exec WebSocket.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio_tungstenite::WebSocketStream;

use super::channel::Protocol;
use super::client::{ClientError, failure_from_body};
use super::conn::Conn;

/// Watch event types (`metav1.WatchEvent.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

/// One change of a watched object.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub kind: WatchEventType,
    pub object: Value,
}

/// A watch in progress: newline-delimited `{"type","object"}` events.
#[derive(Debug)]
pub struct WatchStream {
    pub(super) body: Incoming,
    pub(super) path: String,
    pub(super) buf: Vec<u8>,
    pub(super) done: bool,
}

impl WatchStream {
    /// The next event; `None` when the server ends the watch. An `ERROR`
    /// event (e.g. 410 Expired) is returned as `ClientError::Api`.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(parse_event(&line, &self.path));
            }
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                let line = std::mem::take(&mut self.buf);
                return Some(parse_event(&line, &self.path));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(ClientError::Http {
                        path: self.path.clone(),
                        source,
                    }));
                }
                None => self.done = true,
            }
        }
    }
}

/// Decodes one watch line.
pub fn parse_event(line: &[u8], path: &str) -> Result<WatchEvent, ClientError> {
    let decode = |source| ClientError::Decode {
        path: path.to_string(),
        source,
    };
    let mut v: Value = serde_json::from_slice(line).map_err(decode)?;
    let object = v["object"].take();
    let kind = match v["type"].as_str().unwrap_or_default() {
        "ADDED" => WatchEventType::Added,
        "MODIFIED" => WatchEventType::Modified,
        "DELETED" => WatchEventType::Deleted,
        "BOOKMARK" => WatchEventType::Bookmark,
        _ => {
            let code = object["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(ClientError::Api(Box::new(failure_from_body(
                code,
                object.to_string().as_bytes(),
            ))));
        }
    };
    Ok(WatchEvent { kind, object })
}

/// A log being streamed.
#[derive(Debug)]
pub struct LogStream {
    pub(super) body: Incoming,
    pub(super) path: String,
}

impl LogStream {
    /// The next chunk of log bytes; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(source) => {
                    return Some(Err(ClientError::Http {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// An exec WebSocket and the subprotocol the server chose.
#[derive(Debug)]
pub struct ExecSession {
    pub ws: WebSocketStream<Conn>,
    pub protocol: Protocol,
}
