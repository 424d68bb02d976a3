//! Service virtual IPs on nftables: ClusterIP, NodePort and
//! sessionAffinity ClientIP, load-balanced to ready endpoints.
//!
//! One table, `ip herd` (family `ip`: IPv4 only for now; the bridge's
//! masquerade lives in the separate `inet herd` table), owned entirely by
//! [`ServiceProxy`]; its layout is described in [`ruleset`]'s docs.
//!
//! Guarantees:
//! - Specs are validated as a whole ([`validate_all`]) before anything
//!   reaches the kernel; a bad spec is a [`NetError::InvalidService`].
//! - [`ServiceProxy::sync`] sends ONE `nft -j -f -` transaction holding
//!   only what changed since the last successful sync (at start-up: since
//!   what the kernel listing shows). Unchanged chains and map elements are
//!   not touched, so their handles stay; a changed endpoint list rewrites
//!   (flush + refill) only that service port's chain. The table is never
//!   flushed as a whole on the incremental path.
//! - nft applies a transaction atomically. If the incremental transaction
//!   is refused (someone edited the table behind our back), the table is
//!   rebuilt once from scratch in one transaction and
//!   [`SyncStats::full_reload`] says so; if that fails too, the error
//!   (with nft's stderr) is returned and the next sync re-reads the kernel.
//! - Calls block on the `nft` process: use `spawn_blocking` from async code.
//!
//! Not done: IPv6, externalTrafficPolicy Local, loadBalancer/external IPs,
//! rejecting unknown ports of a cluster IP, conntrack cleanup of stale UDP
//! flows on endpoint removal, NodePorts on 127.0.0.0/8.

mod diff;
mod model;
mod nft;
pub mod ruleset;

use std::path::PathBuf;

pub use diff::SyncStats;
pub use model::{MAX_AFFINITY, Protocol, ServicePort, ServiceSpec, validate_all};

use crate::{NetError, NetNs};
use ruleset::Applied;

/// Where and how the proxy works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Table name (family `ip`); default `herd`.
    pub table: String,
    /// Packet mark bit asking for masquerade in postrouting; default 0x4000.
    pub mark: u32,
    /// The nft binary; default `$HERD_NFT` or `nft` from PATH.
    pub nft: PathBuf,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            table: "herd".into(),
            mark: 0x4000,
            nft: std::env::var_os("HERD_NFT").map_or_else(|| PathBuf::from("nft"), PathBuf::from),
        }
    }
}

/// The Service proxy of one node (one netns).
#[derive(Debug)]
pub struct ServiceProxy {
    ns: Option<NetNs>,
    cfg: ProxyConfig,
    /// What the kernel holds; None = unknown (read it before the next
    /// diff).
    applied: Option<Applied>,
    /// Table, maps and base chains declared by this process.
    bootstrapped: bool,
}

impl ServiceProxy {
    /// A proxy working in `ns` (None = the caller's netns). Nothing is sent
    /// to the kernel until the first sync.
    pub fn new(ns: Option<NetNs>, cfg: ProxyConfig) -> Result<ServiceProxy, NetError> {
        let table_ok = !cfg.table.is_empty()
            && cfg.table.len() <= 64
            && cfg
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !table_ok {
            return Err(NetError::InvalidName {
                what: "nft table",
                value: cfg.table.clone(),
                reason: "must be 1-64 of a-z, A-Z, 0-9, '-', '_'",
            });
        }
        if cfg.mark.count_ones() != 1 {
            return Err(NetError::InvalidConfig(format!(
                "masquerade mark {:#x} must be a single bit",
                cfg.mark
            )));
        }
        Ok(ServiceProxy {
            ns,
            cfg,
            applied: None,
            bootstrapped: false,
        })
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Make the table match `desired` with one incremental transaction
    /// (see module docs).
    pub fn sync(&mut self, desired: &[ServiceSpec]) -> Result<SyncStats, NetError> {
        validate_all(desired)?;
        let wanted = ruleset::build(desired, self.cfg.mark);
        let old = match self.applied.take() {
            Some(a) => a,
            None => match nft::list(self.ns.as_ref(), &self.cfg.nft, &self.cfg.table) {
                Ok(found) => found.unwrap_or_default(),
                // A table we cannot read is rebuilt rather than diffed.
                Err(NetError::NftOutput { reason, .. }) => {
                    tracing::warn!(table = %self.cfg.table, %reason, "unreadable nft table; rebuilding it");
                    let mut stats = self.reload(&wanted)?;
                    stats.full_reload = true;
                    return Ok(stats);
                }
                Err(e) => return Err(e),
            },
        };
        let (tx, stats) = diff::diff(&self.cfg.table, &old, &wanted, !self.bootstrapped);
        if tx.objects.is_empty() {
            self.applied = Some(old);
            return Ok(stats);
        }
        match self.apply("sync", tx) {
            Ok(()) => {
                self.bootstrapped = true;
                self.applied = Some(wanted.applied());
                Ok(stats)
            }
            Err(NetError::Nft { stderr, .. }) => {
                tracing::warn!(
                    table = %self.cfg.table,
                    %stderr,
                    "incremental nft transaction refused; rebuilding the table"
                );
                let mut stats = self.reload(&wanted)?;
                stats.full_reload = true;
                Ok(stats)
            }
            Err(e) => Err(e),
        }
    }

    /// The naive way: delete the table and declare everything again in one
    /// transaction. Kept for recovery and as the benchmark baseline.
    pub fn sync_full(&mut self, desired: &[ServiceSpec]) -> Result<SyncStats, NetError> {
        validate_all(desired)?;
        let wanted = ruleset::build(desired, self.cfg.mark);
        self.reload(&wanted)
    }

    fn reload(&mut self, wanted: &ruleset::Ruleset) -> Result<SyncStats, NetError> {
        self.applied = None;
        let (tx, stats) = diff::full(&self.cfg.table, wanted);
        self.apply("reload", tx)?;
        self.bootstrapped = true;
        self.applied = Some(wanted.applied());
        Ok(stats)
    }

    /// Delete the whole table (teardown). Idempotent.
    pub fn delete_table(&mut self) -> Result<(), NetError> {
        self.applied = None;
        self.bootstrapped = false;
        let table = self.cfg.table.clone();
        match nft::run(
            self.ns.as_ref(),
            &self.cfg.nft,
            "delete table",
            &["delete", "table", "ip", &table],
            None,
        ) {
            Ok(_) => Ok(()),
            Err(NetError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Forget what was applied: the next sync re-reads the kernel table
    /// (what a restarted agent does).
    pub fn forget(&mut self) {
        self.applied = None;
        self.bootstrapped = false;
    }

    fn apply(&mut self, op: &'static str, tx: diff::Tx) -> Result<(), NetError> {
        let doc = serde_json::json!({ "nftables": tx.objects });
        let json = serde_json::to_vec(&doc).map_err(|e| NetError::NftOutput {
            op,
            reason: format!("serialize transaction: {e}"),
        })?;
        nft::run(
            self.ns.as_ref(),
            &self.cfg.nft,
            op,
            &["-j", "-f", "-"],
            Some(&json),
        )
        .map(|_| ())
    }
}
