//! CNI spec version strings (`"major.minor.patch"`) and the version gates the
//! spec puts on verbs: CHECK and `prevResult` on DEL need 0.4.0, chaining with
//! `prevResult` needs 0.3.0, STATUS and GC need 1.1.0.

use std::cmp::Ordering;
use std::fmt;

/// A parsed CNI spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number.
    pub patch: u32,
}

impl SpecVersion {
    /// 0.3.0: rich results and chaining with `prevResult`.
    pub const V0_3_0: SpecVersion = SpecVersion::new(0, 3, 0);
    /// 0.4.0: CHECK, and `prevResult` passed on DEL.
    pub const V0_4_0: SpecVersion = SpecVersion::new(0, 4, 0);
    /// 1.0.0.
    pub const V1_0_0: SpecVersion = SpecVersion::new(1, 0, 0);
    /// 1.1.0: STATUS and GC.
    pub const V1_1_0: SpecVersion = SpecVersion::new(1, 1, 0);

    /// Builds a version from its numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        SpecVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `"a.b.c"` (also `"a.b"`, patch 0). `None` for anything else.
    pub fn parse(s: &str) -> Option<SpecVersion> {
        let mut parts = s.split('.');
        let major = parse_num(parts.next()?)?;
        let minor = parse_num(parts.next()?)?;
        let patch = match parts.next() {
            Some(p) => parse_num(p)?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(SpecVersion::new(major, minor, patch))
    }

    /// Whether this version is at least `other`.
    pub fn at_least(self, other: SpecVersion) -> bool {
        self.cmp(&other) != Ordering::Less
    }
}

fn parse_num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert_eq!(SpecVersion::parse("1.0.0"), Some(SpecVersion::V1_0_0));
        assert_eq!(SpecVersion::parse("0.4"), Some(SpecVersion::V0_4_0));
        for bad in [
            "",
            "1",
            "1.x.0",
            "1.0.0.0",
            "-1.0.0",
            "1..0",
            "99999999999.0.0",
        ] {
            assert_eq!(SpecVersion::parse(bad), None, "{bad:?}");
        }
        assert!(SpecVersion::V1_1_0.at_least(SpecVersion::V1_0_0));
        assert!(!SpecVersion::V0_3_0.at_least(SpecVersion::V0_4_0));
        assert!(
            SpecVersion::parse("0.10.0")
                .unwrap()
                .at_least(SpecVersion::V0_4_0)
        );
        assert_eq!(SpecVersion::V0_4_0.to_string(), "0.4.0");
    }
}
