//! SPDY/3.1 flow-control windows (draft 3.1 §2.6.8), per stream and for
//! the session (stream id 0), both starting at [`INITIAL_WINDOW`].
//!
//! [`RecvWindow`] is the receiver's view: data consumes it, and once half
//! of it is consumed [`RecvWindow::consume`] returns the WINDOW_UPDATE delta
//! to send, which restores it. With `strict`, data past the window is a
//! [`FlowError`] (the caller resets the stream with FLOW_CONTROL_ERROR).
//!
//! Go's `moby/spdystream`, the client kubectl uses, ignores WINDOW_UPDATE
//! and never sends one, so the session neither tracks nor waits for the
//! peer's window (a writer honouring it would stall after 64 KiB) and
//! enforces receive windows only when asked; it always sends the updates,
//! so that a client that does flow control keeps going.

/// The initial window of a stream and of the session.
pub const INITIAL_WINDOW: u32 = 64 * 1024;

/// Data beyond the receive window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer sent {len} bytes into a window of {window}")]
pub struct FlowError {
    pub len: usize,
    pub window: i64,
}

/// What this side still accepts.
#[derive(Debug, Clone, Copy)]
pub struct RecvWindow {
    size: u32,
    window: i64,
    strict: bool,
}

impl RecvWindow {
    pub fn new(size: u32, strict: bool) -> RecvWindow {
        RecvWindow {
            size,
            window: i64::from(size),
            strict,
        }
    }

    /// Accounts `len` received bytes; returns the WINDOW_UPDATE delta to
    /// send now, if any.
    pub fn consume(&mut self, len: usize) -> Result<Option<u32>, FlowError> {
        let n = i64::try_from(len).unwrap_or(i64::MAX);
        if self.strict && n > self.window {
            return Err(FlowError {
                len,
                window: self.window,
            });
        }
        self.window -= n;
        let full = i64::from(self.size);
        if self.window <= full / 2 {
            let delta = u32::try_from(full - self.window).unwrap_or(0x7fff_ffff);
            self.window = full;
            return Ok(Some(delta.min(0x7fff_ffff)));
        }
        Ok(None)
    }

    pub fn available(&self) -> i64 {
        self.window
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn receive_window_updates_at_half() {
        let mut w = RecvWindow::new(INITIAL_WINDOW, true);
        assert_eq!(w.consume(16 * 1024).unwrap(), None);
        assert_eq!(w.consume(16 * 1024).unwrap(), Some(32 * 1024));
        assert_eq!(w.available(), i64::from(INITIAL_WINDOW));
        assert_eq!(w.consume(0).unwrap(), None);
    }

    #[test]
    fn strict_window_rejects_overflow() {
        let mut w = RecvWindow::new(1000, true);
        assert!(w.consume(1001).is_err());
        assert_eq!(w.available(), 1000, "a rejected frame is not accounted");
        let mut lax = RecvWindow::new(1000, false);
        assert_eq!(lax.consume(5000).unwrap(), Some(5000));
    }
}
