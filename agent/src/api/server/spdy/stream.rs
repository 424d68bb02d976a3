//! One SPDY stream as an async byte stream ([`AsyncRead`] + [`AsyncWrite`]).
//!
//! Reads return the peer's data frames in order, then EOF when the peer
//! half-closes (FIN), or `ConnectionReset` when it resets the stream or
//! the session dies. Writes become data frames of at most [`MAX_CHUNK`]
//! bytes; they wait while the session already holds its budget of unsent
//! bytes (backpressure), and fail with `BrokenPipe` once the session is
//! gone. `shutdown` half-closes (an empty data frame with FIN), as
//! spdystream's `Close` does. A SYN_REPLY with no headers is sent before
//! the first data frame if [`Stream::reply`] was not called. Dropping a
//! stream half-closes it if that has not been done.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, mpsc};

use super::frame::Frame;
use super::headers::Headers;

/// Largest data frame written.
pub const MAX_CHUNK: usize = 32 * 1024;

/// What streams and the reader ask the writer task to send.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(Frame),
    Reply {
        stream_id: u32,
        headers: Headers,
        fin: bool,
    },
    Data {
        stream_id: u32,
        data: Bytes,
        fin: bool,
        /// Returned to the session budget once written.
        permit: Option<OwnedSemaphorePermit>,
    },
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A client-initiated stream, as [`super::Session::accept`] hands it out.
pub struct Stream {
    id: u32,
    headers: Headers,
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
    reset: Arc<AtomicBool>,
    out: mpsc::UnboundedSender<Out>,
    budget: Arc<Semaphore>,
    acquiring: Option<(usize, Acquire)>,
    replied: bool,
    fin_sent: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .field("replied", &self.replied)
            .field("fin_sent", &self.fin_sent)
            .finish_non_exhaustive()
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "spdy session closed")
}

impl Stream {
    pub(crate) fn new(
        id: u32,
        headers: Headers,
        rx: mpsc::Receiver<Bytes>,
        reset: Arc<AtomicBool>,
        out: mpsc::UnboundedSender<Out>,
        budget: Arc<Semaphore>,
        half_closed_local: bool,
    ) -> Stream {
        Stream {
            id,
            headers,
            rx,
            pending: Bytes::new(),
            reset,
            out,
            budget,
            acquiring: None,
            replied: false,
            fin_sent: half_closed_local,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The SYN_STREAM's headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Sends the SYN_REPLY (once; later calls do nothing).
    pub fn reply(&mut self, headers: Headers) -> io::Result<()> {
        if self.replied {
            return Ok(());
        }
        self.replied = true;
        self.out
            .send(Out::Reply {
                stream_id: self.id,
                headers,
                fin: false,
            })
            .map_err(|_| gone())
    }

    /// Resets the stream (RST_STREAM with `status`, e.g. [`super::frame::rst::CANCEL`]);
    /// nothing more is sent on it.
    pub fn reset(&mut self, status: u32) {
        self.fin_sent = true;
        self.reset.store(true, Ordering::SeqCst);
        let _ = self.out.send(Out::Frame(Frame::RstStream {
            stream_id: self.id,
            status,
        }));
    }

    /// True once the peer reset the stream or the session ended abruptly.
    pub fn is_reset(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }

    fn fin(&mut self) -> io::Result<()> {
        if self.fin_sent {
            return Ok(());
        }
        self.reply(Headers::default())?;
        self.fin_sent = true;
        self.out
            .send(Out::Data {
                stream_id: self.id,
                data: Bytes::new(),
                fin: true,
                permit: None,
            })
            .map_err(|_| gone())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(b) => this.pending = b,
                None if this.reset.load(Ordering::SeqCst) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("spdy stream {} was reset", this.id),
                    )));
                }
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reset.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("spdy stream {} was reset", this.id),
            )));
        }
        if this.fin_sent {
            return Poll::Ready(Err(gone()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let (want, fut) = this.acquiring.get_or_insert_with(|| {
            let n = buf.len().min(MAX_CHUNK);
            // n <= MAX_CHUNK fits in u32.
            let fut: Acquire = Box::pin(this.budget.clone().acquire_many_owned(n as u32));
            (n, fut)
        });
        let want = *want;
        let permit = ready!(fut.as_mut().poll(cx));
        this.acquiring = None;
        let permit = permit.map_err(|_| gone())?;
        this.reply(Headers::default())?;
        let n = want.min(buf.len());
        this.out
            .send(Out::Data {
                stream_id: this.id,
                data: Bytes::copy_from_slice(&buf[..n]),
                fin: false,
                permit: Some(permit),
            })
            .map_err(|_| gone())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().fin())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.fin_sent && !self.reset.load(Ordering::SeqCst) {
            let _ = self.fin();
        }
    }
}
