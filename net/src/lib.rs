//! herd-net: node networking over netlink (bridge, veth, IPAM, routes,
//! Service virtual IPs).
//!
//! Not built yet: this crate exists so the workspace has its fixed shape
//! (see the architecture document); the pod networking issue fills it.
