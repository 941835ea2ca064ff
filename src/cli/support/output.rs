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

/// The `.json` files directly in `dir`, sorted by name.
pub fn json_files_in(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}
