//! CNI error results and the one place internal errors become CNI codes.
//!
//! Codes 0-99 are the spec's well-known codes; 100+ are herd-cni specific
//! (see [`ErrorCode`]). An error is written to stdout as
//! `{"cniVersion", "code", "msg", "details"}` (details omitted when empty)
//! and the plugin exits with status 1.

use serde::{Deserialize, Serialize};

use crate::version::CniVersion;

/// A CNI error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnv,
    /// 5: I/O failure.
    Io,
    /// 6: failed to decode content.
    Decode,
    /// 7: invalid network config.
    InvalidConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: STATUS, the plugin is not available.
    NotAvailable,
    /// 51: STATUS, not available due to limited connectivity.
    LimitedConnectivity,
    /// 100: setting up or tearing down the pod network failed (netlink).
    Network,
    /// 101: the address pool is exhausted.
    AddressesExhausted,
    /// 102: a delegated plugin could not be run or gave unreadable output.
    Delegate,
    /// 103: CHECK found the network different from the expected state.
    CheckFailed,
    /// 199: internal error (a caught panic).
    Internal,
    /// Any other code, e.g. passed through from a delegated plugin.
    Other(u32),
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnv => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Network => 100,
            ErrorCode::AddressesExhausted => 101,
            ErrorCode::Delegate => 102,
            ErrorCode::CheckFailed => 103,
            ErrorCode::Internal => 199,
            ErrorCode::Other(c) => c,
        }
    }

    pub fn from_code(code: u32) -> ErrorCode {
        match code {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnv,
            5 => ErrorCode::Io,
            6 => ErrorCode::Decode,
            7 => ErrorCode::InvalidConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::NotAvailable,
            51 => ErrorCode::LimitedConnectivity,
            100 => ErrorCode::Network,
            101 => ErrorCode::AddressesExhausted,
            102 => ErrorCode::Delegate,
            103 => ErrorCode::CheckFailed,
            199 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// A CNI error: code, short message and optional details.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cni error {}: {msg}{}", code.code(), if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

/// The spec's error JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn invalid_env(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidEnv, msg)
    }

    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::InvalidConfig, msg)
    }

    pub fn decode(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::Decode, msg)
    }

    /// Code 2; the spec wants the key and the value in the message.
    pub fn unsupported_field(key: &str, value: &str, why: &str) -> CniError {
        CniError::new(
            ErrorCode::UnsupportedField,
            format!("unsupported field in network configuration: {key}={value}"),
        )
        .with_details(why)
    }

    pub fn incompatible_version(msg: impl Into<String>) -> CniError {
        CniError::new(ErrorCode::IncompatibleVersion, msg)
    }

    /// The wire form, in `version` (the configuration's, or the latest
    /// supported when it is unknown).
    pub fn to_result(&self, version: CniVersion) -> ErrorResult {
        ErrorResult {
            cni_version: version.as_str().to_string(),
            code: self.code.code(),
            msg: self.msg.clone(),
            details: self.details.clone(),
        }
    }

    /// Read back an error a delegated plugin printed.
    pub fn from_result(r: ErrorResult) -> CniError {
        CniError {
            code: ErrorCode::from_code(r.code),
            msg: r.msg,
            details: r.details,
        }
    }
}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> CniError {
        CniError::new(ErrorCode::Io, "i/o failure").with_details(e.to_string())
    }
}

impl From<serde_json::Error> for CniError {
    fn from(e: serde_json::Error) -> CniError {
        CniError::decode("failed to decode content").with_details(e.to_string())
    }
}

impl From<herd_net::NetError> for CniError {
    fn from(e: herd_net::NetError) -> CniError {
        crate::net_errors::translate(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip_and_json_shape() {
        for c in [
            1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 199, 150,
        ] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
        let e = CniError::invalid_env("required env variables [CNI_NETNS] missing");
        let v = serde_json::to_value(e.to_result(CniVersion::V1_0_0)).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert!(v.get("details").is_none());
        let e = CniError::unsupported_field("subnet", "fd00::/64", "ipv6");
        assert!(e.msg.contains("subnet=fd00::/64"));
        let v = serde_json::to_value(e.to_result(CniVersion::V0_3_1)).unwrap();
        assert_eq!(v["details"], "ipv6");
    }
}
