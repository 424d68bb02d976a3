//! One CRI log line: `<RFC3339Nano> <stdout|stderr> <P|F> <content>\n`, and
//! the splitter that turns a byte stream into such lines as containerd does.
//!
//! containerd's rules, copied: a line is cut at `\n` (a `\r\n` ending loses
//! both bytes); content longer than [`MAX_LINE`] is emitted as `P` chunks of
//! exactly [`MAX_LINE`] bytes followed by the rest tagged `F` (a line of
//! exactly [`MAX_LINE`] bytes is one `F`); bytes left without a newline at
//! EOF are emitted once, tagged `P`.

use std::time::SystemTime;

use super::timestamp::{TimestampError, parse_rfc3339, push_rfc3339_nano};

/// Longest content of one log line (containerd's default
/// `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Which stdio stream a line came from (a tty container's output is
/// `stdout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// `P`: the line continues in the next record of the same stream; `F`:
/// the record ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tag {
    Partial,
    Full,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Partial => "P",
            Tag::Full => "F",
        }
    }
}

/// Appends one formatted record (newline included) to `out`.
pub fn format_line(out: &mut Vec<u8>, time: SystemTime, stream: Stream, tag: Tag, content: &[u8]) {
    let mut head = String::with_capacity(48);
    push_rfc3339_nano(&mut head, time);
    head.push(' ');
    head.push_str(stream.as_str());
    head.push(' ');
    head.push_str(tag.as_str());
    head.push(' ');
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// A parsed record, borrowing its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub time: SystemTime,
    pub stream: Stream,
    pub tag: Tag,
    pub content: &'a [u8],
}

/// Why a log line is not a CRI record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("log line has no {0} field")]
    Missing(&'static str),
    #[error(transparent)]
    Timestamp(#[from] TimestampError),
    #[error("unknown stream {0:?} (want stdout or stderr)")]
    Stream(String),
    #[error("unknown tag {0:?} (want P or F)")]
    Tag(String),
}

fn field<'a>(rest: &mut &'a [u8], name: &'static str) -> Result<&'a [u8], ParseError> {
    let pos = rest
        .iter()
        .position(|b| *b == b' ')
        .ok_or(ParseError::Missing(name))?;
    let (f, r) = rest.split_at(pos);
    *rest = &r[1..];
    Ok(f)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()
}

/// Parses one record; a trailing `\n` is ignored. Tags may carry extra
/// `:`-separated attributes after `P`/`F`, as the kubelet allows.
pub fn parse_line(line: &[u8]) -> Result<CriLine<'_>, ParseError> {
    let mut rest = line.strip_suffix(b"\n").unwrap_or(line);
    let ts = field(&mut rest, "timestamp")?;
    let ts = std::str::from_utf8(ts).map_err(|_| TimestampError(lossy(ts)))?;
    let time = parse_rfc3339(ts)?;
    let stream = match field(&mut rest, "stream")? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(ParseError::Stream(lossy(other))),
    };
    // The tag is the last field; the content may be empty ("... F ").
    let tag_field = match rest.iter().position(|b| *b == b' ') {
        Some(pos) => {
            let (t, r) = rest.split_at(pos);
            rest = &r[1..];
            t
        }
        None => {
            let t = rest;
            rest = &[];
            t
        }
    };
    let tag = match tag_field.split(|b| *b == b':').next() {
        Some(b"P") => Tag::Partial,
        Some(b"F") => Tag::Full,
        _ => return Err(ParseError::Tag(lossy(tag_field))),
    };
    Ok(CriLine {
        time,
        stream,
        tag,
        content: rest,
    })
}

/// Cuts one stream's bytes into CRI records (see the module docs). Holds
/// at most [`MAX_LINE`] bytes plus one read between calls.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new() -> Self {
        LineSplitter::default()
    }

    /// Feeds bytes read from the stream; `emit` gets every complete record.
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(Tag, &[u8])) {
        if self.pending.is_empty() {
            // The common case: no copy, only the unfinished tail is kept.
            let consumed = split_records(data, &mut emit);
            self.pending.extend_from_slice(&data[consumed..]);
        } else {
            self.pending.extend_from_slice(data);
            let consumed = split_records(&self.pending, &mut emit);
            self.pending.drain(..consumed);
        }
        // Do not keep a long line's buffer for the container's lifetime.
        if self.pending.capacity() > 2 * MAX_LINE && self.pending.len() <= MAX_LINE {
            self.pending.shrink_to(MAX_LINE);
        }
    }

    /// End of stream: leftover bytes become one `P` record (containerd).
    pub fn finish(&mut self, mut emit: impl FnMut(Tag, &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Partial, &self.pending);
            self.pending.clear();
        }
    }

    /// Bytes held back waiting for the end of their line.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// Emits the records of `buf` and returns how many bytes they consumed.
fn split_records(buf: &[u8], emit: &mut impl FnMut(Tag, &[u8])) -> usize {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(nl) => {
                let mut line = &rest[..nl];
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                while line.len() > MAX_LINE {
                    emit(Tag::Partial, &line[..MAX_LINE]);
                    line = &line[MAX_LINE..];
                }
                emit(Tag::Full, line);
                start += nl + 1;
            }
            None => {
                let mut rest = rest;
                while rest.len() > MAX_LINE {
                    emit(Tag::Partial, &rest[..MAX_LINE]);
                    start += MAX_LINE;
                    rest = &rest[MAX_LINE..];
                }
                return start;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn split(chunks: &[&[u8]]) -> Vec<(Tag, Vec<u8>)> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |t, l| out.push((t, l.to_vec())));
        }
        s.finish(|t, l| out.push((t, l.to_vec())));
        out
    }

    #[test]
    fn format_parse_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        let mut buf = Vec::new();
        format_line(&mut buf, t, Stream::Stderr, Tag::Partial, b"hello  world ");
        assert_eq!(
            buf,
            b"2016-10-06T00:17:09.669794202Z stderr P hello  world \n"
        );
        let l = parse_line(&buf).unwrap();
        assert_eq!(
            l,
            CriLine {
                time: t,
                stream: Stream::Stderr,
                tag: Tag::Partial,
                content: b"hello  world "
            }
        );
        let mut buf = Vec::new();
        format_line(&mut buf, t, Stream::Stdout, Tag::Full, b"");
        assert_eq!(parse_line(&buf).unwrap().content, b"");
        let l = parse_line(b"2016-10-06T00:17:09Z stdout F:x=y a b").unwrap();
        assert_eq!((l.tag, l.content), (Tag::Full, &b"a b"[..]));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(parse_line(b""), Err(ParseError::Missing("timestamp")));
        assert_eq!(
            parse_line(b"2016-10-06T00:17:09Z"),
            Err(ParseError::Missing("timestamp"))
        );
        assert!(matches!(
            parse_line(b"yesterday stdout F x"),
            Err(ParseError::Timestamp(_))
        ));
        assert!(matches!(
            parse_line(b"2016-10-06T00:17:09Z stdin F x"),
            Err(ParseError::Stream(_))
        ));
        assert!(matches!(
            parse_line(b"2016-10-06T00:17:09Z stdout X x"),
            Err(ParseError::Tag(_))
        ));
        assert!(matches!(
            parse_line(b"\xff\xfe stdout F x"),
            Err(ParseError::Timestamp(_))
        ));
    }

    #[test]
    fn lines_are_cut_like_containerd() {
        assert_eq!(
            split(&[b"a\nb", b"c\r\n\n", b"tail"]),
            vec![
                (Tag::Full, b"a".to_vec()),
                (Tag::Full, b"bc".to_vec()),
                (Tag::Full, b"".to_vec()),
                (Tag::Partial, b"tail".to_vec()),
            ]
        );
        assert!(split(&[b""]).is_empty());
    }

    #[test]
    fn long_lines_split_at_16k() {
        let exact = vec![b'x'; MAX_LINE];
        let mut input = exact.clone();
        input.push(b'\n');
        assert_eq!(split(&[&input]), vec![(Tag::Full, exact.clone())]);

        // 40000 bytes fed in odd chunks: P 16384, P 16384, F 7232.
        let long: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = long.clone();
        input.push(b'\n');
        let chunks: Vec<&[u8]> = input.chunks(1000).collect();
        let out = split(&chunks);
        let tags: Vec<Tag> = out.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, vec![Tag::Partial, Tag::Partial, Tag::Full]);
        assert_eq!(out[0].1.len(), MAX_LINE);
        assert_eq!(out[2].1.len(), 40_000 - 2 * MAX_LINE);
        let joined: Vec<u8> = out.iter().flat_map(|(_, l)| l.clone()).collect();
        assert_eq!(joined, long);

        // No newline at EOF: P chunks, the rest also P.
        let out = split(&[&long]);
        assert!(out.iter().all(|(t, _)| *t == Tag::Partial));
        assert_eq!(out.len(), 3);
    }
}
