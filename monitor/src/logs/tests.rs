use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::logs::LogLimits;

#[test]
fn paths_follow_the_kubelet() {
    let root = Path::new("/var/log/pods");
    assert_eq!(
        container_log_path(root, "default", "web", "u-1", "nginx", 2).unwrap(),
        Path::new("/var/log/pods/default_web_u-1/nginx/2.log")
    );
    for (ns, c) in [("", "c"), ("a/b", "c"), ("ns", ".."), ("ns", "x/y")] {
        assert!(
            container_log_path(root, ns, "p", "u", c, 0).is_err(),
            "{ns} {c}"
        );
    }
}

/// Writes `lines` numbered lines (some longer than 16 KiB) through a
/// splitter and a writer with small limits, then reads them back.
fn rotate_and_read(same_second: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c").join("0.log");
    let limits = LogLimits {
        max_size_bytes: 64 * 1024,
        max_files: 4,
    };
    let mut w = LogWriter::open(&path, limits).unwrap();
    let mut split_out = LineSplitter::new();
    let mut split_err = LineSplitter::new();
    let mut expected = Vec::new();
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut written = 0usize;
    let mut i = 0u64;
    while written < 3 * 1024 * 1024 {
        let stream = if i.is_multiple_of(3) {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let mut line = format!("line {i} ").into_bytes();
        let pad = if i.is_multiple_of(97) {
            20_000
        } else {
            (i % 200) as usize
        };
        line.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, pad));
        written += line.len();
        expected.push((stream, line.clone()));
        line.push(b'\n');
        let now = if same_second {
            t0
        } else {
            t0 + Duration::from_millis(i * 7)
        };
        let splitter = if stream == Stream::Stdout {
            &mut split_out
        } else {
            &mut split_err
        };
        let mut err = None;
        // Feed in two pieces to exercise partial reads.
        let (a, b) = line.split_at(line.len() / 2);
        for piece in [a, b] {
            splitter.feed(piece, |tag, content| {
                if let Err(e) = w.record(now, stream, tag, content) {
                    err = Some(e);
                }
            });
        }
        assert!(err.is_none(), "{err:?}");
        if i.is_multiple_of(5) {
            w.flush().unwrap();
        }
        i += 1;
    }
    w.flush().unwrap();

    let files = log_files(&path).unwrap();
    assert!(files.len() <= 4, "{files:?}");
    assert!(files.len() >= 2);
    for f in &files {
        // A single record can exceed the limit only alone; ours are < 17 KiB.
        assert!(fs_len(f) <= limits.max_size_bytes, "{f:?}");
    }
    let read = read_log(&path).unwrap();
    assert_eq!(read.bad_lines, 0);
    // Older files were deleted: what remains is an exact suffix of what
    // was written, every line once, in order per stream.
    let got: Vec<(Stream, Vec<u8>)> = read
        .entries
        .iter()
        .map(|e| (e.stream, e.content.clone()))
        .collect();
    assert!(read.entries.iter().all(|e| e.complete));
    let first = std::str::from_utf8(&got[0].1).unwrap();
    let first_n: usize = first.split(' ').nth(1).unwrap().parse().unwrap();
    // The first kept line may be the tail of a split long line of the
    // dropped file; compare from the first line that starts in a kept file.
    let start = expected
        .iter()
        .position(|(_, l)| l.starts_with(format!("line {first_n} ").as_bytes()))
        .unwrap();
    let expect_tail = &expected[start..];
    let mut got_by_stream = got.clone();
    let mut exp_by_stream = expect_tail.to_vec();
    got_by_stream.sort_by_key(|(s, _)| *s as u8);
    exp_by_stream.sort_by_key(|(s, _)| *s as u8);
    assert_eq!(got_by_stream.len(), exp_by_stream.len());
    assert!(
        got_by_stream == exp_by_stream,
        "lines differ after rotation"
    );

    let t = tail(&path, 3).unwrap();
    assert_eq!(t.entries.len(), 3);
    assert_eq!(t.entries[2].content, got.last().unwrap().1);
}

fn fs_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn rotation_keeps_n_files_and_every_line_once() {
    rotate_and_read(false);
}

#[test]
fn rotation_within_one_second_does_not_collide() {
    rotate_and_read(true);
}

#[test]
fn reader_skips_garbage_and_reports_unfinished_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0.log");
    std::fs::write(
        &path,
        "2024-01-01T00:00:00Z stdout P he\n\
         garbage\n\
         2024-01-01T00:00:01Z stderr F oops\n\
         2024-01-01T00:00:02Z stdout F llo\n\
         2024-01-01T00:00:03Z stdout P no newline\n",
    )
    .unwrap();
    let read = read_log(&path).unwrap();
    assert_eq!(read.bad_lines, 1);
    let got: Vec<(&[u8], bool)> = read
        .entries
        .iter()
        .map(|e| (&e.content[..], e.complete))
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"oops"[..], true),
            (&b"hello"[..], true),
            (&b"no newline"[..], false)
        ]
    );
    assert!(
        read_log(&dir.path().join("missing.log"))
            .unwrap()
            .entries
            .is_empty()
    );
}
