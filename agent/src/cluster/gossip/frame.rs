//! The plaintext inside a sealed datagram: one kind byte, then the body.
//!
//! - `0` foca: the body is a foca packet, handed to foca unchanged;
//! - `1` meta request: postcard `SocketAddr` to reply to with our record;
//! - `2` meta: a postcard [`MetaRecord`] sent directly to one peer;
//! - `3` leave: postcard `(name, boot)` announcing a graceful leave;
//! - `4` downs: postcard `Vec<DownNotice>`, recent failure verdicts
//!   ([`super::downs`]). Members older than this kind drop it as unknown
//!   (counted, harmless): they just miss the anti-entropy.
//!
//! Decoding is total: unknown kinds and malformed bodies are
//! [`FrameError`]s, never panics.

use std::net::SocketAddr;

use super::downs::DownNotice;
use super::meta::{MetaError, MetaRecord};

const KIND_FOCA: u8 = 0;
const KIND_META_REQUEST: u8 = 1;
const KIND_META: u8 = 2;
const KIND_LEAVE: u8 = 3;
const KIND_DOWNS: u8 = 4;

/// A decoded frame; foca data borrows from the datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Foca(&'a [u8]),
    MetaRequest { reply_to: SocketAddr },
    Meta(MetaRecord),
    Leave { name: String, boot: u64 },
    Downs(Vec<DownNotice>),
}

/// Why a frame did not decode.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed frame body: {0}")]
    Body(postcard::Error),
    #[error("frame does not encode: {0}")]
    Encode(postcard::Error),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl Frame<'_> {
    /// Encodes the frame into a new buffer.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        match self {
            Frame::Foca(data) => {
                out.reserve(data.len() + 1);
                out.push(KIND_FOCA);
                out.extend_from_slice(data);
            }
            Frame::MetaRequest { reply_to } => {
                out.push(KIND_META_REQUEST);
                out = postcard::to_extend(reply_to, out).map_err(FrameError::Encode)?;
            }
            Frame::Meta(record) => {
                out.push(KIND_META);
                out.extend_from_slice(&record.encode()?);
            }
            Frame::Leave { name, boot } => {
                out.push(KIND_LEAVE);
                out = postcard::to_extend(&(name, boot), out).map_err(FrameError::Encode)?;
            }
            Frame::Downs(downs) => {
                out.push(KIND_DOWNS);
                out = postcard::to_extend(downs, out).map_err(FrameError::Encode)?;
            }
        }
        Ok(out)
    }

    /// Decodes a frame from an opened datagram.
    pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
        let (&kind, body) = bytes.split_first().ok_or(FrameError::Empty)?;
        match kind {
            KIND_FOCA => Ok(Frame::Foca(body)),
            KIND_META_REQUEST => Ok(Frame::MetaRequest {
                reply_to: postcard::from_bytes(body).map_err(FrameError::Body)?,
            }),
            KIND_META => Ok(Frame::Meta(MetaRecord::decode(body)?)),
            KIND_LEAVE => {
                let (name, boot) = postcard::from_bytes(body).map_err(FrameError::Body)?;
                Ok(Frame::Leave { name, boot })
            }
            KIND_DOWNS => Ok(Frame::Downs(
                postcard::from_bytes(body).map_err(FrameError::Body)?,
            )),
            other => Err(FrameError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::gossip::meta::NodeMeta;

    #[test]
    fn frames_round_trip() {
        let record = MetaRecord {
            name: "n".into(),
            boot: 9,
            version: 2,
            meta: NodeMeta {
                name: "n".into(),
                ..NodeMeta::default()
            },
        };
        let frames = [
            Frame::Foca(b"abc"),
            Frame::MetaRequest {
                reply_to: "127.0.0.1:7946".parse().unwrap(),
            },
            Frame::Meta(record),
            Frame::Leave {
                name: "n".into(),
                boot: 5,
            },
            Frame::Downs(vec![DownNotice {
                id: crate::cluster::gossip::NodeId::with_boot(
                    "d",
                    "127.0.0.1:7946".parse().unwrap(),
                    3,
                ),
                left: true,
            }]),
        ];
        for f in frames {
            let bytes = f.encode().unwrap();
            assert_eq!(Frame::decode(&bytes).unwrap(), f);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(Frame::decode(&[]), Err(FrameError::Empty)));
        assert!(matches!(
            Frame::decode(&[9, 1]),
            Err(FrameError::UnknownKind(9))
        ));
        assert!(matches!(Frame::decode(&[1]), Err(FrameError::Body(_))));
        assert!(matches!(
            Frame::decode(&[2, 0xff, 0xff]),
            Err(FrameError::Meta(_))
        ));
        assert!(matches!(Frame::decode(&[3, 200]), Err(FrameError::Body(_))));
        assert!(matches!(
            Frame::decode(&[4, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(FrameError::Body(_))
        ));
    }
}
