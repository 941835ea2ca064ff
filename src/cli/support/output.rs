//! Results written so that a crash never leaves a half-written file
//! (`umi_engine::fsutil`: a temporary file, synced, renamed over the target, the
//! directory synced).

use std::path::Path;

use anyhow::Context;

pub fn write_json_atomically<T: serde::Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).context("serializing")?;
    write_atomically(path, &bytes)
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    umi_engine::fsutil::write_atomically(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}
