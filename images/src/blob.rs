//! The content-addressed blob store.
//!
//! Layout: `<root>/blobs/sha256/<hex>` for committed blobs and
//! `<root>/ingest/` for blobs being written. A blob is written to a temporary
//! file while its sha256 is computed, fsynced, compared against the expected
//! digest and size, and only then renamed into place (and the directory
//! fsynced). A crash therefore never leaves a partial file under a digest
//! name: at worst a stray file in `ingest/`, which garbage collection removes.
//!
//! Readers verify too: [`BlobStore::read_verified`] re-hashes small blobs
//! (manifests, configs) on every read, and layer readers hash while they
//! stream ([`VerifyingReader`]).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::fsutil;

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A filesystem operation failed.
    #[error("blob store: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The content does not hash to the digest it was announced with.
    #[error("blob {expected}: content digest is {actual}")]
    DigestMismatch {
        /// The digest the blob was announced with.
        expected: Digest,
        /// The digest of the bytes actually received.
        actual: Digest,
    },
    /// The content is not the size it was announced with.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// The size received (so far, when too large).
        actual: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    NotFound(Digest),
    /// A blob read into memory is larger than the caller allows.
    #[error(
        "blob {digest}: {size} bytes is larger than the {limit}-byte limit for this kind of blob"
    )]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A content-addressed store of sha256 blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        for dir in [&blobs, &ingest] {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        Ok(Self { blobs, ingest })
    }

    /// Path of a committed blob.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// The ingest directory (temporary files).
    pub fn ingest_dir(&self) -> &Path {
        &self.ingest
    }

    /// Size of a committed blob, if present.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Whether the blob is present with exactly this size.
    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        self.size(digest) == Some(size)
    }

    /// Starts writing a blob. With `expected`, the write fails as soon as more
    /// bytes than announced arrive, and commit checks digest and size.
    pub fn writer(&self, expected: Option<(Digest, u64)>) -> Result<BlobWriter, BlobError> {
        let (file, tmp) =
            fsutil::temp_file(&self.ingest).map_err(io_err("create temp in", &self.ingest))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            hasher: Sha256::new(),
            written: 0,
            expected,
            blobs: self.blobs.clone(),
        })
    }

    /// Stores a byte slice, returning its digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let digest = Digest::of(bytes);
        if self.contains(&digest, bytes.len() as u64) {
            return Ok(digest);
        }
        let mut w = self.writer(Some((digest.clone(), bytes.len() as u64)))?;
        w.write_all(bytes).map_err(io_err("write", &self.ingest))?;
        w.commit()
    }

    /// Copies a reader into the store, verifying against `expected` if given.
    pub fn put_reader(
        &self,
        reader: &mut impl Read,
        expected: Option<(Digest, u64)>,
    ) -> Result<(Digest, u64), BlobError> {
        let mut w = self.writer(expected)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read source for", &self.ingest)(e)),
            };
            w.write_chunk(&buf[..n])?;
        }
        let size = w.written();
        Ok((w.commit()?, size))
    }

    /// Reads a whole blob into memory after checking size and digest.
    pub fn read_verified(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let size = self
            .size(digest)
            .ok_or_else(|| BlobError::NotFound(digest.clone()))?;
        if size > limit {
            return Err(BlobError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming; the reader checks digest and size when
    /// [`VerifyingReader::finish`] is called after reading to the end.
    pub fn open_verified(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<VerifyingReader<BufReader<File>>, BlobError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                BlobError::NotFound(digest.clone())
            } else {
                io_err("open", &path)(e)
            }
        })?;
        Ok(VerifyingReader::new(
            BufReader::with_capacity(256 * 1024, file),
            digest.clone(),
            size,
        ))
    }

    /// Every committed blob (file names that are not valid digests are skipped).
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(io_err("list", &self.blobs))? {
            let entry = entry.map_err(io_err("list", &self.blobs))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Removes a blob; removing a missing blob is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }
}

/// A blob being written; dropped without [`BlobWriter::commit`], its temporary
/// file is removed.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Option<(Digest, u64)>,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk, failing early when more than the announced size arrives.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let new_len = self.written + chunk.len() as u64;
        if let Some((digest, size)) = &self.expected
            && new_len > *size
        {
            return Err(BlobError::SizeMismatch {
                digest: digest.clone(),
                expected: *size,
                actual: new_len,
            });
        }
        let file = self.file.as_mut().ok_or_else(|| {
            io_err("write", &self.tmp)(io::Error::other("writer already committed"))
        })?;
        file.write_all(chunk).map_err(io_err("write", &self.tmp))?;
        self.hasher.update(chunk);
        self.written = new_len;
        Ok(())
    }

    /// Verifies and atomically moves the blob into place.
    pub fn commit(mut self) -> Result<Digest, BlobError> {
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some((digest, size)) = &self.expected {
            if *size != self.written {
                return Err(BlobError::SizeMismatch {
                    digest: digest.clone(),
                    expected: *size,
                    actual: self.written,
                });
            }
            if *digest != actual {
                return Err(BlobError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        let file = self.file.take().ok_or_else(|| {
            io_err("commit", &self.tmp)(io::Error::other("writer already committed"))
        })?;
        file.sync_all().map_err(io_err("fsync", &self.tmp))?;
        drop(file);
        let dest = self.blobs.join(actual.hex());
        fs::rename(&self.tmp, &dest).map_err(io_err("rename into", &dest))?;
        fsutil::sync_dir(&self.blobs).map_err(io_err("fsync", &self.blobs))?;
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A reader that hashes what passes through and can be checked at the end.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    digest: Digest,
    size: u64,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps `inner`, which must yield exactly the blob `digest` of `size` bytes.
    pub fn new(inner: R, digest: Digest, size: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
            digest,
            size,
        }
    }

    /// Reads what is left, then checks size and digest.
    pub fn finish(mut self) -> Result<(), BlobError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| BlobError::Io {
            op: "read",
            path: PathBuf::from(self.digest.to_string()),
            source: e,
        })?;
        if self.read != self.size {
            return Err(BlobError::SizeMismatch {
                digest: self.digest,
                expected: self.size,
                actual: self.read,
            });
        }
        let actual = Digest::from_hasher(self.hasher);
        if actual != self.digest {
            return Err(BlobError::DigestMismatch {
                expected: self.digest,
                actual,
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if self.read > self.size {
            return Err(io::Error::other(format!(
                "blob {} is larger than its announced {} bytes",
                self.digest, self.size
            )));
        }
        Ok(n)
    }
}

/// A reader that hashes everything read through it (for diff IDs).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Drains the rest of the stream and returns the digest of all of it.
    pub fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(Digest::from_hasher(self.hasher))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verify_and_reject() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put(b"hello").unwrap();
        assert_eq!(store.read_verified(&d, 100).unwrap(), b"hello");
        assert!(matches!(
            store.read_verified(&d, 2),
            Err(BlobError::TooLarge { .. })
        ));

        // wrong digest: refused, nothing committed, no temp left behind
        let wrong = Digest::of(b"other");
        let mut w = store.writer(Some((wrong.clone(), 5))).unwrap();
        w.write_chunk(b"hello").unwrap();
        assert!(matches!(w.commit(), Err(BlobError::DigestMismatch { .. })));
        assert!(store.size(&wrong).is_none());
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0);

        // too many bytes: refused as soon as they arrive
        let mut w = store.writer(Some((d.clone(), 3))).unwrap();
        assert!(matches!(
            w.write_chunk(b"hello"),
            Err(BlobError::SizeMismatch { .. })
        ));

        // a corrupted blob on disk is caught on read
        fs::write(store.path(&d), b"hellp").unwrap();
        assert!(matches!(
            store.read_verified(&d, 100),
            Err(BlobError::DigestMismatch { .. })
        ));
        let r = store.open_verified(&d, 5).unwrap();
        assert!(matches!(r.finish(), Err(BlobError::DigestMismatch { .. })));
    }
}
