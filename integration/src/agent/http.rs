//! A chunked transfer-encoding decoder for the fixture's HTTP/1.1 client
//! (watch streams and followed logs arrive chunked).

use std::io::{BufRead, Read};

/// A chunked transfer-encoding decoder.
pub(super) struct Chunked<R> {
    pub(super) inner: R,
    pub(super) left: u64,
    pub(super) done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            if size.is_empty() {
                self.done = true;
                return Ok(0);
            }
            self.left = u64::from_str_radix(size, 16).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("chunk size {size:?}: {e}"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn chunked_bodies_decode_across_chunks() {
        let raw = b"5\r\nhello\r\n7\r\n world\n\r\n0\r\n\r\n";
        let mut r = BufReader::new(Chunked {
            inner: BufReader::new(&raw[..]),
            left: 0,
            done: false,
        });
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "hello world\n");
        line.clear();
        assert_eq!(r.read_line(&mut line).unwrap(), 0);
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let raw = b"zz\r\nhello\r\n";
        let mut r = Chunked {
            inner: BufReader::new(&raw[..]),
            left: 0,
            done: false,
        };
        let mut buf = [0u8; 8];
        assert!(r.read(&mut buf).is_err());
    }
}
