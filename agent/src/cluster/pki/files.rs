//! Durable, private writes of key material and PEM reads with typed errors.
//!
//! `write_atomic` creates a temporary file next to the target with the
//! final mode already set (never a window where a key is world-readable),
//! fsyncs it, renames it over the target and fsyncs the directory: a crash
//! leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::PkiError;

/// Mode of private keys and secrets.
pub(crate) const PRIVATE_MODE: u32 = 0o600;
/// Mode of certificates.
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Creates `dir` (mode 0700) if it is missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically with `mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; certificates must stay readable.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a UTF-8 file (PEM).
pub(crate) fn read_string(path: &Path) -> Result<String, PkiError> {
    String::from_utf8(read(path)?).map_err(|_| PkiError::BadPem {
        path: path.to_path_buf(),
        reason: "not UTF-8".into(),
    })
}

/// All certificates in a PEM text, in order; at least one.
pub(crate) fn parse_certs(
    pem: &str,
    origin: &Path,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::BadPem {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::BadPem {
            path: origin.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The one private key in a PEM text.
pub(crate) fn parse_key(pem: &str, origin: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| PkiError::BadPem {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| PkiError::BadPem {
            path: origin.to_path_buf(),
            reason: "no PRIVATE KEY block".into(),
        })
}

/// Warns when a private file is readable by group or others.
pub(crate) fn warn_if_exposed(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "private key file is readable by others");
        }
    }
}
