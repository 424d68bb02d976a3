//! A SPDY client for tests, written against the frame and header layers
//! (what spdystream does on the client side, minus its goroutines).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::frame::{self, FLAG_FIN, Frame};
use super::headers::{Deflater, Headers, Inflater};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Client {
    pub io: DuplexStream,
    /// How long [`Client::next`] waits for a frame.
    pub wait: Duration,
    def: Deflater,
    inf: Inflater,
    buf: BytesMut,
}

impl Client {
    pub fn new(io: DuplexStream) -> Client {
        Client {
            io,
            wait: WAIT,
            def: Deflater::new().unwrap(),
            inf: Inflater::new(),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, f: Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
    }

    pub async fn syn(&mut self, id: u32, kind: &str, fin: bool) {
        let mut h = Headers::default();
        h.insert("streamtype", kind);
        h.insert("port", "8080");
        self.syn_with(id, &h, fin).await;
    }

    pub async fn syn_with(&mut self, id: u32, h: &Headers, fin: bool) {
        let block = self.def.compress(h).unwrap();
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: if fin { FLAG_FIN } else { 0 },
            block: block.into(),
        })
        .await;
    }

    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// The next frame from the server (None at EOF), with the decoded
    /// headers of a SYN_REPLY.
    pub async fn next(&mut self) -> Option<(Frame, Option<Headers>)> {
        loop {
            if let Some((f, used)) = frame::decode(&self.buf).unwrap() {
                let _ = self.buf.split_to(used);
                let h = match &f {
                    Frame::SynReply { block, .. } => Some(self.inf.decompress(block).unwrap()),
                    _ => None,
                };
                return Some((f, h));
            }
            let n = tokio::time::timeout(self.wait, self.io.read_buf(&mut self.buf))
                .await
                .expect("server frame in time")
                .unwrap();
            if n == 0 {
                return None;
            }
        }
    }

    /// Next frame that is not a WINDOW_UPDATE.
    pub async fn next_non_window(&mut self) -> Option<(Frame, Option<Headers>)> {
        loop {
            match self.next().await? {
                (Frame::WindowUpdate { .. }, _) => {}
                other => return Some(other),
            }
        }
    }
}
