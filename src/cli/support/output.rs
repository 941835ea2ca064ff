//! Results written so that a crash never leaves a half-written file
//! (`umi_durable::write`: a temporary file, synced, renamed over the target, the
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
    Ok(umi_durable::write(path, bytes)?)
}

/// Makes `dir` (if missing) and checks that files can be written there, before any model
/// work whose results would otherwise be lost at the first write.
pub fn writable_dir(dir: &Path, flag: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{flag} {}: cannot create it", dir.display()))?;
    let probe = dir.join(format!(".umi-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("{flag} {}: cannot write there", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
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
