//! CNI specification versions this crate speaks.
//!
//! Supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0. The result shape is the
//! same for all of them except that before 1.0.0 every `ips` entry carries a
//! `"version": "4"|"6"` field, and 1.1.0 added optional interface/route
//! attributes (`mtu`, `socketPath`, `pciID`, route `mtu`/`advmss`/`priority`/
//! `table`/`scope`). CHECK exists from 0.4.0, STATUS and GC from 1.1.0.

use std::fmt;

/// One supported CNI spec version; ordered oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];
    /// The newest supported version (used when the caller's is unknown).
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parse an exact version string; `None` when unsupported.
    pub fn parse(s: &str) -> Option<CniVersion> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Before 1.0.0, `ips[].version` is part of the result.
    pub fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// CHECK was introduced in 0.4.0.
    pub fn supports_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC were introduced in 1.1.0, together with the optional
    /// interface/route attributes.
    pub fn supports_status_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// The supported version strings, as the VERSION verb reports them.
    pub fn supported_strings() -> Vec<String> {
        Self::ALL.iter().map(|v| v.as_str().to_string()).collect()
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_roundtrip_and_order() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(CniVersion::parse("0.2.0"), None);
        assert_eq!(CniVersion::parse("1.1"), None);
        assert!(CniVersion::V0_3_1 < CniVersion::V0_4_0);
        assert!(!CniVersion::V0_3_1.supports_check());
        assert!(CniVersion::V0_4_0.supports_check());
        assert!(!CniVersion::V1_0_0.supports_status_gc());
        assert!(CniVersion::V0_4_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.ips_have_version());
    }
}
