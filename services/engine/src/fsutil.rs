//! Replacing a file so that a crash never leaves it half written: write a sibling
//! `<name>.tmp`, sync it, rename it over the target, then sync the directory (the rename
//! is durable only once the directory is). The converter's outputs and the CLI's answer
//! and result files all go through here.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where `path` is written before it is renamed into place.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Replaces `path` with what `write` puts at the temporary path it is given. On an
/// error the target is untouched (and the temporary file removed).
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let done = write(&tmp)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return done;
    }
    sync_dir(path)?;
    Ok(())
}

/// Replaces `path` with `bytes`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_with(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)
    })
}

/// Syncs the directory that holds `path`.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answer.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");

        let failed: std::io::Result<()> = replace_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("the writer failed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!temp_path(&path).exists(), "the temporary file was left");
    }
}
