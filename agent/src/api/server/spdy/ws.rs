//! A WebSocket as a byte stream: binary messages in ⇄ bytes out, as
//! client-go's `TunnelingConnection` frames the SPDY session it tunnels
//! (subprotocol `SPDY/3.1+portforward.k8s.io`; no channel byte).
//!
//! Reads return the payloads of binary messages in order (text messages
//! are skipped; pings are answered by the WebSocket layer) and EOF on a
//! close message or the end of the socket. Each write sends one binary
//! message; `shutdown` closes the WebSocket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// [`WebSocket`] as `AsyncRead + AsyncWrite`.
#[derive(Debug)]
pub struct WsIo {
    ws: WebSocket,
    pending: Bytes,
    eof: bool,
}

impl WsIo {
    pub fn new(ws: WebSocket) -> WsIo {
        WsIo {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn ws_err(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for WsIo {
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
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_err)?;
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_err)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_err)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(ws_err)
    }
}
