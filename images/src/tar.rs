//! A strict, streaming tar reader for image layers.
//!
//! Written here rather than taken from the `tar` crate because layers are
//! untrusted input and the reader must bound every allocation: PAX and GNU
//! long-name records are read into memory only up to [`MAX_META_SIZE`]
//! (Go's archive/tar uses the same 1 MiB cap), numeric fields are range
//! checked, header checksums are verified, and a declared size the stream
//! cannot back is reported with the entry's name. Supported: ustar, GNU
//! (base-256 numbers, `L`/`K` long names) and PAX (`path`, `linkpath`,
//! `size`, `uid`, `gid`, `mtime`, `SCHILY.xattr.*`). Sparse files and
//! multi-volume archives are refused.

use std::io::{self, Read, Write};

/// Largest PAX / GNU long-name record read into memory.
pub const MAX_META_SIZE: u64 = 1 << 20;

/// Largest size accepted for one entry's data (anything above is malformed).
const MAX_ENTRY_SIZE: u64 = 1 << 62;

/// Errors while reading a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Reading the underlying stream failed.
    #[error("reading tar stream: {0}")]
    Io(#[from] io::Error),
    /// A header block is malformed.
    #[error("tar header {index} (after entry {prev:?}): {reason}")]
    BadHeader {
        /// Index of the header in the stream.
        index: u64,
        /// Name of the previous entry, to locate the damage.
        prev: String,
        /// What is wrong.
        reason: String,
    },
    /// An entry's declared size or metadata is out of range.
    #[error("entry {name:?}: {reason}")]
    BadEntry {
        /// The entry's name as far as it could be read.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The stream ended inside an entry.
    #[error("entry {name:?}: archive ends after {got} of its {declared} declared bytes")]
    Truncated {
        /// The entry.
        name: String,
        /// Its declared size.
        declared: u64,
        /// Bytes actually present.
        got: u64,
    },
}

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0`, NUL or `7`).
    File,
    /// A hard link (`1`).
    HardLink,
    /// A symbolic link (`2`).
    Symlink,
    /// A character device (`3`).
    CharDevice,
    /// A block device (`4`).
    BlockDevice,
    /// A directory (`5`).
    Directory,
    /// A FIFO (`6`).
    Fifo,
}

/// One entry's header, with PAX and GNU extensions already applied.
#[derive(Debug, Clone)]
pub struct Header {
    /// Path as stored in the archive (raw bytes).
    pub path: Vec<u8>,
    /// Entry kind.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Size of the data that follows (files only; 0 otherwise).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Link target for symlinks and hard links.
    pub link: Vec<u8>,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes from `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Header {
    /// The path, lossily decoded, for messages.
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Streaming reader: call [`TarReader::next_header`], then optionally
/// [`TarReader::copy_data`]; unread data is skipped on the next call.
#[derive(Debug)]
pub struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not yet consumed.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    index: u64,
    current: String,
    current_size: u64,
    done: bool,
}

struct PaxOverrides {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl PaxOverrides {
    fn empty() -> Self {
        Self {
            path: None,
            link: None,
            size: None,
            uid: None,
            gid: None,
            mtime: None,
            xattrs: Vec::new(),
        }
    }
}

impl<R: Read> TarReader<R> {
    /// Wraps a stream of uncompressed tar data.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            index: 0,
            current: String::new(),
            current_size: 0,
            done: false,
        }
    }

    /// Gives back the underlying stream (positioned after the end marker).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn bad_header(&self, reason: impl Into<String>) -> TarError {
        TarError::BadHeader {
            index: self.index,
            prev: self.current.clone(),
            reason: reason.into(),
        }
    }

    fn skip(&mut self, mut n: u64) -> Result<u64, io::Error> {
        let mut buf = [0u8; 8192];
        let mut skipped = 0;
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                break;
            }
            n -= got as u64;
            skipped += got as u64;
        }
        Ok(skipped)
    }

    fn finish_current(&mut self) -> Result<(), TarError> {
        let want = self.remaining;
        let got = self.skip(want)?;
        if got < want {
            return Err(TarError::Truncated {
                name: self.current.clone(),
                declared: self.current_size,
                got: self.current_size - (want - got),
            });
        }
        self.remaining = 0;
        let pad = self.padding;
        self.padding = 0;
        self.skip(pad)?;
        Ok(())
    }

    /// Reads a full 512-byte block; `Ok(false)` on a clean end of stream.
    fn read_block(&mut self, block: &mut [u8; 512]) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < 512 {
            let n = match self.inner.read(&mut block[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(self.bad_header(format!(
                    "stream ends inside a header block ({filled} of 512 bytes)"
                )));
            }
            filled += n;
        }
        Ok(true)
    }

    /// Reads the data of a metadata record (PAX / GNU long name), bounded.
    fn read_meta(&mut self, size: u64, what: &str, name: &[u8]) -> Result<Vec<u8>, TarError> {
        if size > MAX_META_SIZE {
            return Err(TarError::BadEntry {
                name: String::from_utf8_lossy(name).into_owned(),
                reason: format!(
                    "{what} record declares {size} bytes, more than the {MAX_META_SIZE}-byte limit"
                ),
            });
        }
        let mut data = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < data.len() {
            let n = self.inner.read(&mut data[filled..])?;
            if n == 0 {
                return Err(self.bad_header(format!(
                    "{what} record truncated ({filled} of {size} bytes)"
                )));
            }
            filled += n;
        }
        let pad = (512 - size % 512) % 512;
        self.skip(pad)?;
        Ok(data)
    }

    /// Advances to the next entry; `Ok(None)` at the end of the archive.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.finish_current()?;
        let mut pax = PaxOverrides::empty();
        let mut gnu_path: Option<Vec<u8>> = None;
        let mut gnu_link: Option<Vec<u8>> = None;
        let mut block = [0u8; 512];
        loop {
            if !self.read_block(&mut block)? {
                self.done = true;
                return Ok(None);
            }
            self.index += 1;
            if block.iter().all(|&b| b == 0) {
                // End-of-archive marker (a second zero block may follow; the
                // caller drains the rest of the stream for the diff ID).
                self.done = true;
                return Ok(None);
            }
            self.verify_checksum(&block)?;
            let typeflag = block[156];
            let size = self.parse_number(&block[124..136], "size")?;
            let own_name = field_bytes(&block[0..100]);
            match typeflag {
                b'x' => {
                    let data = self.read_meta(size, "PAX", &own_name)?;
                    self.parse_pax(&data, &mut pax)?;
                    continue;
                }
                b'g' => {
                    // Global PAX records carry defaults (comments, charset);
                    // none of the keys herd honours are meaningful globally.
                    self.read_meta(size, "PAX global", &own_name)?;
                    continue;
                }
                b'L' => {
                    gnu_path = Some(trim_nul(self.read_meta(
                        size,
                        "GNU long name",
                        &own_name,
                    )?));
                    continue;
                }
                b'K' => {
                    gnu_link = Some(trim_nul(self.read_meta(
                        size,
                        "GNU long link",
                        &own_name,
                    )?));
                    continue;
                }
                _ => {}
            }
            let mut path = pax.path.take().or(gnu_path.take()).unwrap_or_else(|| {
                let name = field_bytes(&block[0..100]);
                let prefix = if &block[257..263] == b"ustar\0" {
                    field_bytes(&block[345..500])
                } else {
                    Vec::new()
                };
                if prefix.is_empty() {
                    name
                } else {
                    let mut p = prefix;
                    p.push(b'/');
                    p.extend_from_slice(&name);
                    p
                }
            });
            let name = String::from_utf8_lossy(&path).into_owned();
            self.current = name.clone();
            let bad = |reason: String| TarError::BadEntry {
                name: name.clone(),
                reason,
            };
            let kind = match typeflag {
                b'0' | 0 | b'7' => EntryKind::File,
                b'1' => EntryKind::HardLink,
                b'2' => EntryKind::Symlink,
                b'3' => EntryKind::CharDevice,
                b'4' => EntryKind::BlockDevice,
                b'5' => EntryKind::Directory,
                b'6' => EntryKind::Fifo,
                b'S' => return Err(bad("sparse files are not supported".into())),
                other => return Err(bad(format!("unsupported entry type {:?}", other as char))),
            };
            // Old tars mark directories with a trailing slash on type 0.
            let kind = if kind == EntryKind::File && path.ends_with(b"/") {
                EntryKind::Directory
            } else {
                kind
            };
            while path.len() > 1 && path.ends_with(b"/") {
                path.pop();
            }
            let size = pax.size.unwrap_or(size);
            if size > MAX_ENTRY_SIZE {
                return Err(bad(format!("declared size {size} is out of range")));
            }
            let data_size = if kind == EntryKind::File { size } else { 0 };
            let mode = self.parse_number(&block[100..108], "mode")?;
            let uid = pax
                .uid
                .map_or_else(|| self.parse_number(&block[108..116], "uid"), Ok)?;
            let gid = pax
                .gid
                .map_or_else(|| self.parse_number(&block[116..124], "gid"), Ok)?;
            let mtime = match pax.mtime {
                Some(m) => m,
                None => i64::try_from(self.parse_number(&block[136..148], "mtime")?).unwrap_or(0),
            };
            let link = pax
                .link
                .take()
                .or(gnu_link.take())
                .unwrap_or_else(|| field_bytes(&block[157..257]));
            let (dev_major, dev_minor) =
                if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
                    let major = self.parse_number(&block[329..337], "devmajor")?;
                    let minor = self.parse_number(&block[337..345], "devminor")?;
                    (
                        u32::try_from(major)
                            .map_err(|_| bad(format!("device major {major} out of range")))?,
                        u32::try_from(minor)
                            .map_err(|_| bad(format!("device minor {minor} out of range")))?,
                    )
                } else {
                    (0, 0)
                };
            // Non-file entries may still carry data in the archive (rare, but
            // legal for hard links); it is skipped, not interpreted.
            let stored = if matches!(
                kind,
                EntryKind::Directory
                    | EntryKind::Symlink
                    | EntryKind::CharDevice
                    | EntryKind::BlockDevice
                    | EntryKind::Fifo
            ) {
                0
            } else {
                size
            };
            self.remaining = stored;
            self.padding = (512 - stored % 512) % 512;
            self.current_size = stored;
            return Ok(Some(Header {
                path,
                kind,
                mode: (mode & 0o7777) as u32,
                uid,
                gid,
                size: data_size,
                mtime,
                link,
                dev_major,
                dev_minor,
                xattrs: std::mem::take(&mut pax.xattrs),
            }));
        }
    }

    /// Copies the current entry's data to `out`; fails, naming the entry, if
    /// the stream ends before the declared size.
    pub fn copy_data(&mut self, out: &mut impl Write) -> Result<u64, TarError> {
        let mut buf = vec![0u8; 128 * 1024];
        let mut copied = 0;
        while self.remaining > 0 {
            let want = self.remaining.min(buf.len() as u64) as usize;
            let n = match self.inner.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(TarError::Truncated {
                    name: self.current.clone(),
                    declared: self.current_size,
                    got: self.current_size - self.remaining,
                });
            }
            out.write_all(&buf[..n])?;
            self.remaining -= n as u64;
            copied += n as u64;
        }
        Ok(copied)
    }

    fn verify_checksum(&self, block: &[u8; 512]) -> Result<(), TarError> {
        let stored = self.parse_number(&block[148..156], "checksum")?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in block.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
            Ok(())
        } else {
            Err(self.bad_header(format!(
                "checksum mismatch (stored {stored}, computed {unsigned})"
            )))
        }
    }

    /// Parses an octal (NUL/space padded) or GNU base-256 numeric field.
    fn parse_number(&self, field: &[u8], what: &str) -> Result<u64, TarError> {
        if let Some(&first) = field.first()
            && first & 0x80 != 0
        {
            if first == 0xff {
                return Err(self.bad_header(format!("negative base-256 {what} field")));
            }
            let mut value: u64 = u64::from(first & 0x7f);
            for &b in &field[1..] {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or_else(|| self.bad_header(format!("base-256 {what} field overflows")))?;
            }
            return Ok(value);
        }
        let trimmed: Vec<u8> = field
            .iter()
            .copied()
            .skip_while(|&b| b == b' ')
            .take_while(|&b| b != 0 && b != b' ')
            .collect();
        if trimmed.is_empty() {
            return Ok(0);
        }
        let s = std::str::from_utf8(&trimmed)
            .map_err(|_| self.bad_header(format!("non-ASCII {what} field")))?;
        u64::from_str_radix(s, 8)
            .map_err(|_| self.bad_header(format!("invalid octal {what} field {s:?}")))
    }

    fn parse_pax(&self, data: &[u8], pax: &mut PaxOverrides) -> Result<(), TarError> {
        let mut rest = data;
        while !rest.is_empty() {
            let sp = rest
                .iter()
                .position(|&b| b == b' ')
                .ok_or_else(|| self.bad_header("malformed PAX record (no length)"))?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.bad_header("malformed PAX record length"))?;
            if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                return Err(self.bad_header("malformed PAX record"));
            }
            let record = &rest[sp + 1..len - 1];
            rest = &rest[len..];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| self.bad_header("PAX record without '='"))?;
            let key = String::from_utf8_lossy(&record[..eq]).into_owned();
            let value = &record[eq + 1..];
            let num = |what: &str| -> Result<u64, TarError> {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        self.bad_header(format!(
                            "invalid PAX {what} {:?}",
                            String::from_utf8_lossy(value)
                        ))
                    })
            };
            match key.as_str() {
                "path" => pax.path = Some(value.to_vec()),
                "linkpath" => pax.link = Some(value.to_vec()),
                "size" => pax.size = Some(num("size")?),
                "uid" => pax.uid = Some(num("uid")?),
                "gid" => pax.gid = Some(num("gid")?),
                "mtime" => {
                    let s = String::from_utf8_lossy(value);
                    let secs = s.split('.').next().unwrap_or("0");
                    pax.mtime = Some(
                        secs.parse()
                            .map_err(|_| self.bad_header(format!("invalid PAX mtime {s:?}")))?,
                    );
                }
                k if k.starts_with("SCHILY.xattr.") => {
                    pax.xattrs
                        .push((k["SCHILY.xattr.".len()..].to_owned(), value.to_vec()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn field_bytes(field: &[u8]) -> Vec<u8> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(end) = v.iter().position(|&b| b == 0) {
        v.truncate(end);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, typeflag: u8, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        if size < 0o77777777777 {
            h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        } else {
            h[124] = 0x80;
            h[128..136].copy_from_slice(&size.to_be_bytes());
        }
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let c = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(c.as_bytes());
        h
    }

    fn archive(entries: &[([u8; 512], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (h, data) in entries {
            out.extend_from_slice(h);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn reads_files_and_dirs() {
        let a = archive(&[
            (header("d/", b'5', 0), b""),
            (header("d/f", b'0', 5), b"hello"),
        ]);
        let mut r = TarReader::new(&a[..]);
        let d = r.next_header().unwrap().unwrap();
        assert_eq!(d.kind, EntryKind::Directory);
        assert_eq!(d.path, b"d");
        let f = r.next_header().unwrap().unwrap();
        assert_eq!(f.size, 5);
        let mut out = Vec::new();
        r.copy_data(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn pax_path_and_xattr_apply_to_next_entry() {
        let rec = |kv: &str| format!("{} {kv}\n", kv.len() + 4);
        let data = format!(
            "{}{}",
            rec("path=a-very-long/name.txt"),
            rec("SCHILY.xattr.user.k=v")
        );
        let a = archive(&[
            (header("pax", b'x', data.len() as u64), data.as_bytes()),
            (header("short", b'0', 0), b""),
        ]);
        let mut r = TarReader::new(&a[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.path, b"a-very-long/name.txt");
        assert_eq!(h.xattrs, vec![("user.k".to_string(), b"v".to_vec())]);
    }

    #[test]
    fn truncated_entry_names_itself() {
        let mut a = header("big", b'0', 1 << 40).to_vec();
        a.extend_from_slice(b"tiny");
        let mut r = TarReader::new(&a[..]);
        r.next_header().unwrap().unwrap();
        let err = r.copy_data(&mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("\"big\""), "{err}");
    }

    #[test]
    fn oversized_meta_record_is_refused_without_allocating() {
        let a = header("././@LongLink", b'L', 1 << 40);
        let mut r = TarReader::new(&a[..]);
        let err = r.next_header().unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn bad_checksum_is_refused() {
        let mut h = header("f", b'0', 0);
        h[0] = b'g';
        let a = archive(&[(h, b"")]);
        assert!(TarReader::new(&a[..]).next_header().is_err());
    }

    /// Mutated archives must give errors, never panics or huge allocations
    /// (a cheap stand-in for a fuzzer, which needs a nightly toolchain).
    #[test]
    fn mutated_archives_never_panic() {
        let rec = |kv: &str| format!("{} {kv}\n", kv.len() + 4);
        let pax = rec("path=x/y/z");
        let base = archive(&[
            (header("d/", b'5', 0), b""),
            (header("pax", b'x', pax.len() as u64), pax.as_bytes()),
            (header("d/f", b'0', 700), &[7u8; 700]),
            (header("ln", b'2', 0), b""),
        ]);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut a = base.clone();
            for _ in 0..(next() % 8 + 1) {
                let i = (next() % a.len() as u64) as usize;
                a[i] = next() as u8;
            }
            if next() % 4 == 0 {
                a.truncate((next() % a.len() as u64) as usize);
            }
            let mut r = TarReader::new(&a[..]);
            while let Ok(Some(_)) = r.next_header() {
                if r.copy_data(&mut io::sink()).is_err() {
                    break;
                }
            }
        }
    }
}
