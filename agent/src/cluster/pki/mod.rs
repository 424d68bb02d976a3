//! The cluster's trust: a CA created by the first node, certificates it
//! issues to nodes, the join token, and the secrets saved by `--init`.
//!
//! Guarantees:
//! - The CA is ECDSA P-256, self-signed, valid 10 years, path length 0 (it
//!   signs only leaf certificates). Node certificates are ECDSA P-256, valid
//!   1 year, carry both server and client authentication EKUs, and name the
//!   node (DNS SAN) and each of its IPs (IP SANs), so a peer can be dialled
//!   by IP and still verified.
//! - Files: `ca.crt`/`ca.key` (CA), `node.crt`/`node.key` (node). Keys are
//!   written 0600, certificates 0644, each atomically (temp file, fsync,
//!   rename, directory fsync). Loading any garbage gives a typed error
//!   naming the file, never a panic.
//! - Not done here: rotation and revocation (a compromised node key stays
//!   valid until it expires).

mod files;
mod secrets;
mod token;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

pub use secrets::ClusterSecrets;
pub use token::{JoinToken, MAX_SECRET_LEN, TokenError, generate_secret};

/// File names inside a PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const NODE_CERT_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";

const CA_YEARS: i16 = 10;
const NODE_DAYS: i32 = 365;

/// What went wrong creating, loading or saving certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad PEM in {path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("bad key in {path}: {source}")]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("bad certificate {what}: {source}")]
    BadCert {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("invalid node name {name:?}: {reason}")]
    NodeName { name: String, reason: &'static str },
    #[error("invalid DNS name {name:?}")]
    DnsName { name: String },
    #[error("bad {path}: {reason}")]
    BadSecret { path: PathBuf, reason: String },
    #[error("clock out of range: {0}")]
    Clock(String),
}

/// The cluster CA: its certificate and signing key.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("hash", &self.hash_hex())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new self-signed CA named after the cluster.
    pub fn create(cluster_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "CA key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("herd-ca@{cluster_name}"));
        dn.push(DnType::OrganizationName, cluster_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, |d| {
            d.checked_add(jiff::Span::new().years(CA_YEARS))
        })?;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = files::read_string(&cert_path)?;
        files::parse_certs(&cert_pem, &cert_path)?;
        let key_pem = files::read_string(&key_path)?;
        files::warn_if_exposed(&key_path);
        Self::from_pem(&cert_pem, &key_pem, &cert_path, &key_path)
    }

    /// A CA from its certificate and key (PEM), as a joining node gets
    /// them; `origin` names where they came from in errors.
    pub fn from_parts(cert_pem: &str, key_pem: &str, origin: &Path) -> Result<Self, PkiError> {
        Self::from_pem(cert_pem, key_pem, origin, origin)
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, PkiError> {
        let cert_der = files::parse_certs(cert_pem, cert_path)?.remove(0);
        files::parse_key(key_pem, key_path)?;
        let key = KeyPair::from_pem(key_pem).map_err(|source| PkiError::BadKey {
            path: key_path.to_path_buf(),
            source,
        })?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|source| PkiError::BadCert { what: "CA", source })?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    /// Saves `ca.crt` (0644) and `ca.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        files::ensure_dir(dir)?;
        files::write_atomic(
            &dir.join(CA_KEY_FILE),
            self.issuer.key().serialize_pem().as_bytes(),
            files::PRIVATE_MODE,
        )?;
        files::write_atomic(
            &dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            files::PUBLIC_MODE,
        )
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate's DER: what a join token pins.
    pub fn hash(&self) -> [u8; 32] {
        ca_hash(&self.cert_der)
    }

    /// [`Self::hash`] as lowercase hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash())
    }

    /// Issues a certificate for `node_name` with SANs = the node name, `dns`
    /// and `ips`; usable as both TLS server and TLS client.
    pub fn issue_node_cert(
        &self,
        node_name: &str,
        ips: &[IpAddr],
        dns: &[String],
    ) -> Result<NodeCert, PkiError> {
        validate_node_name(node_name)?;
        let mut sans = vec![dns_san(node_name)?];
        for name in dns {
            if name != node_name {
                sans.push(dns_san(name)?);
            }
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        self.issue_leaf(
            node_name,
            &[],
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// Issues a client certificate (client authentication EKU only, valid
    /// 1 year) with `CN=common_name` and one `O=` per group: what the API
    /// server reads as user and groups, as kube-apiserver does.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        groups: &[&str],
    ) -> Result<NodeCert, PkiError> {
        if common_name.is_empty() || common_name.len() > 64 {
            return Err(PkiError::NodeName {
                name: common_name.to_owned(),
                reason: "a user name must have 1 to 64 characters",
            });
        }
        self.issue_leaf(
            common_name,
            groups,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// A P-256 leaf certificate valid [`NODE_DAYS`], signed by the CA.
    fn issue_leaf(
        &self,
        common_name: &str,
        organizations: &[&str],
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<NodeCert, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "leaf key",
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        for o in organizations {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, |d| {
            d.checked_add(jiff::Span::new().days(NODE_DAYS))
        })?;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| PkiError::Generate {
                what: "leaf certificate",
                source,
            })?;
        Ok(NodeCert {
            node_name: common_name.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A node's certificate (PEM) and private key (PKCS#8 PEM).
#[derive(Clone)]
pub struct NodeCert {
    node_name: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Checks that both PEM texts parse (as received from a join).
    pub fn from_pem(node_name: &str, cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let origin = Path::new("<received>");
        files::parse_certs(cert_pem, origin)?;
        files::parse_key(key_pem, origin)?;
        KeyPair::from_pem(key_pem).map_err(|source| PkiError::BadKey {
            path: origin.to_path_buf(),
            source,
        })?;
        Ok(Self {
            node_name: node_name.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// Loads `node.crt` and `node.key` from `dir`.
    pub fn load(dir: &Path, node_name: &str) -> Result<Self, PkiError> {
        let cert_path = dir.join(NODE_CERT_FILE);
        let key_path = dir.join(NODE_KEY_FILE);
        let cert_pem = files::read_string(&cert_path)?;
        files::parse_certs(&cert_pem, &cert_path)?;
        let key_pem = files::read_string(&key_path)?;
        files::warn_if_exposed(&key_path);
        files::parse_key(&key_pem, &key_path)?;
        KeyPair::from_pem(&key_pem).map_err(|source| PkiError::BadKey {
            path: key_path.clone(),
            source,
        })?;
        Ok(Self {
            node_name: node_name.to_owned(),
            cert_pem,
            key_pem,
        })
    }

    /// Saves `node.crt` (0644) and `node.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        files::ensure_dir(dir)?;
        files::write_atomic(
            &dir.join(NODE_KEY_FILE),
            self.key_pem.as_bytes(),
            files::PRIVATE_MODE,
        )?;
        files::write_atomic(
            &dir.join(NODE_CERT_FILE),
            self.cert_pem.as_bytes(),
            files::PUBLIC_MODE,
        )
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        Ok(files::parse_certs(&self.cert_pem, Path::new("<node certificate>"))?.remove(0))
    }
}

/// SHA-256 of a certificate's DER.
pub fn ca_hash(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Constant-time equality of two hashes.
pub(crate) fn token_hash_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    token::constant_time_eq(a, b)
}

/// The CA certificate's DER from its PEM (first block).
pub fn ca_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    Ok(files::parse_certs(pem, Path::new("<CA certificate>"))?.remove(0))
}

/// Node names are DNS-1123 subdomains (Kubernetes node names).
pub fn validate_node_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| PkiError::NodeName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated label must have 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "only lowercase letters, digits, '-' and '.' are allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("labels must start and end with a letter or digit"));
        }
    }
    Ok(())
}

fn dns_san(name: &str) -> Result<SanType, PkiError> {
    let ia5 = name.to_owned().try_into().map_err(|_| PkiError::DnsName {
        name: name.to_owned(),
    })?;
    Ok(SanType::DnsName(ia5))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and non-zero, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Validity from yesterday (tolerates clock skew between nodes) to `end(today)`.
fn set_validity(
    params: &mut CertificateParams,
    end: impl Fn(jiff::civil::Date) -> Result<jiff::civil::Date, jiff::Error>,
) -> Result<(), PkiError> {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let start = today
        .yesterday()
        .map_err(|e| PkiError::Clock(e.to_string()))?;
    let end = end(today).map_err(|e| PkiError::Clock(e.to_string()))?;
    // jiff dates are valid calendar dates: month 1..=12, day 1..=31.
    params.not_before = rcgen::date_time_ymd(
        i32::from(start.year()),
        start.month() as u8,
        start.day() as u8,
    );
    params.not_after =
        rcgen::date_time_ymd(i32::from(end.year()), end.month() as u8, end.day() as u8);
    Ok(())
}
