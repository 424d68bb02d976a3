//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! A block is `count:32 (name_len:32 name value_len:32 value)*`; names are
//! lowercase; several values of one name are joined with NUL (Go's
//! `http.Header` on the wire). Each direction of a session has ONE zlib
//! context for all of its blocks, primed with the SPDY/3 dictionary
//! ([`DICTIONARY`]) and flushed with `Z_SYNC_FLUSH` after every block, as
//! `golang.org/x/net/spdy` (vendored by `moby/spdystream`) does. So blocks
//! must be decoded in the order their frames arrive, and a block that
//! fails to decode breaks the session (the context is lost).
//!
//! Guarantees: decoding never panics; a block inflating to more than
//! [`MAX_BLOCK`] bytes or with lengths past its end is a [`HeaderError`].

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Largest decompressed header block accepted.
pub const MAX_BLOCK: usize = 256 * 1024;

/// The SPDY/3 header compression dictionary (draft 3 §2.6.10.1; 1423
/// bytes, adler32 `0xe3c6a7c2`).
pub const DICTIONARY: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\
    \x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-l\
    anguage\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorizatio\
    n\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10cont\
    ent-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10co\
    ntent-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0cconten\
    t-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04h\
    ost\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\
    \x08if-range\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08loc\
    ation\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\
    \x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\
    \x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgra\
    de\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authen\
    ticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\
    \x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\
    \x00\x00\x06origin10010120120220520630030230330430530630740240540\
    6407408409410411412413414415416417502504505203 Non-Autho\
    ritative Information204 No Content301 Moved Permanently4\
    00 Bad Request401 Unauthorized403 Forbidden404 Not Found\
    500 Internal Server Error501 Not Implemented503 Service \
    UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov \
    Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunk\
    ed,text/html,image/png,image/jpg,image/gif,application/x\
    ml,application/xhtml+xml,text/plain,text/javascript,publ\
    icprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=i\
    so-8859-1,utf-,*,enq=0.";

/// A header block: (lowercase name, value) pairs in wire order; a value
/// may hold several NUL-separated values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.split('\0').next())
    }

    pub fn insert(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// The uncompressed wire form.
    pub fn to_block(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (n, v) in &self.0 {
            let n = n.to_ascii_lowercase();
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block.
    pub fn from_block(b: &[u8]) -> Result<Headers, HeaderError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], HeaderError> {
            let s = at
                .checked_add(n)
                .and_then(|end| b.get(at..end))
                .ok_or(HeaderError::Truncated)?;
            at += n;
            Ok(s)
        };
        let word = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
        let count = word(take(4)?);
        let mut pairs = Vec::new();
        for _ in 0..count {
            let len = word(take(4)?);
            let name = String::from_utf8(take(len)?.to_vec()).map_err(|_| HeaderError::Utf8)?;
            let len = word(take(4)?);
            let value = String::from_utf8(take(len)?.to_vec()).map_err(|_| HeaderError::Utf8)?;
            pairs.push((name.to_ascii_lowercase(), value));
        }
        Ok(Headers(pairs))
    }
}

/// A header block that cannot be (de)compressed or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header block is truncated")]
    Truncated,
    #[error("header name or value is not utf-8")]
    Utf8,
    #[error("header block inflates past {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("header block needs an unknown zlib dictionary {0:#x}")]
    Dictionary(u32),
    #[error("zlib: {0}")]
    Zlib(String),
}

/// The compressing side of one direction.
pub struct Deflater {
    z: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    pub fn new() -> Result<Deflater, HeaderError> {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY)
            .map_err(|e| HeaderError::Zlib(e.to_string()))?;
        Ok(Deflater { z })
    }

    /// Compresses `h` as the next block of this context.
    pub fn compress(&mut self, h: &Headers) -> Result<Vec<u8>, HeaderError> {
        let input = h.to_block();
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut fed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.z.total_in();
            let st = self
                .z
                .compress_vec(&input[fed..], &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Zlib(e.to_string()))?;
            fed += usize::try_from(self.z.total_in() - before).unwrap_or(usize::MAX);
            // Done when all input is in and the flush left spare room.
            if fed >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if st == Status::StreamEnd {
                return Err(HeaderError::Zlib("stream ended".into()));
            }
        }
    }
}

/// The decompressing side of one direction.
pub struct Inflater {
    z: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Inflater {
        Inflater::new()
    }
}

/// Adler-32 of [`DICTIONARY`], the id a zlib stream names it by.
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            z: Decompress::new(true),
        }
    }

    /// Decompresses and parses the next block of this context.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut fed = 0usize;
        loop {
            if out.len() > MAX_BLOCK {
                return Err(HeaderError::TooLarge);
            }
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.z.total_in();
            let produced = out.len();
            let res = self
                .z
                .decompress_vec(&block[fed..], &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.z.total_in() - before).unwrap_or(usize::MAX);
            fed = fed.saturating_add(used);
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if fed >= block.len() && out.len() < out.capacity() {
                        break;
                    }
                    if used == 0 && out.len() == produced {
                        return Err(HeaderError::Truncated);
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.z
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| HeaderError::Zlib(e.to_string()))?;
                    }
                    Some(other) => return Err(HeaderError::Dictionary(other)),
                    None => return Err(HeaderError::Zlib(e.to_string())),
                },
            }
        }
        Headers::from_block(&out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn pf(kind: &str) -> Headers {
        let mut h = Headers::default();
        h.insert("streamtype", kind);
        h.insert("port", "8080");
        h.insert("requestid", "0");
        h
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b",utf-,*,enq=0."));
        // zlib names the dictionary by its adler32 in the stream header.
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY).unwrap();
        let mut out = Vec::with_capacity(64);
        z.compress_vec(b"x", &mut out, FlushCompress::Sync).unwrap();
        assert_eq!(&out[2..6], &DICTIONARY_ID.to_be_bytes());
    }

    /// Two consecutive blocks produced by C zlib (level 9, SPDY/3
    /// dictionary, Z_SYNC_FLUSH: what Go's framer emits) for kubectl's
    /// port-forward error and data streams. The second only decodes with the
    /// context the first left behind.
    #[test]
    fn decodes_blocks_from_another_zlib() {
        let b1: &[u8] = b"x\xf9\xe3\xc6\xa7\xc2\x02%:p:+)JM\xcc\x85\x16%\xac\xa9\xa0\x80\x86\x14\xcbE\xe0\x1c`a`a\x00\xa49\x8b \xd1\x98\x09J\xde\x8c\x06\x00\x00\x00\x00\xff\xff";
        let b2: &[u8] = b"\xc2\xaa\x19T\x0e%\x12\xd6\x0b\x00\x00\x00\xff\xff";
        let mut inf = Inflater::new();
        assert_eq!(inf.decompress(b1).unwrap(), pf("error"));
        let h = inf.decompress(b2).unwrap();
        assert_eq!(h, pf("data"));
        assert_eq!(h.get("StreamType"), Some("data"));
        // Out of order (fresh context): fails, does not panic.
        assert!(Inflater::new().decompress(b2).is_err());
    }

    #[test]
    fn round_trip_shares_one_context() {
        let mut def = Deflater::new().unwrap();
        let mut inf = Inflater::new();
        for i in 0..50 {
            let mut h = pf(if i % 2 == 0 { "error" } else { "data" });
            h.insert("x-multi", "a\0b");
            let block = def.compress(&h).unwrap();
            assert!(block.ends_with(b"\x00\x00\xff\xff"), "sync flush");
            assert_eq!(inf.decompress(&block).unwrap(), h);
        }
        let big = Headers(vec![("big".into(), "v".repeat(100_000))]);
        let block = def.compress(&big).unwrap();
        assert_eq!(inf.decompress(&block).unwrap(), big);
    }

    #[test]
    fn bad_blocks_are_errors() {
        assert!(Inflater::new().decompress(b"garbage!").is_err());
        assert!(Headers::from_block(b"\x00\x00\x00\x01\x00\x00\x00\x09ab").is_err());
        assert!(Headers::from_block(b"\xff\xff\xff\xff").is_err());
        // A bomb: 1 MiB of zeros in one header value.
        let bomb = Headers(vec![("z".into(), "\0".repeat(1 << 20))]);
        let block = Deflater::new().unwrap().compress(&bomb).unwrap();
        assert_eq!(
            Inflater::new().decompress(&block),
            Err(HeaderError::TooLarge)
        );
    }
}
