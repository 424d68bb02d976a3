//! SPDY/3 frames on the wire (draft 3.1, as Go's `golang.org/x/net/spdy` and
//! `moby/spdystream` frame them).
//!
//! Control frames: `1 | version:15 | type:16 | flags:8 | length:24 | body`;
//! data frames: `0 | stream:31 | flags:8 | length:24 | data`. Header blocks
//! stay compressed here ([`Frame::SynStream`] etc. carry the raw block); the
//! session decompresses them with its one per-direction context
//! ([`super::headers`]) in frame order.
//!
//! Guarantees: [`decode`] never panics on any input; it returns `Ok(None)`
//! for an incomplete frame, a [`FrameError`] for a frame that can never be
//! valid (wrong version, bad length, stream id 0 where one is required), and
//! [`Frame::Unknown`] for unknown control types (the draft says to ignore
//! them). Control frames are limited to [`MAX_CONTROL_LEN`].

use bytes::{BufMut, Bytes, BytesMut};

/// The only version spoken.
pub const VERSION: u16 = 3;
/// FIN on SYN_STREAM, SYN_REPLY, HEADERS and data frames.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Largest control frame accepted (header blocks are small; the wire
/// allows 16 MiB).
pub const MAX_CONTROL_LEN: usize = 1 << 20;
/// Largest data payload in one frame (24-bit length).
pub const MAX_DATA_LEN: usize = (1 << 24) - 1;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (draft 3.1 §2.4.2).
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

/// The SETTINGS id of the initial stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One frame. Header blocks (`block`) are still compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this implementation does not know; ignored.
    Unknown {
        kind: u16,
    },
}

/// A frame that is not valid SPDY/3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unsupported spdy version {0}")]
    Version(u16),
    #[error("control frame type {kind} has invalid length {len}")]
    Length { kind: u16, len: usize },
    #[error("control frame of {len} bytes is over the {MAX_CONTROL_LEN} byte limit")]
    TooLarge { len: usize },
    #[error("frame type {kind} with stream id 0")]
    ZeroStream { kind: u16 },
    #[error("frame to encode is invalid: {0}")]
    Encode(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

/// Decodes the first frame of `buf`: `Ok(Some((frame, consumed)))`, or
/// `Ok(None)` when `buf` does not yet hold a whole frame.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let first = u32_at(buf, 0);
    let second = u32_at(buf, 4);
    let flags = (second >> 24) as u8;
    let len = (second & 0x00ff_ffff) as usize;
    let control = first & 0x8000_0000 != 0;
    if control && len > MAX_CONTROL_LEN {
        return Err(FrameError::TooLarge { len });
    }
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let body = &buf[8..8 + len];
    let total = 8 + len;
    if !control {
        let stream_id = first & 0x7fff_ffff;
        if stream_id == 0 {
            return Err(FrameError::ZeroStream { kind: 0 });
        }
        let data = Bytes::copy_from_slice(body);
        return Ok(Some((
            Frame::Data {
                stream_id,
                flags,
                data,
            },
            total,
        )));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = (first & 0xffff) as u16;
    let bad_len = || FrameError::Length { kind, len };
    let sid = |at: usize| u32_at(body, at) & 0x7fff_ffff;
    let frame = match kind {
        SYN_STREAM => {
            if len < 10 {
                return Err(bad_len());
            }
            Frame::SynStream {
                stream_id: sid(0),
                associated_to: sid(4),
                priority: body[8] >> 5,
                slot: body[9],
                flags,
                block: Bytes::copy_from_slice(&body[10..]),
            }
        }
        SYN_REPLY | HEADERS => {
            if len < 4 {
                return Err(bad_len());
            }
            let stream_id = sid(0);
            let block = Bytes::copy_from_slice(&body[4..]);
            if kind == SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    block,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    block,
                }
            }
        }
        RST_STREAM => {
            if len != 8 {
                return Err(bad_len());
            }
            Frame::RstStream {
                stream_id: sid(0),
                status: u32_at(body, 4),
            }
        }
        SETTINGS => {
            if len < 4 {
                return Err(bad_len());
            }
            let n = u32_at(body, 0) as usize;
            if n.checked_mul(8).and_then(|b| b.checked_add(4)) != Some(len) {
                return Err(bad_len());
            }
            let entries = (0..n)
                .map(|i| {
                    let at = 4 + i * 8;
                    let id = u32_at(body, at);
                    ((id >> 24) as u8, id & 0x00ff_ffff, u32_at(body, at + 4))
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        PING => {
            if len != 4 {
                return Err(bad_len());
            }
            Frame::Ping {
                id: u32_at(body, 0),
            }
        }
        GOAWAY => {
            if len != 8 {
                return Err(bad_len());
            }
            Frame::GoAway {
                last_good_stream_id: sid(0),
                status: u32_at(body, 4),
            }
        }
        WINDOW_UPDATE => {
            if len != 8 {
                return Err(bad_len());
            }
            Frame::WindowUpdate {
                stream_id: sid(0),
                delta: u32_at(body, 4) & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { kind: other },
    };
    match &frame {
        Frame::SynStream { stream_id: 0, .. }
        | Frame::SynReply { stream_id: 0, .. }
        | Frame::Headers { stream_id: 0, .. }
        | Frame::RstStream { stream_id: 0, .. } => Err(FrameError::ZeroStream { kind }),
        _ => Ok(Some((frame, total))),
    }
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_CONTROL_LEN {
        return Err(FrameError::Encode("control frame too large"));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | len as u32);
    Ok(())
}

impl Frame {
    /// Appends the frame's wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                block,
            } => {
                control_header(out, SYN_STREAM, *flags, 10 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(associated_to & 0x7fff_ffff);
                out.put_u8(priority << 5);
                out.put_u8(*slot);
                out.put_slice(block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                block,
            } => {
                control_header(out, SYN_REPLY, *flags, 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(block);
            }
            Frame::Headers {
                stream_id,
                flags,
                block,
            } => {
                control_header(out, HEADERS, *flags, 4 + block.len())?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_slice(block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_header(out, SETTINGS, *flags, 4 + entries.len() * 8)?;
                out.put_u32(entries.len() as u32);
                for (f, id, value) in entries {
                    out.put_u32((u32::from(*f) << 24) | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_DATA_LEN || *stream_id == 0 {
                    return Err(FrameError::Encode("data frame too large or on stream 0"));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::Unknown { .. } => return Err(FrameError::Encode("unknown frame")),
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut out = BytesMut::new();
        f.encode(&mut out).unwrap();
        let (back, used) = decode(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(back, f);
        // Every strict prefix is incomplete, never an error or a panic.
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]).unwrap(), None, "prefix {cut}");
        }
    }

    #[test]
    fn frames_round_trip() {
        let block = Bytes::from_static(b"\x78\xbb compressed");
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 2,
            slot: 0,
            flags: FLAG_FIN,
            block: block.clone(),
        });
        round_trip(Frame::SynReply {
            stream_id: 3,
            flags: 0,
            block: block.clone(),
        });
        round_trip(Frame::Headers {
            stream_id: 5,
            flags: FLAG_FIN,
            block,
        });
        round_trip(Frame::RstStream {
            stream_id: 7,
            status: rst::CANCEL,
        });
        round_trip(Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)],
        });
        round_trip(Frame::Ping { id: 1 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: goaway::OK,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 0,
            delta: 65536,
        });
        round_trip(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        });
        round_trip(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::new(),
        });
    }

    #[test]
    fn wire_layout_matches_the_draft() {
        let mut out = BytesMut::new();
        Frame::Ping { id: 0x0102_0304 }.encode(&mut out).unwrap();
        assert_eq!(
            &out[..],
            b"\x80\x03\x00\x06\x00\x00\x00\x04\x01\x02\x03\x04"
        );
        let mut out = BytesMut::new();
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x03\x01\x00\x00\x02ab");
    }

    #[test]
    fn bad_frames_are_errors() {
        // SPDY/2
        assert_eq!(
            decode(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"),
            Err(FrameError::Version(2))
        );
        // PING with 3 bytes
        assert!(matches!(
            decode(b"\x80\x03\x00\x06\x00\x00\x00\x03\x00\x00\x01"),
            Err(FrameError::Length { kind: 6, len: 3 })
        ));
        // data on stream 0
        assert!(decode(b"\x00\x00\x00\x00\x00\x00\x00\x00").is_err());
        // SYN_STREAM on stream 0
        let mut out = BytesMut::new();
        out.put_slice(b"\x80\x03\x00\x01\x00\x00\x00\x0a");
        out.put_slice(&[0; 10]);
        assert!(decode(&out).is_err());
        // control frame announcing 16 MiB
        assert!(matches!(
            decode(b"\x80\x03\x00\x01\x00\xff\xff\xff"),
            Err(FrameError::TooLarge { .. })
        ));
        // settings count disagrees with the length
        assert!(decode(b"\x80\x03\x00\x04\x00\x00\x00\x04\x00\x00\x00\x05").is_err());
        // unknown control type: skipped, not an error
        assert_eq!(
            decode(b"\x80\x03\x00\x0a\x00\x00\x00\x01\xff").unwrap(),
            Some((Frame::Unknown { kind: 10 }, 9))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                buf.push(seed as u8);
            }
            let _ = decode(&buf);
        }
    }
}
