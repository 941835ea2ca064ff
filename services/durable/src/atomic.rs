//! Replacing a file so that a crash never leaves it half written: the new contents go
//! to a temporary file beside the target (a fresh random name, created exclusively and
//! readable by the owner only, so nothing else can be reading or have planted it), which
//! is synced, renamed over the target, and made durable by syncing the directory (a
//! rename is on disk only once its directory is). A reader sees the old file or the new
//! one, never a mix; on an error the target is untouched and the temporary file removed.
//!
//! A replaced file keeps its permissions; a new one gets those `File::create` would give
//! it (0666 less the process's umask): the temporary file is the owner's only while it is
//! written, never the result.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Replacing `path` failed; the old file (if any) is as it was.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// For callers that deal in `std::io::Error`: the kind of the failure, the message
/// naming the path.
impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> Self {
        std::io::Error::new(e.source.kind(), e)
    }
}

/// Replaces `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_with(path, |file| file.write_all(bytes))
}

/// Replaces `path` with what `fill` writes into the (empty) temporary file, for contents
/// written piece by piece rather than held whole.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    replace(path, |_, file| fill(file))
}

/// Replaces `path` with what `fill` writes at the temporary path it is given, for writers
/// that take a path rather than a file. The file there exists already (empty, the
/// owner's only); a writer that creates it again truncates that one and keeps it.
pub fn replace_with(
    path: &Path,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    replace(path, |tmp, _| fill(tmp))
}

fn replace(
    path: &Path,
    fill: impl FnOnce(&Path, &mut File) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    let failed = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let (mut file, tmp) = create_temp(path).map_err(failed)?;
    let filled = fill(&tmp, &mut file);
    drop(file);
    // Synced through a handle opened after `fill`: a writer given the path may have
    // written through its own.
    let done = filled.and_then(|()| {
        let file = File::open(&tmp)?;
        keep_permissions(path, &file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    sync_dir(path).map_err(failed)
}

/// Tries this many random names before giving up (each taken one is a collision of 64
/// random bits, or a file someone else put there).
const ATTEMPTS: usize = 16;

/// Creates `.<name>.<random>.tmp` beside `path`, failing rather than opening a file (or
/// following a link) that is there already.
fn create_temp(path: &Path) -> std::io::Result<(File, PathBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "the path names no file"))?;
    for _ in 0..ATTEMPTS {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{:016x}.tmp", random()));
        let tmp = directory_of(path).join(tmp_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "no free temporary file name beside it",
    ))
}

/// Gives `file` the permissions of the file it will replace, if there is one, else those
/// of a newly created file.
fn keep_permissions(path: &Path, file: &File) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(old) => file.set_permissions(old.permissions()),
        Err(e) if e.kind() == ErrorKind::NotFound => set_new_file_mode(file),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn set_new_file_mode(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))
}

#[cfg(not(unix))]
fn set_new_file_mode(_: &File) -> std::io::Result<()> {
    Ok(())
}

/// The process's umask, read from `/proc/self/status` (Linux 4.7 and later: reading it
/// with umask(2) would have to set it); 022, the usual one, where that is not available.
#[cfg(unix)]
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

/// 64 bits no other process or call is likely to pick: std's per-process random hash
/// keys over a counter, the process id and the time.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.finish()
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Syncs the directory that holds `path` (unix: elsewhere a directory cannot be opened
/// to sync, and a rename is durable when it returns).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(directory_of(path))?.sync_all()?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files in `dir` other than `keep`.
    fn others(dir: &Path, keep: &str) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != keep)
            .collect()
    }

    #[test]
    fn a_file_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answer.json");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");

        let mut seen = None;
        let failed = replace_with(&path, |tmp| {
            seen = Some(tmp.to_path_buf());
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("the writer failed"))
        })
        .unwrap_err();
        assert_eq!(failed.path, path);
        assert!(failed.to_string().contains("answer.json"), "{failed}");
        assert!(failed.to_string().contains("the writer failed"), "{failed}");
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let tmp = seen.unwrap();
        assert_eq!(tmp.parent(), Some(dir.path()), "not beside the target");
        assert!(!tmp.exists(), "the temporary file was left");
        assert_eq!(others(dir.path(), "answer.json"), Vec::<String>::new());
    }

    #[test]
    fn contents_can_be_written_piece_by_piece_or_by_a_writer_that_takes_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        write_with(&path, |file| {
            file.write_all(b"one\n")?;
            file.write_all(b"two\n")
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        // As candle's safetensors::save does: File::create on the path it is given.
        replace_with(&path, |tmp| std::fs::write(tmp, b"three\n")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
        assert_eq!(others(dir.path(), "journal.jsonl"), Vec::<String>::new());
    }

    #[test]
    fn temporary_names_are_fresh_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        let mut names = Vec::new();
        for _ in 0..3 {
            replace_with(&path, |tmp| {
                names.push(tmp.to_path_buf());
                Ok(())
            })
            .unwrap();
        }
        names.dedup();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn a_path_that_names_no_file_is_an_error() {
        let err = write(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.source.kind(), ErrorKind::InvalidInput);
        let io = std::io::Error::from(err);
        assert_eq!(io.kind(), ErrorKind::InvalidInput);
        assert!(io.to_string().starts_with("writing /: "), "{io}");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_as_created_and_replaced_ones_keep_their_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let created = dir.path().join("created.json");
        std::fs::write(&created, b"x").unwrap();
        let new = dir.path().join("new.json");
        write(&new, b"x").unwrap();
        assert_eq!(mode(&new), mode(&created));

        let shared = dir.path().join("shared.json");
        std::fs::write(&shared, b"old").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&shared, b"new").unwrap();
        assert_eq!(mode(&shared), 0o644);
        assert_eq!(std::fs::read(&shared).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_target_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"keep").unwrap();
        let path = dir.path().join("out.json");
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}
