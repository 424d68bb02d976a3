//! A node's cluster identity on disk: created by `--init`, fetched with a
//! join token by `--join`, loaded on every later start.
//!
//! Layout of the cluster dir (`<root-dir>/cluster`, 0700):
//! - `ca.crt`, `ca.key`, `cluster.key`, `join-secret`: the cluster's
//!   secrets ([`ClusterSecrets`]). Every member holds them, so any member
//!   can admit the next node and the cluster survives the loss of the node
//!   that created it.
//! - `token`: the join token (`K10<ca-hash>::<secret>`), one line, 0600.
//! - `node.crt`, `node.key`: this node's certificate (mTLS between nodes).
//!   Written last: a node with `node.crt` has a complete identity, and a
//!   crash before that point leaves a directory that `--init`/`--join`
//!   simply redo.
//! - `seeds.json`: gossip addresses of members, refreshed while running,
//!   read at the next start to find the cluster again.
//!
//! A node that has an identity ignores `--init`/`--join` (with a log
//! line): restarting an agent with the same command line is safe.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::pki::{
    ClusterCa, ClusterSecrets, JoinToken, NODE_CERT_FILE, NodeCert, PkiError, TokenError,
};
use crate::cluster::rpc::{JoinError, join};

const TOKEN_FILE: &str = "token";
const SEEDS_FILE: &str = "seeds.json";
/// How long one join attempt may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How this start relates to the cluster.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// Create a new cluster unless this node already belongs to one.
    Init,
    /// Join through the member at `addr` unless already a member.
    Join { addr: String, token: String },
    /// Only restart an existing identity.
    Existing,
}

/// What this start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Created,
    Joined,
    Restarted,
}

/// This node's cluster identity.
#[derive(Debug)]
pub struct Identity {
    pub secrets: Arc<ClusterSecrets>,
    pub node: NodeCert,
    /// Gossip addresses to announce to (empty for a new cluster).
    pub seeds: Vec<SocketAddr>,
    pub origin: Origin,
    pub dir: PathBuf,
}

/// Why the identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cluster state in {dir}")]
    Pki {
        dir: PathBuf,
        #[source]
        source: PkiError,
    },
    #[error("invalid join token")]
    Token(#[from] TokenError),
    #[error("joining the cluster failed")]
    Join(#[from] JoinError),
    #[error("the member at {addr} did not share the cluster CA key; herd members always do")]
    NoCaKey { addr: String },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "{dir} holds no cluster identity: start the first node with --init, the others with --join ADDR --token T"
    )]
    NoIdentity { dir: PathBuf },
}

fn pki(dir: &Path) -> impl FnOnce(PkiError) -> BootstrapError + '_ {
    move |source| BootstrapError::Pki {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Whether `dir` holds a complete identity.
pub fn has_identity(dir: &Path) -> bool {
    dir.join(NODE_CERT_FILE).exists()
}

/// Loads, creates or fetches this node's identity (see the module docs).
/// `addresses` become the IP SANs of a new node certificate.
pub async fn prepare(
    dir: &Path,
    mode: &Bootstrap,
    node_name: &str,
    addresses: &[IpAddr],
) -> Result<Identity, BootstrapError> {
    if has_identity(dir) {
        if !matches!(mode, Bootstrap::Existing) {
            tracing::info!(dir = %dir.display(), "this node already belongs to a cluster; --init/--join ignored");
        }
        let secrets = ClusterSecrets::load(dir).map_err(pki(dir))?;
        let node = NodeCert::load(dir, node_name).map_err(pki(dir))?;
        return Ok(Identity {
            secrets: Arc::new(secrets),
            node,
            seeds: load_seeds(dir),
            origin: Origin::Restarted,
            dir: dir.to_path_buf(),
        });
    }
    let (secrets, node, seeds, origin) = match mode {
        Bootstrap::Existing => {
            return Err(BootstrapError::NoIdentity {
                dir: dir.to_path_buf(),
            });
        }
        Bootstrap::Init => {
            let secrets = ClusterSecrets::create("herd").map_err(pki(dir))?;
            let node = secrets
                .ca()
                .issue_node_cert(node_name, addresses, &[])
                .map_err(pki(dir))?;
            (secrets, node, Vec::new(), Origin::Created)
        }
        Bootstrap::Join { addr, token } => {
            let token = JoinToken::parse(token.trim())?;
            let m = join(addr, &token, node_name, addresses, JOIN_TIMEOUT).await?;
            if m.ca_key_pem.is_empty() {
                return Err(BootstrapError::NoCaKey { addr: addr.clone() });
            }
            let ca = ClusterCa::from_parts(&m.ca_cert_pem, &m.ca_key_pem, Path::new(addr))
                .map_err(pki(dir))?;
            let secrets =
                ClusterSecrets::from_parts(ca, m.cluster_key, token.secret()).map_err(pki(dir))?;
            let seeds = m.members.iter().filter_map(|a| a.parse().ok()).collect();
            (secrets, m.node, seeds, Origin::Joined)
        }
    };
    secrets.save(dir).map_err(pki(dir))?;
    write_private(
        &dir.join(TOKEN_FILE),
        format!("{}\n", secrets.join_token()).as_bytes(),
    )?;
    save_seeds(dir, &seeds);
    // Last: its presence marks a complete identity.
    node.save(dir).map_err(pki(dir))?;
    Ok(Identity {
        secrets: Arc::new(secrets),
        node,
        seeds,
        origin,
        dir: dir.to_path_buf(),
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| BootstrapError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn load_seeds(dir: &Path) -> Vec<SocketAddr> {
    std::fs::read(dir.join(SEEDS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<SocketAddr>>(&b).ok())
        .unwrap_or_default()
}

/// Remembers `seeds` for the next start (best effort: a failure is logged;
/// the Raft membership still names every peer).
pub fn save_seeds(dir: &Path, seeds: &[SocketAddr]) {
    let Ok(bytes) = serde_json::to_vec(seeds) else {
        return;
    };
    if let Err(e) = write_private(&dir.join(SEEDS_FILE), &bytes) {
        tracing::warn!(error = %e, "saving gossip seeds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn init_then_restart_keeps_the_identity_and_ignores_init() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("cluster");
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let first = prepare(&d, &Bootstrap::Init, "n1", &[ip]).await.unwrap();
        assert_eq!(first.origin, Origin::Created);
        let token = std::fs::read_to_string(d.join(TOKEN_FILE)).unwrap();
        assert!(token.starts_with("K10"), "{token}");
        let again = prepare(&d, &Bootstrap::Init, "n1", &[ip]).await.unwrap();
        assert_eq!(again.origin, Origin::Restarted);
        assert_eq!(
            again.secrets.ca().hash(),
            first.secrets.ca().hash(),
            "a restart must not create a new CA"
        );
        assert_eq!(again.secrets.cluster_key(), first.secrets.cluster_key());
    }

    #[tokio::test]
    async fn no_identity_and_no_mode_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = prepare(dir.path(), &Bootstrap::Existing, "n1", &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--init"), "{err}");
    }

    #[tokio::test]
    async fn a_malformed_token_is_refused_before_dialling() {
        let dir = tempfile::tempdir().unwrap();
        let mode = Bootstrap::Join {
            addr: "127.0.0.1:1".into(),
            token: "not-a-token".into(),
        };
        let err = prepare(dir.path(), &mode, "n1", &[]).await.unwrap_err();
        assert!(matches!(err, BootstrapError::Token(_)), "{err}");
        assert!(!has_identity(dir.path()));
    }
}
