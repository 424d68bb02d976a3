//! Writing `config.json` into a bundle directory.
//!
//! The write is atomic: a temporary file in the same directory is written,
//! fsynced and renamed over `config.json`, then the directory is fsynced, so
//! a crash leaves either the old or the new complete file. The spec's
//! `root.path` must be absolute (the bundle does not hold the rootfs).

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::SpecError;

/// Writes `spec` to `dir/config.json` atomically and returns that path.
pub fn write_bundle(dir: &Path, spec: &Spec) -> Result<PathBuf, SpecError> {
    if let Some(root) = spec.root()
        && !root.path().is_absolute()
    {
        return Err(SpecError::RelativeRootfs {
            path: root.path().clone(),
        });
    }
    let path = dir.join("config.json");
    let tmp = dir.join(".config.json.tmp");
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SpecError::Write { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    let bytes = serde_json::to_vec(spec).map_err(|source| SpecError::Serialize {
        path: path.clone(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(werr(&tmp))?;
    f.write_all(&bytes).map_err(werr(&tmp))?;
    f.sync_all().map_err(werr(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(werr(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok(path)
}
