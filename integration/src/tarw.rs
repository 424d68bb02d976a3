//! A small, deterministic ustar/PAX writer.
//!
//! Written by hand (rather than with the `tar` crate) so that the fixtures
//! control every byte: fixed mtimes, uid/gid 0, empty uname/gname, and, for
//! [`crate::hostile`], header fields the `tar` crate refuses to produce.
//!
//! Guarantees: every header produced by [`RawHeader::finish`] carries a
//! correct checksum; [`TarWriter`] emits entries in the order it is called
//! (callers sort), pads data to 512 bytes and ends the archive with two zero
//! blocks. Names longer than 100 bytes are split into ustar `prefix`/`name`
//! when possible, otherwise carried in a PAX `path` record.

use std::io::{self, Read, Write};

use anyhow::{Context, Result, bail};

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// Fixed mtime used by every fixture entry (2024-01-01T00:00:00Z).
pub const MTIME: u64 = 1_704_067_200;

/// Tar entry type flags used by the fixtures.
pub mod kind {
    pub const FILE: u8 = b'0';
    pub const HARDLINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const DIR: u8 = b'5';
    pub const PAX: u8 = b'x';
    pub const GNU_LONGNAME: u8 = b'L';
}

/// One 512-byte header block whose fields are written raw.
///
/// Setters write exactly the bytes given (truncated to the field width), so
/// hostile builders can put in values no well-behaved writer would.
#[derive(Clone, Debug)]
pub struct RawHeader {
    block: [u8; BLOCK],
}

impl Default for RawHeader {
    fn default() -> Self {
        Self::new()
    }
}

impl RawHeader {
    /// A ustar header with magic `ustar\0`, version `00`, mode 0644, uid/gid
    /// 0, size 0, the fixed [`MTIME`] and type regular file.
    pub fn new() -> Self {
        let mut h = Self { block: [0; BLOCK] };
        h.field(257, 6, b"ustar\0");
        h.field(263, 2, b"00");
        h.set_mode(0o644);
        h.octal(108, 8, 0);
        h.octal(116, 8, 0);
        h.octal(124, 12, 0);
        h.octal(136, 12, MTIME);
        h.set_kind(kind::FILE);
        h
    }

    /// Writes `bytes` at `offset`, at most `len` bytes, zero-filling the rest.
    pub fn field(&mut self, offset: usize, len: usize, bytes: &[u8]) -> &mut Self {
        let dst = &mut self.block[offset..offset + len];
        dst.fill(0);
        let n = bytes.len().min(len);
        dst[..n].copy_from_slice(&bytes[..n]);
        self
    }

    /// Writes `value` as zero-padded octal with a trailing NUL.
    pub fn octal(&mut self, offset: usize, len: usize, value: u64) -> &mut Self {
        let s = format!("{value:0width$o}", width = len - 1);
        self.field(offset, len, s.as_bytes())
    }

    pub fn set_name(&mut self, name: &[u8]) -> &mut Self {
        self.field(0, 100, name)
    }

    pub fn set_prefix(&mut self, prefix: &[u8]) -> &mut Self {
        self.field(345, 155, prefix)
    }

    pub fn set_mode(&mut self, mode: u32) -> &mut Self {
        self.octal(100, 8, u64::from(mode))
    }

    pub fn set_size(&mut self, size: u64) -> &mut Self {
        self.octal(124, 12, size)
    }

    /// Size in GNU base-256 form (first byte 0x80, big-endian value), the
    /// encoding used for sizes that do not fit 11 octal digits.
    pub fn set_size_base256(&mut self, size: u64) -> &mut Self {
        let mut raw = [0u8; 12];
        raw[0] = 0x80;
        raw[4..].copy_from_slice(&size.to_be_bytes());
        self.field(124, 12, &raw)
    }

    pub fn set_kind(&mut self, kind: u8) -> &mut Self {
        self.block[156] = kind;
        self
    }

    pub fn set_linkname(&mut self, target: &[u8]) -> &mut Self {
        self.field(157, 100, target)
    }

    /// Computes and stores the checksum; returns the finished block.
    pub fn finish(&mut self) -> [u8; BLOCK] {
        self.block[148..156].fill(b' ');
        let sum: u32 = self.block.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        self.block[148..156].copy_from_slice(s.as_bytes());
        self.block
    }
}

/// Zero bytes needed to pad `len` up to a block boundary.
pub fn padding(len: u64) -> usize {
    let rem = (len % BLOCK as u64) as usize;
    if rem == 0 { 0 } else { BLOCK - rem }
}

/// Encodes PAX records (`"<len> <key>=<value>\n"`).
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        // The length prefix counts its own digits.
        let mut total = body + 1;
        while total != body + total.to_string().len() {
            total = body + total.to_string().len();
        }
        out.extend_from_slice(format!("{total} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// Metadata of one entry written by [`TarWriter`].
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    pub path: &'a str,
    pub kind: u8,
    pub mode: u32,
    pub link: &'a str,
    /// Extra PAX records (e.g. `SCHILY.xattr.user.herd`).
    pub pax: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Entry<'a> {
    pub fn file(path: &'a str, mode: u32) -> Self {
        Self {
            path,
            kind: kind::FILE,
            mode,
            link: "",
            pax: Vec::new(),
        }
    }
    pub fn dir(path: &'a str, mode: u32) -> Self {
        Self {
            path,
            kind: kind::DIR,
            mode,
            link: "",
            pax: Vec::new(),
        }
    }
    pub fn symlink(path: &'a str, target: &'a str) -> Self {
        Self {
            path,
            kind: kind::SYMLINK,
            mode: 0o777,
            link: target,
            pax: Vec::new(),
        }
    }
    pub fn hardlink(path: &'a str, target: &'a str) -> Self {
        Self {
            path,
            kind: kind::HARDLINK,
            mode: 0o644,
            link: target,
            pax: Vec::new(),
        }
    }
}

/// Streams a tar archive into `W`.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Writes an entry without data (directory, link, empty file).
    pub fn entry(&mut self, e: &Entry<'_>) -> Result<()> {
        self.entry_with_data(e, 0, &mut io::empty())
    }

    /// Writes an entry whose data is `data`.
    pub fn file(&mut self, e: &Entry<'_>, data: &[u8]) -> Result<()> {
        self.entry_with_data(e, data.len() as u64, &mut &data[..])
    }

    /// Writes an entry whose `size` bytes of data are read from `data`.
    pub fn entry_with_data(&mut self, e: &Entry<'_>, size: u64, data: &mut dyn Read) -> Result<()> {
        let mut h = RawHeader::new();
        let mut pax: Vec<(&str, &[u8])> = e.pax.clone();
        let path = e.path.as_bytes();
        if path.len() <= 100 {
            h.set_name(path);
        } else if let Some((prefix, name)) = split_ustar(e.path) {
            h.set_prefix(prefix.as_bytes()).set_name(name.as_bytes());
        } else {
            pax.push(("path", path));
            h.set_name(&path[..100]);
        }
        if e.link.len() > 100 {
            pax.push(("linkpath", e.link.as_bytes()));
        }
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let mut ph = RawHeader::new();
            ph.set_name(b"PaxHeaders/entry")
                .set_kind(kind::PAX)
                .set_size(records.len() as u64);
            self.raw(&ph.finish())?;
            self.raw(&records)?;
            self.pad(records.len() as u64)?;
        }
        h.set_mode(e.mode)
            .set_kind(e.kind)
            .set_size(size)
            .set_linkname(e.link.as_bytes());
        self.raw(&h.finish())?;
        let copied = io::copy(&mut data.take(size), &mut self.out).context("writing tar data")?;
        if copied != size {
            bail!(
                "entry {}: expected {size} bytes of data, got {copied}",
                e.path
            );
        }
        self.pad(size)
    }

    /// Writes raw bytes (callers keep block alignment).
    pub fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).context("writing tar stream")
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        self.raw(&[0u8; BLOCK][..padding(len)])
    }

    /// Writes the two zero end blocks and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.raw(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

fn split_ustar(path: &str) -> Option<(&str, &str)> {
    path.char_indices()
        .filter(|(_, c)| *c == '/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(p, n)| p.len() <= 155 && n.len() <= 100 && !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_length_counts_itself() {
        let r = pax_records(&[("path", b"abcdef")]);
        assert_eq!(r, b"15 path=abcdef\n");
        let long = vec![b'a'; 95];
        let r = pax_records(&[("k", &long)]);
        let len: usize =
            String::from_utf8_lossy(r.split(|b| *b == b' ').next().unwrap_or_default())
                .parse()
                .unwrap_or(0);
        assert_eq!(len, r.len());
    }

    #[test]
    fn checksum_matches_spec() {
        let block = RawHeader::new().set_name(b"x").finish();
        let mut copy = block;
        copy[148..156].fill(b' ');
        let sum: u32 = copy.iter().map(|b| u32::from(*b)).sum();
        let stored = std::str::from_utf8(&block[148..154]).unwrap_or("");
        assert_eq!(u32::from_str_radix(stored, 8).ok(), Some(sum));
    }
}
