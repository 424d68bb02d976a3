//! User and group resolution against the container's rootfs.
//!
//! `securityContext.runAsUser`/`runAsGroup` win over the image's `User`
//! (`uid`, `uid:gid`, `name`, `name:group`, `uid:group`, `name:gid`). Names
//! are looked up in the rootfs's `/etc/passwd` and `/etc/group`, opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: a symlink in the
//! (untrusted) image resolves inside the rootfs, never on the host. Files are
//! read up to [`MAX_DB_BYTES`]; a missing file is an empty database, a
//! non-regular one an error.
//!
//! The primary gid of a numeric uid is the one in `/etc/passwd` if the uid
//! is listed there, else 0 (containerd). Additional gids are the primary gid
//! (containerd since CVE-2023-25173), every group listing the user's name as
//! a member, then `supplementalGroups`, without duplicates.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::SpecError;

/// The most of `/etc/passwd` or `/etc/group` that is read.
pub const MAX_DB_BYTES: u64 = 4 * 1024 * 1024;

/// The user a container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The user's name when found in `/etc/passwd`.
    pub name: Option<String>,
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves the process user of container `container` (see module docs).
pub fn resolve_user(
    rootfs: &Path,
    container: &str,
    image_user: &str,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    supplemental_groups: &[u32],
) -> Result<ResolvedUser, SpecError> {
    let db = Db::new(rootfs);
    let passwd = db.passwd()?;
    let (user_part, group_part) = match run_as_user {
        Some(uid) => (uid.to_string(), None),
        None => match image_user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (image_user.to_string(), None),
        },
    };
    let bad = || SpecError::BadUser {
        container: container.to_string(),
        user: image_user.to_string(),
    };
    if group_part.as_deref() == Some("") {
        return Err(bad());
    }

    let (uid, mut gid, name) =
        if user_part.is_empty() {
            if group_part.is_some() {
                return Err(bad());
            }
            let e = passwd.iter().find(|e| e.uid == 0);
            (0, e.map_or(0, |e| e.gid), e.map(|e| e.name.clone()))
        } else if let Ok(uid) = user_part.parse::<u32>() {
            let e = passwd.iter().find(|e| e.uid == uid);
            (uid, e.map_or(0, |e| e.gid), e.map(|e| e.name.clone()))
        } else {
            let e = passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
                SpecError::UnknownUser {
                    container: container.to_string(),
                    user: user_part.clone(),
                }
            })?;
            (e.uid, e.gid, Some(e.name.clone()))
        };

    let groups = db.group()?;
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| SpecError::UnknownGroup {
                        container: container.to_string(),
                        group: g.clone(),
                    })?
                    .gid
            }
        };
    }
    if let Some(g) = run_as_group {
        gid = g;
    }

    let mut additional = vec![gid];
    if let Some(n) = &name {
        for g in groups.iter().filter(|g| g.members.iter().any(|m| m == n)) {
            additional.push(g.gid);
        }
    }
    additional.extend_from_slice(supplemental_groups);
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));

    Ok(ResolvedUser {
        uid,
        gid,
        name,
        additional_gids: additional,
    })
}

struct Db<'a> {
    rootfs: &'a Path,
}

impl<'a> Db<'a> {
    fn new(rootfs: &'a Path) -> Self {
        Db { rootfs }
    }

    fn err(&self, path: &str, source: std::io::Error) -> SpecError {
        SpecError::RootfsFile {
            rootfs: self.rootfs.to_path_buf(),
            path: path.to_string(),
            source,
        }
    }

    /// Reads `rel` (relative to the rootfs) confined to the rootfs; `None`
    /// when it does not exist.
    fn read(&self, rel: &str) -> Result<Option<String>, SpecError> {
        let root = rustix::fs::open(
            self.rootfs,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(".", e.into()))?;
        let fd: OwnedFd = match rustix::fs::openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(self.err(rel, e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err(rel, e.into()))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(self.err(
                rel,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"),
            ));
        }
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_DB_BYTES)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(rel, e))?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    fn passwd(&self) -> Result<Vec<PasswdEntry>, SpecError> {
        let text = self.read("etc/passwd")?.unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 4 || f[0].is_empty() || l.starts_with('#') {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .collect())
    }

    fn group(&self) -> Result<Vec<GroupEntry>, SpecError> {
        let text = self.read("etc/group")?.unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 3 || f[0].is_empty() || l.starts_with('#') {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                    members: f
                        .get(3)
                        .map(|m| {
                            m.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect())
    }
}
