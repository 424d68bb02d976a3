//! Translation of herd-net errors into CNI error codes: the one place.
//!
//! | NetError                                   | code |
//! |--------------------------------------------|------|
//! | Exhausted                                  | 101  |
//! | InvalidName, InvalidConfig, Address*       | 7    |
//! | Ipam, Sysctl, Socket, Netns (I/O)          | 5    |
//! | CheckFailed                                | 103  |
//! | anything else (netlink, nft, links, …)     | 100  |
//!
//! The full error text is always kept in `details`.

use herd_net::NetError;

use crate::error::{CniError, ErrorCode};

pub(crate) fn translate(e: &NetError) -> CniError {
    let (code, msg) = match e {
        NetError::Exhausted { .. } => (ErrorCode::AddressesExhausted, "no free address"),
        NetError::InvalidName { .. }
        | NetError::InvalidConfig(_)
        | NetError::AddressInUse { .. }
        | NetError::AddressNotAllocatable { .. } => {
            (ErrorCode::InvalidConfig, "invalid network config")
        }
        NetError::Ipam { .. }
        | NetError::Sysctl { .. }
        | NetError::Socket(_)
        | NetError::Netns { .. } => (ErrorCode::Io, "i/o failure"),
        NetError::CheckFailed { .. } => (ErrorCode::CheckFailed, "pod network differs"),
        _ => (ErrorCode::Network, "pod network operation failed"),
    };
    CniError::new(code, msg).with_details(e.to_string())
}
