//! Host-side pieces of the agent fixture: a network namespace kept by a
//! bind mount (loopback up), and by-exact-name removal of what an agent
//! leaves behind (processes, mounts, cgroups, runc containers).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `struct ifreq` with the flags member (40 bytes on Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

const SIOCGIFFLAGS: rustix::ioctl::Opcode = 0x8913;
const SIOCSIFFLAGS: rustix::ioctl::Opcode = 0x8914;
const IFF_UP: i16 = 0x1;

/// Brings `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use rustix::net::{AddressFamily, SocketType};
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    let mut req = IfReqFlags {
        name: [0; 16],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: both requests read/write a `struct ifreq`, which `IfReqFlags`
    // lays out (name, then the flags union member), and the buffer is as
    // large as the kernel's struct.
    unsafe {
        rustix::ioctl::ioctl(
            &sock,
            rustix::ioctl::Updater::<SIOCGIFFLAGS, IfReqFlags>::new(&mut req),
        )?;
        req.flags |= IFF_UP;
        rustix::ioctl::ioctl(
            &sock,
            rustix::ioctl::Updater::<SIOCSIFFLAGS, IfReqFlags>::new(&mut req),
        )?;
    }
    Ok(())
}

/// A new network namespace bind-mounted at `path` (a new file), loopback up;
/// returns an open fd of it.
pub(super) fn create_netns(path: &Path) -> Result<OwnedFd> {
    std::fs::File::create_new(path).with_context(|| format!("create {}", path.display()))?;
    let target = path.to_path_buf();
    let made = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            // SAFETY: only CLONE_NEWNET is unshared, on this short-lived
            // thread; the fd table stays shared.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            loopback_up()
        })
        .join()
    });
    match made {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            remove_netns(path);
            bail!("create netns {}: {e}", path.display());
        }
        Err(_) => {
            remove_netns(path);
            bail!("create netns {}: thread panicked", path.display());
        }
    }
    Ok(std::fs::File::open(path)?.into())
}

pub(super) fn remove_netns(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}

/// Pids whose command line contains every one of `needles`.
pub fn pids_with_cmdline(needles: &[&str]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            needles.iter().all(|n| cmd.contains(n))
        })
        .collect()
}

pub(super) fn sigkill(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Mount points under any of `dirs`, deepest first.
pub fn mounts_under(dirs: &[&Path]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Every hierarchy's copy of cgroup `name` under `cgroup_root`.
pub(super) fn cgroup_dirs(cgroup_root: &Path, name: &str) -> Vec<PathBuf> {
    let mut v = vec![cgroup_root.join(name)];
    if let Ok(dir) = std::fs::read_dir(cgroup_root) {
        v.extend(dir.flatten().map(|e| e.path().join(name)));
    }
    v.retain(|p| p.is_dir());
    v
}

/// Kills every process in the cgroup tree and removes it, leaves first.
pub(super) fn remove_cgroup_tree(dir: &Path) {
    let mut dirs = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            pids.iter().for_each(|&p| sigkill(p));
            if std::fs::remove_dir(d).is_ok() || !d.exists() || Instant::now() > deadline {
                break;
            }
            // Frozen v1 cgroups keep killed tasks; thaw them.
            let _ = std::fs::write(d.join("freezer.state"), "THAWED");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// runc state roots the agent may have used.
pub(super) fn runc_roots(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = vec![];
    for d in dirs {
        for cand in [d.join("runc"), d.join("runtime"), d.join("runc-state")] {
            if cand.is_dir() {
                v.push(cand);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn netns_has_loopback_up_and_is_removed() {
        if !crate::root_or_skip("netns_has_loopback_up_and_is_removed", "netns") {
            return;
        }
        let dir = tempfile::Builder::new()
            .prefix("herd-fixture-netns-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let path = dir.path().join("ns");
        let fd = create_netns(&path).unwrap();
        let out = Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(",UP"), "lo down: {text}");
        // A fresh namespace holds nothing but lo.
        let out = Command::new("nsenter")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "-o", "link"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
        drop(fd);
        remove_netns(&path);
        assert!(!path.exists());
        assert!(mounts_under(&[dir.path()]).is_empty());
    }
}
