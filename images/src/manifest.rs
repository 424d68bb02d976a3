//! Manifests, indexes, configs and platforms, in both the OCI and the
//! Docker v2 schema 2 media types (the JSON shapes are the same).

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::{Digest, DigestError};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 schema 1 manifest (refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Uncompressed Docker layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Gzip Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Media types asked for when fetching a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Largest manifest or index read into memory.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest config read into memory.
pub const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Why a manifest, index or config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON of the expected shape.
    #[error("{what} {digest}: {reason}")]
    Malformed {
        /// manifest, index or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// What is wrong.
        reason: String,
    },
    /// A media type herd does not handle.
    #[error("{digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The object.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A digest string in a descriptor is invalid.
    #[error("descriptor digest: {0}")]
    Digest(#[from] DigestError),
    /// No manifest in the index matches the platform.
    #[error("index {index} has no manifest for platform {platform} (it has: {available})")]
    NoPlatform {
        /// The index.
        index: String,
        /// The requested platform.
        platform: Platform,
        /// The platforms it offers.
        available: String,
    },
    /// The platform string is invalid.
    #[error("invalid platform {0:?} (expected os/arch[/variant], e.g. linux/amd64)")]
    BadPlatform(String),
}

/// A target platform, e.g. `linux/amd64` or `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system.
    pub os: String,
    /// CPU architecture (OCI/GOARCH names).
    pub arch: String,
    /// Variant, e.g. `v8`.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            arch: arch.into(),
            variant: None,
        }
    }

    /// Whether an image for `other` runs here when `self` was asked for.
    /// A missing variant matches any; arm64's default variant is v8.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let norm = |a: &str, v: Option<&str>| -> Option<String> {
            match (a, v) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(str::to_owned),
            }
        };
        self.os == os
            && self.arch == arch
            && (self.variant.is_none()
                || norm(&self.arch, self.variant.as_deref()) == norm(arch, variant))
    }
}

impl FromStr for Platform {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Self {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => Err(ManifestError::BadPlatform(s.into())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parsed manifest-or-index document.
#[derive(Debug)]
pub enum Document {
    /// An image index or Docker manifest list.
    Index(Box<ImageIndex>),
    /// An image manifest.
    Manifest(Box<ImageManifest>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
}

/// Parses manifest or index bytes; `declared` is the media type from the
/// descriptor or HTTP response, used when the document has none.
pub fn parse_document(
    bytes: &[u8],
    digest: &Digest,
    declared: Option<&str>,
) -> Result<Document, ManifestError> {
    let malformed = |what: &'static str, reason: String| ManifestError::Malformed {
        what,
        digest: digest.to_string(),
        reason,
    };
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| malformed("manifest", e.to_string()))?;
    if probe.schema_version == Some(1) {
        return Err(ManifestError::UnsupportedMediaType {
            digest: digest.to_string(),
            media_type: DOCKER_SCHEMA1.into(),
        });
    }
    let mt = probe
        .media_type
        .as_deref()
        .or(declared)
        .unwrap_or(if probe.manifests.is_some() {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        });
    match mt {
        OCI_INDEX | DOCKER_LIST => serde_json::from_slice(bytes)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| malformed("index", e.to_string())),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| malformed("manifest", e.to_string()))?;
            let cmt = m.config().media_type().to_string();
            if cmt != OCI_CONFIG && cmt != DOCKER_CONFIG {
                return Err(ManifestError::UnsupportedMediaType {
                    digest: m.config().digest().to_string(),
                    media_type: cmt,
                });
            }
            Ok(Document::Manifest(Box::new(m)))
        }
        other => Err(ManifestError::UnsupportedMediaType {
            digest: digest.to_string(),
            media_type: other.into(),
        }),
    }
}

/// Our digest type from an oci-spec descriptor.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, ManifestError> {
    Ok(d.digest().to_string().parse()?)
}

/// Picks the manifest for `platform` from an index.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    index_digest: &Digest,
    platform: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let mut available = Vec::new();
    for d in index.manifests() {
        if let Some(p) = d.platform() {
            let (os, arch) = (p.os().to_string(), p.architecture().to_string());
            if platform.matches(&os, &arch, p.variant().as_deref()) {
                return Ok(d);
            }
            available.push(match p.variant() {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            });
        }
    }
    Err(ManifestError::NoPlatform {
        index: index_digest.to_string(),
        platform: platform.clone(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// A validated image config: its platform and diff IDs.
#[derive(Debug)]
pub struct ConfigInfo {
    /// `os/arch[/variant]` from the config.
    pub platform: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// Parses a config and checks it against the manifest's layer count.
pub fn parse_config(
    bytes: &[u8],
    digest: &Digest,
    layers: usize,
) -> Result<ConfigInfo, ManifestError> {
    let malformed = |reason: String| ManifestError::Malformed {
        what: "config",
        digest: digest.to_string(),
        reason,
    };
    let cfg: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    let diff_ids = cfg
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| s.parse::<Digest>())
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != layers {
        return Err(malformed(format!(
            "config lists {} diff_ids but the manifest has {layers} layers",
            diff_ids.len()
        )));
    }
    let mut platform = format!("{}/{}", cfg.os(), cfg.architecture());
    if let Some(v) = cfg.variant() {
        platform.push('/');
        platform.push_str(v);
    }
    Ok(ConfigInfo { platform, diff_ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "amd64", None));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/../x".parse::<Platform>().is_err());
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }

    #[test]
    fn refuses_schema1_and_garbage() {
        let d = Digest::of(b"x");
        assert!(matches!(
            parse_document(br#"{"schemaVersion":1}"#, &d, None),
            Err(ManifestError::UnsupportedMediaType { .. })
        ));
        assert!(parse_document(b"not json", &d, None).is_err());
        assert!(
            parse_document(
                br#"{"schemaVersion":2,"mediaType":"application/x-foo"}"#,
                &d,
                None
            )
            .is_err()
        );
    }
}
