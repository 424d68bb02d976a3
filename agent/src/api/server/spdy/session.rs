//! The server side of a SPDY/3.1 session over any `AsyncRead + AsyncWrite`
//! (a raw upgraded HTTP connection or a WebSocket tunnel, [`super::ws`]).
//!
//! Two tasks run per session. The reader decodes frames in order (so the
//! one inbound header context stays in sync), accepts client-initiated
//! streams (odd ids, increasing) and hands them out through
//! [`Session::accept`], routes data to them, answers PINGs, sends
//! WINDOW_UPDATEs ([`super::flow`]) and honours RST_STREAM and GOAWAY. The
//! writer owns the outbound header context and writes everything the
//! streams and the reader queue, in queue order (a stream's SYN_REPLY is
//! always before its data).
//!
//! Errors: a frame that is not SPDY/3 or a header block that does not
//! decode ends the session with GOAWAY(PROTOCOL_ERROR) and
//! [`SpdyError`] from [`Session::finish`]; a bad stream id, data past a
//! strict window or data for an unknown stream only resets that stream.
//! Never panics on input.
//!
//! Backpressure: each stream buffers at most [`Config::stream_buffer`]
//! frames; when that is full the reader waits, stalling the whole session
//! as spdystream itself does (it has no flow control). Outbound, streams
//! hold at most [`Config::out_budget`] unsent bytes between them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::SpdyError;
use super::flow::{INITIAL_WINDOW, RecvWindow};
use super::frame::{self, FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, goaway, rst};
use super::headers::{Deflater, Inflater};
use super::stream::{Out, Stream};

/// Session tunables.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Reset a stream whose peer overruns its receive window.
    pub strict_flow_control: bool,
    /// Data frames buffered per stream before the reader waits.
    pub stream_buffer: usize,
    /// Unsent outbound bytes allowed across all streams.
    pub out_budget: usize,
    /// Accepted streams waiting for [`Session::accept`].
    pub accept_backlog: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            strict_flow_control: false,
            stream_buffer: 16,
            out_budget: 1 << 20,
            accept_backlog: 16,
        }
    }
}

/// A running server session.
#[derive(Debug)]
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    out: mpsc::UnboundedSender<Out>,
    reader: JoinHandle<Result<(), SpdyError>>,
}

impl Session {
    /// Starts serving `io` (spawns the reader and writer tasks).
    pub fn server<T>(io: T, cfg: Config) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (acc_tx, acc_rx) = mpsc::channel(cfg.accept_backlog.max(1));
        tokio::spawn(write_loop(wr, out_rx));
        let reader = Reader {
            cfg,
            streams: HashMap::new(),
            last_id: 0,
            session_window: RecvWindow::new(INITIAL_WINDOW, cfg.strict_flow_control),
            inflater: Inflater::new(),
            accept: Some(acc_tx),
            out: out_tx.clone(),
            budget: Arc::new(Semaphore::new(cfg.out_budget.max(stream_max()))),
        };
        Session {
            incoming: acc_rx,
            out: out_tx,
            reader: tokio::spawn(reader.run(rd)),
        }
    }

    /// The next stream the client opened; None once the client has gone
    /// away (EOF, GOAWAY or a session error).
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Waits for the reader to end; the session's error, if any.
    pub async fn finish(self) -> Result<(), SpdyError> {
        drop(self.incoming);
        drop(self.out);
        match self.reader.await {
            Ok(r) => r,
            Err(e) => Err(SpdyError::Task(e.to_string())),
        }
    }
}

fn stream_max() -> usize {
    super::stream::MAX_CHUNK
}

struct StreamIn {
    tx: mpsc::Sender<Bytes>,
    window: RecvWindow,
    reset: Arc<AtomicBool>,
}

struct Reader {
    cfg: Config,
    streams: HashMap<u32, StreamIn>,
    last_id: u32,
    session_window: RecvWindow,
    inflater: Inflater,
    accept: Option<mpsc::Sender<Stream>>,
    out: mpsc::UnboundedSender<Out>,
    budget: Arc<Semaphore>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut rd: R) -> Result<(), SpdyError> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let result = loop {
            match frame::decode(&buf) {
                Ok(Some((f, used))) => {
                    let _ = buf.split_to(used);
                    if let Err(e) = self.handle(f).await {
                        break Err(e);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => break Err(SpdyError::Frame(e)),
            }
            buf.reserve(16 * 1024);
            match rd.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => break Ok(()),
                Ok(0) => break Err(SpdyError::Truncated(buf.len())),
                Ok(_) => {}
                Err(e) => break Err(SpdyError::Io(e)),
            }
        };
        if let Err(e) = &result {
            if !matches!(e, SpdyError::Io(_) | SpdyError::Truncated(_)) {
                self.send(Frame::GoAway {
                    last_good_stream_id: self.last_id,
                    status: goaway::PROTOCOL_ERROR,
                });
            }
            // Streams still open see a reset, not a clean EOF.
            for s in self.streams.values() {
                s.reset.store(true, Ordering::SeqCst);
            }
        }
        result
    }

    fn send(&self, f: Frame) {
        let _ = self.out.send(Out::Frame(f));
    }

    fn reset(&mut self, stream_id: u32, status: u32) {
        if let Some(s) = self.streams.remove(&stream_id) {
            s.reset.store(true, Ordering::SeqCst);
        }
        self.send(Frame::RstStream { stream_id, status });
    }

    async fn handle(&mut self, f: Frame) -> Result<(), SpdyError> {
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                block,
                ..
            } => {
                // Always decode: the header context must see every block.
                let headers = self.inflater.decompress(&block)?;
                if stream_id % 2 == 0 || stream_id <= self.last_id {
                    self.reset(stream_id, rst::PROTOCOL_ERROR);
                    return Ok(());
                }
                self.last_id = stream_id;
                let Some(accept) = self.accept.clone() else {
                    self.send(Frame::RstStream {
                        stream_id,
                        status: rst::REFUSED_STREAM,
                    });
                    return Ok(());
                };
                let (tx, rx) = mpsc::channel(self.cfg.stream_buffer.max(1));
                let reset = Arc::new(AtomicBool::new(false));
                let stream = Stream::new(
                    stream_id,
                    headers,
                    rx,
                    reset.clone(),
                    self.out.clone(),
                    self.budget.clone(),
                    flags & FLAG_UNIDIRECTIONAL != 0,
                );
                if flags & FLAG_FIN == 0 {
                    self.streams.insert(
                        stream_id,
                        StreamIn {
                            tx,
                            window: RecvWindow::new(INITIAL_WINDOW, self.cfg.strict_flow_control),
                            reset,
                        },
                    );
                }
                if accept.send(stream).await.is_err() {
                    // Nobody accepts any more; the stream was dropped (FIN).
                    self.accept = None;
                    self.streams.remove(&stream_id);
                }
            }
            Frame::SynReply { block, .. } | Frame::Headers { block, .. } => {
                // Only kept in sync: this server opens no streams and has
                // no use for trailing headers.
                self.inflater.decompress(&block)?;
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, .. } => {
                if let Some(s) = self.streams.remove(&stream_id) {
                    s.reset.store(true, Ordering::SeqCst);
                }
            }
            Frame::Ping { id } => {
                // Odd ids are the client's; even ones would be our own.
                if id % 2 == 1 {
                    self.send(Frame::Ping { id });
                }
            }
            Frame::GoAway { .. } => self.accept = None,
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    async fn data(&mut self, stream_id: u32, flags: u8, data: Bytes) {
        match self.session_window.consume(data.len()) {
            Ok(Some(delta)) => self.send(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            }),
            Ok(None) => {}
            Err(_) => {
                self.reset(stream_id, rst::FLOW_CONTROL_ERROR);
                return;
            }
        }
        let Some(s) = self.streams.get_mut(&stream_id) else {
            if stream_id > self.last_id {
                self.send(Frame::RstStream {
                    stream_id,
                    status: rst::INVALID_STREAM,
                });
            }
            // Otherwise data for a stream already finished: dropped, as
            // spdystream does.
            return;
        };
        match s.window.consume(data.len()) {
            Ok(Some(delta)) => self.send(Frame::WindowUpdate { stream_id, delta }),
            Ok(None) => {}
            Err(_) => {
                self.reset(stream_id, rst::FLOW_CONTROL_ERROR);
                return;
            }
        }
        let fin = flags & FLAG_FIN != 0;
        if !data.is_empty()
            && let Some(s) = self.streams.get(&stream_id)
        {
            // A dropped receiver just means nobody reads this stream.
            let _ = s.tx.send(data).await;
        }
        if fin {
            self.streams.remove(&stream_id);
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut deflater = match Deflater::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "spdy: header compressor");
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut permits = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let f = match out {
                Out::Frame(f) => f,
                Out::Reply {
                    stream_id,
                    headers,
                    fin,
                } => match deflater.compress(&headers) {
                    Ok(block) => Frame::SynReply {
                        stream_id,
                        flags: if fin { FLAG_FIN } else { 0 },
                        block: block.into(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "spdy: compressing a reply");
                        return;
                    }
                },
                Out::Data {
                    stream_id,
                    data,
                    fin,
                    permit,
                } => {
                    permits.extend(permit);
                    Frame::Data {
                        stream_id,
                        flags: if fin { FLAG_FIN } else { 0 },
                        data,
                    }
                }
            };
            if let Err(e) = f.encode(&mut buf) {
                tracing::warn!(error = %e, "spdy: encoding a frame");
                return;
            }
            if buf.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&buf).await.and(wr.flush().await).is_err() {
            return;
        }
        buf.clear();
        permits.clear();
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
