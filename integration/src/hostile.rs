//! Hostile layer tarballs, built from raw 512-byte ustar headers.
//!
//! Every header has a valid checksum and `ustar\0` `00` magic, so a parser
//! cannot reject these on framing grounds: it has to notice the hostile
//! field. Each builder returns the bytes plus `culprit`, the entry name a
//! good error message should mention. Archives that are meant to be
//! complete end with two zero blocks; the huge-size ones deliberately stop
//! after a few bytes of data, as an attacker's stream would.
//!
//! What a safe unpacker must do with each (none may write outside the
//! unpack root or allocate/reserve the declared size):
//! - [`path_traversal`], [`nested_traversal`]: reject (or confine) `..`.
//! - [`absolute_path`]: reject, or strip the leading `/` and confine.
//! - [`symlink_escape_absolute`], [`symlink_escape_relative`]: the symlink
//!   itself may be created, but writing `esc/evil` must not follow it.
//! - [`hardlink_escape`]: reject a link target outside the root.
//! - [`huge_size_base256`], [`huge_size_octal`], [`huge_pax`],
//!   [`huge_gnu_longname`]: fail on the short read / absurd size without
//!   buffering the declared length.
//! - [`char_device`]: reject or skip device nodes.

use crate::tarw::{BLOCK, RawHeader, kind, padding, pax_records};

/// A hostile tarball and the entry name its error should name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileTar {
    pub bytes: Vec<u8>,
    pub culprit: String,
}

/// About 8 EiB: the largest size a signed 64-bit length can hold.
pub const HUGE_BASE256: u64 = i64::MAX as u64;
/// The largest size 11 octal digits can encode (8 GiB - 1).
pub const HUGE_OCTAL: u64 = 0o77777777777;

struct Builder(Vec<u8>);

impl Builder {
    fn new() -> Self {
        Self(Vec::new())
    }
    fn header(&mut self, h: &mut RawHeader) -> &mut Self {
        self.0.extend_from_slice(&h.finish());
        self
    }
    fn data(&mut self, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(data);
        self.0
            .extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = RawHeader::new();
        h.set_name(name.as_bytes()).set_size(data.len() as u64);
        self.header(&mut h).data(data)
    }
    fn link(&mut self, name: &str, kind: u8, target: &str) -> &mut Self {
        let mut h = RawHeader::new();
        h.set_name(name.as_bytes())
            .set_kind(kind)
            .set_mode(0o777)
            .set_linkname(target.as_bytes());
        self.header(&mut h)
    }
    fn end(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 2 * BLOCK]);
        std::mem::take(&mut self.0)
    }
    fn truncated(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

fn hostile(bytes: Vec<u8>, culprit: &str) -> HostileTar {
    HostileTar {
        bytes,
        culprit: culprit.into(),
    }
}

/// A regular file named `../evil`.
pub fn path_traversal() -> HostileTar {
    hostile(Builder::new().file("../evil", b"evil\n").end(), "../evil")
}

/// A directory `a/` then a file `a/../../evil`.
pub fn nested_traversal() -> HostileTar {
    let mut dir = RawHeader::new();
    dir.set_name(b"a/").set_kind(kind::DIR).set_mode(0o755);
    let bytes = Builder::new()
        .header(&mut dir)
        .file("a/../../evil", b"evil\n")
        .end();
    hostile(bytes, "a/../../evil")
}

/// A regular file named `/etc/evil`.
pub fn absolute_path() -> HostileTar {
    hostile(
        Builder::new().file("/etc/evil", b"evil\n").end(),
        "/etc/evil",
    )
}

/// A symlink `esc -> /`, then a regular file `esc/evil`.
pub fn symlink_escape_absolute() -> HostileTar {
    let bytes = Builder::new()
        .link("esc", kind::SYMLINK, "/")
        .file("esc/evil", b"evil\n")
        .end();
    hostile(bytes, "esc/evil")
}

/// A symlink `esc -> ../../..`, then a regular file `esc/evil`.
pub fn symlink_escape_relative() -> HostileTar {
    let bytes = Builder::new()
        .link("esc", kind::SYMLINK, "../../..")
        .file("esc/evil", b"evil\n")
        .end();
    hostile(bytes, "esc/evil")
}

/// A hard link (type `1`) named `evil-link` whose target is `../../outside`.
pub fn hardlink_escape() -> HostileTar {
    hostile(
        Builder::new()
            .link("evil-link", kind::HARDLINK, "../../outside")
            .end(),
        "evil-link",
    )
}

/// A file `huge` whose size field is base-256 [`HUGE_BASE256`] (~8 EiB),
/// followed by only 16 bytes of data and no end blocks.
pub fn huge_size_base256() -> HostileTar {
    let mut h = RawHeader::new();
    h.set_name(b"huge").set_size_base256(HUGE_BASE256);
    hostile(
        Builder::new()
            .header(&mut h)
            .truncated_with(b"0123456789abcdef"),
        "huge",
    )
}

/// A file `huge` whose octal size field is [`HUGE_OCTAL`], followed by
/// only 16 bytes of data and no end blocks.
pub fn huge_size_octal() -> HostileTar {
    let mut h = RawHeader::new();
    h.set_name(b"huge").set_size(HUGE_OCTAL);
    hostile(
        Builder::new()
            .header(&mut h)
            .truncated_with(b"0123456789abcdef"),
        "huge",
    )
}

/// A PAX extended header (`x`, named `PaxHeaders/huge`) declaring
/// [`HUGE_OCTAL`] bytes of records, followed by one short record and EOF.
/// The culprit is the entry the PAX header would apply to, `huge`, whose
/// name appears in the record that does arrive.
pub fn huge_pax() -> HostileTar {
    let mut h = RawHeader::new();
    h.set_name(b"PaxHeaders/huge")
        .set_kind(kind::PAX)
        .set_size(HUGE_OCTAL);
    let records = pax_records(&[("path", b"huge")]);
    hostile(
        Builder::new().header(&mut h).truncated_with(&records),
        "huge",
    )
}

/// A GNU long-name entry (`L`, `././@LongLink`) declaring [`HUGE_OCTAL`]
/// bytes of name, followed by 16 bytes and EOF.
pub fn huge_gnu_longname() -> HostileTar {
    let mut h = RawHeader::new();
    h.set_name(b"././@LongLink")
        .set_kind(kind::GNU_LONGNAME)
        .set_size(HUGE_OCTAL);
    hostile(
        Builder::new()
            .header(&mut h)
            .truncated_with(b"aaaaaaaaaaaaaaaa"),
        "././@LongLink",
    )
}

/// A character device `dev-mem` (major 1, minor 1, like `/dev/mem`).
pub fn char_device() -> HostileTar {
    let mut h = RawHeader::new();
    h.set_name(b"dev-mem").set_kind(b'3').set_mode(0o666);
    h.octal(329, 8, 1).octal(337, 8, 1);
    hostile(Builder::new().header(&mut h).end(), "dev-mem")
}

/// Every hostile tarball, named, for table-driven tests.
pub fn all() -> Vec<(&'static str, HostileTar)> {
    vec![
        ("path_traversal", path_traversal()),
        ("nested_traversal", nested_traversal()),
        ("absolute_path", absolute_path()),
        ("symlink_escape_absolute", symlink_escape_absolute()),
        ("symlink_escape_relative", symlink_escape_relative()),
        ("hardlink_escape", hardlink_escape()),
        ("huge_size_base256", huge_size_base256()),
        ("huge_size_octal", huge_size_octal()),
        ("huge_pax", huge_pax()),
        ("huge_gnu_longname", huge_gnu_longname()),
        ("char_device", char_device()),
    ]
}

impl Builder {
    fn truncated_with(&mut self, data: &[u8]) -> Vec<u8> {
        self.0.extend_from_slice(data);
        self.truncated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(block: &[u8]) -> bool {
        let mut copy = block.to_vec();
        copy[148..156].fill(b' ');
        let sum: u32 = copy.iter().map(|b| u32::from(*b)).sum();
        let stored = String::from_utf8_lossy(&block[148..154]).to_string();
        u32::from_str_radix(&stored, 8).ok() == Some(sum)
    }

    #[test]
    fn first_header_is_well_formed() {
        for (name, t) in all() {
            assert!(t.bytes.len() >= BLOCK, "{name}");
            let first = &t.bytes[..BLOCK];
            assert!(checksum_ok(first), "{name}: bad checksum");
            assert_eq!(&first[257..263], b"ustar\0", "{name}");
            assert!(!t.culprit.is_empty(), "{name}");
        }
    }

    #[test]
    fn base256_size_encodes_huge_value() {
        let t = huge_size_base256();
        assert_eq!(t.bytes[124], 0x80);
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&t.bytes[128..136]);
        assert_eq!(u64::from_be_bytes(raw), HUGE_BASE256);
        assert_eq!(t.bytes.len(), BLOCK + 16);
    }

    /// GNU tar is an independent parser: it must see the names we meant.
    #[test]
    fn gnu_tar_lists_intended_names() -> anyhow::Result<()> {
        for (name, t) in [
            ("path_traversal", path_traversal()),
            ("nested_traversal", nested_traversal()),
            ("absolute_path", absolute_path()),
            ("symlink_escape_relative", symlink_escape_relative()),
            ("hardlink_escape", hardlink_escape()),
        ] {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("t.tar");
            std::fs::write(&path, &t.bytes)?;
            let out = std::process::Command::new("tar")
                .arg("-tvf")
                .arg(&path)
                .output()?;
            let listing = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(listing.contains(&t.culprit), "{name}: {listing}");
        }
        Ok(())
    }

    #[test]
    fn gnu_tar_rejects_huge_entries() -> anyhow::Result<()> {
        for (name, t) in [
            ("octal", huge_size_octal()),
            ("base256", huge_size_base256()),
            ("pax", huge_pax()),
        ] {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("t.tar");
            std::fs::write(&path, &t.bytes)?;
            let out = std::process::Command::new("tar")
                .arg("-xf")
                .arg(&path)
                .current_dir(dir.path())
                .output()?;
            assert!(
                !out.status.success(),
                "{name}: tar accepted a truncated huge entry"
            );
        }
        Ok(())
    }
}
