//! The monitor's socket protocol without containers (no root, no runc):
//! readiness, garbage and oversized requests, `Wait` on unknown or
//! recorded containers, a second monitor refused, `Shutdown`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use herd_runtime::monitor::state::{ExitRecord, exit_path, write_json_atomic};
use herd_runtime::monitor::{MonitorClient, MonitorError, spawn_monitor};

const MONITOR_EXE: &str = env!("CARGO_BIN_EXE_herd-monitor-test");

fn reply(s: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

/// Kills the monitor if a test fails before shutting it down.
struct Guard(Option<u32>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && !gone_or_zombie(pid)
        {
            // SAFETY: plain kill(2) of the monitor this test spawned.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

#[test]
fn protocol_errors_never_kill_the_monitor() {
    let dir = tempfile::Builder::new()
        .prefix("hmp")
        .tempdir_in("/tmp")
        .unwrap();
    let pod = dir.path().join("pod");
    let client = spawn_monitor(Path::new(MONITOR_EXE), &[], &pod).unwrap();
    let mpid = client.pid().unwrap();
    let mut guard = Guard(Some(mpid));

    // A second monitor on the same pod dir is refused, the first unharmed.
    let err = spawn_monitor(Path::new(MONITOR_EXE), &[], &pod).unwrap_err();
    assert!(matches!(err, MonitorError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("already listens"), "{err}");
    assert_eq!(client.pid().unwrap(), mpid);

    let sock = pod.join("monitor.sock");
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for bad in [
        &b"hello\n"[..],
        b"{\"type\":\"Nope\"}\n",
        b"\xff\xfe\n",
        b"{\"type\":\"Wait\"}\n",
        b"[1,2,3]\n",
        b"\n",
    ] {
        s.write_all(bad).unwrap();
        let r = reply(&s);
        assert!(r.contains("\"Error\""), "{r}");
    }
    s.write_all(b"{\"type\":\"Wait\",\"id\":\"nope\"}\n")
        .unwrap();
    assert!(reply(&s).contains("unknown container"));
    // Two requests in one write: two answers, in order.
    s.write_all(b"{\"type\":\"List\"}\n{\"type\":\"List\"}\n")
        .unwrap();
    let mut r = BufReader::new(&s);
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"Containers\""), "{line}");
    }

    // Oversized without a newline: an error, then the connection closes.
    let mut big = UnixStream::connect(&sock).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = big.write_all(&vec![b'{'; 300 * 1024]);
    let mut all = Vec::new();
    let _ = big.read_to_end(&mut all);
    assert!(String::from_utf8_lossy(&all).contains("longer than"));

    // Partial request then hang-up; more idle connections than the limit.
    let mut partial = UnixStream::connect(&sock).unwrap();
    partial.write_all(b"{\"type\":\"Li").unwrap();
    drop(partial);
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    assert!(client.list().unwrap().is_empty());
    drop(idle);

    // Wait answers from exit.json for a container of an earlier monitor.
    let rec = ExitRecord {
        exit_code: 0,
        signal: None,
        oom_killed: false,
        finished_at: "2024-01-01T00:00:01Z".into(),
        started_at: "2024-01-01T00:00:00Z".into(),
    };
    let path = exit_path(&pod, "old");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_json_atomic(&path, &rec, false).unwrap();
    assert_eq!(
        client.wait("old", Some(Duration::from_secs(5))).unwrap(),
        rec
    );

    // Reconnecting works; Shutdown with nothing running ends the monitor.
    let again = MonitorClient::connect(&pod).unwrap();
    assert_eq!(again.shutdown().unwrap(), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone_or_zombie(mpid) {
        assert!(Instant::now() < deadline, "monitor did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    guard.0 = None;
    assert!(!sock.exists());
    assert!(!pod.join("monitor.pid").exists());
    assert!(MonitorClient::connect(&pod).is_err());
}
