//! Everything `herd agent --init` creates for a new cluster: the CA, the
//! 32-byte cluster key (gossip authentication and encryption) and the join
//! secret. Saved under one directory of the state dir (which the daemon
//! keeps on tmpfs): `ca.crt`, `ca.key`, `cluster.key` (raw 32 bytes) and
//! `join-secret`, secrets 0600, each written atomically.

use std::path::Path;

use super::{ClusterCa, JoinToken, PkiError, files, token};

pub const CLUSTER_KEY_FILE: &str = "cluster.key";
pub const JOIN_SECRET_FILE: &str = "join-secret";

/// The cluster CA, cluster key and join secret.
pub struct ClusterSecrets {
    ca: ClusterCa,
    cluster_key: [u8; 32],
    join_secret: String,
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl ClusterSecrets {
    /// A new CA, a random cluster key and a random join secret.
    pub fn create(cluster_name: &str) -> Result<Self, PkiError> {
        Ok(Self {
            ca: ClusterCa::create(cluster_name)?,
            cluster_key: rand::random(),
            join_secret: token::generate_secret(),
        })
    }

    /// Assembles secrets from parts (the join secret must be a valid token secret).
    pub fn from_parts(
        ca: ClusterCa,
        cluster_key: [u8; 32],
        join_secret: &str,
    ) -> Result<Self, PkiError> {
        JoinToken::new([0; 32], join_secret).map_err(|e| PkiError::BadSecret {
            path: JOIN_SECRET_FILE.into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            ca,
            cluster_key,
            join_secret: join_secret.to_owned(),
        })
    }

    /// Loads what [`Self::save`] wrote.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let ca = ClusterCa::load(dir)?;
        let key_path = dir.join(CLUSTER_KEY_FILE);
        let key = files::read(&key_path)?;
        files::warn_if_exposed(&key_path);
        let cluster_key: [u8; 32] = key.as_slice().try_into().map_err(|_| PkiError::BadSecret {
            path: key_path.clone(),
            reason: format!("{} bytes, expected 32", key.len()),
        })?;
        let secret_path = dir.join(JOIN_SECRET_FILE);
        let secret = files::read_string(&secret_path).map_err(|e| match e {
            PkiError::BadPem { path, reason } => PkiError::BadSecret { path, reason },
            other => other,
        })?;
        files::warn_if_exposed(&secret_path);
        let secret = secret.trim();
        JoinToken::new([0; 32], secret).map_err(|e| PkiError::BadSecret {
            path: secret_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            ca,
            cluster_key,
            join_secret: secret.to_owned(),
        })
    }

    /// Saves all of it into `dir` (created 0700 if missing).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        self.ca.save(dir)?;
        files::write_atomic(
            &dir.join(CLUSTER_KEY_FILE),
            &self.cluster_key,
            files::PRIVATE_MODE,
        )?;
        files::write_atomic(
            &dir.join(JOIN_SECRET_FILE),
            self.join_secret.as_bytes(),
            files::PRIVATE_MODE,
        )
    }

    pub fn ca(&self) -> &ClusterCa {
        &self.ca
    }

    pub fn cluster_key(&self) -> &[u8; 32] {
        &self.cluster_key
    }

    pub fn join_secret(&self) -> &str {
        &self.join_secret
    }

    /// The token to give joining nodes: `K10<CA hash>::<join secret>`.
    pub fn join_token(&self) -> JoinToken {
        JoinToken {
            ca_hash: self.ca.hash(),
            secret: self.join_secret.clone(),
        }
    }
}
