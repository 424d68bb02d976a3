//! The crate's error type. Every variant names the object (path, link,
//! address, namespace) that failed so a log line is enough to act on.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Errors from herd-net.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A namespace operation (create, bind mount, open, setns) failed.
    #[error("netns {op} {path}: {source}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `NetNs::create` found the name already taken.
    #[error("netns {0} already exists")]
    NetnsExists(PathBuf),
    /// A name (namespace, interface, id) is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A helper thread could not be spawned or panicked.
    #[error("netns worker thread for {path}: {reason}")]
    Thread { path: PathBuf, reason: String },
    /// The call needs a tokio runtime and none is current.
    #[error("no tokio runtime: {0}")]
    NoRuntime(String),
    /// A netlink request failed; `op` says which and on what.
    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// Opening a netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// A link that must exist does not.
    #[error("link {name} not found{where_}")]
    LinkNotFound { name: String, where_: String },
    /// An interface with the wanted name exists but was not made by us.
    #[error("link {name} exists in {netns} and is not ours: {reason}")]
    LinkConflict {
        name: String,
        netns: PathBuf,
        reason: String,
    },
    /// CHECK found a difference between wanted and actual state.
    #[error("check {id}/{ifname}: {what}")]
    CheckFailed {
        id: String,
        ifname: String,
        what: String,
    },
    /// Writing or reading a sysctl failed.
    #[error("sysctl {path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The `nft` command failed; stderr is kept.
    #[error("nft {op} failed ({status}): {stderr}")]
    Nft {
        op: &'static str,
        status: String,
        stderr: String,
    },
    /// IPAM state I/O failed.
    #[error("ipam {op} {path}: {source}")]
    Ipam {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No free address is left in the subnet.
    #[error("ipam: no free address in {subnet}")]
    Exhausted { subnet: ipnet::Ipv4Net },
    /// A specific address was asked for but belongs to someone else.
    #[error("ipam: {ip} is already allocated to {owner}")]
    AddressInUse { ip: Ipv4Addr, owner: String },
    /// A specific address is not allocatable in this subnet.
    #[error("ipam: {ip} is not allocatable in {subnet}: {reason}")]
    AddressNotAllocatable {
        ip: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
        reason: &'static str,
    },
    /// A node route's gateway is not on a directly connected subnet (needs
    /// an overlay such as VXLAN, not implemented yet).
    #[error(
        "route to {cidr}: gateway {via} is not on a directly connected subnet{}; use the vxlan overlay (`sync_vxlan`) for it",
        dev.as_ref().map(|d| format!(" of {d}")).unwrap_or_default()
    )]
    GatewayNotDirect {
        cidr: ipnet::Ipv4Net,
        via: Ipv4Addr,
        dev: Option<String>,
    },
    /// A wanted route collides with one herd does not own.
    #[error("route to {cidr}: {reason}")]
    RouteConflict {
        cidr: ipnet::Ipv4Net,
        reason: String,
    },
    /// A Service spec is invalid; nothing was sent to the kernel.
    #[error("service {service}: {reason}")]
    InvalidService { service: String, reason: String },
    /// `nft` printed something we could not understand.
    #[error("nft {op}: unexpected output: {reason}")]
    NftOutput { op: &'static str, reason: String },
    /// The VXLAN device's underlay address is not held by any link of the
    /// netns; nothing was changed.
    #[error("vxlan {name}: local address {local} is not assigned to any link of this netns")]
    VxlanUnderlay { name: String, local: Ipv4Addr },
}

impl NetError {
    pub(crate) fn netlink(op: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetError::Netlink {
            op: op.into(),
            source,
        }
    }

    /// The errno of a failed netlink request, if this is one.
    pub fn netlink_errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(m.raw_code().abs()),
            _ => None,
        }
    }
}

/// errno of a netlink error, if any.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
