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
    let mut replacement = Replacement::begin(path)?;
    let tmp = replacement.tmp.clone();
    fill(&tmp, replacement.file()).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })?;
    replacement.commit()
}

/// A replacement under way, for a writer that keeps several files open at once (each
/// written piece by piece as its data streams by): the temporary file beside the target,
/// written through [`Replacement::file`]. [`Replacement::commit`] puts it in place;
/// dropped uncommitted (an error, a panic), it is removed and the target is untouched.
pub struct Replacement {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl Replacement {
    pub fn begin(path: &Path) -> Result<Replacement, WriteError> {
        let (file, tmp) = create_temp(path).map_err(|source| WriteError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Replacement {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// The temporary file, empty at first.
    pub fn file(&mut self) -> &mut File {
        // Taken only by `commit` and `drop`, which end the replacement.
        self.file
            .as_mut()
            .expect("a replacement's file lives until it ends")
    }

    /// Syncs the temporary file, renames it over the target and syncs the directory.
    pub fn commit(mut self) -> Result<(), WriteError> {
        let failed = |source| WriteError {
            path: self.path.clone(),
            source,
        };
        drop(self.file.take());
        // Synced through a handle opened after the writing: a writer given the path may
        // have written through its own.
        let file = File::open(&self.tmp).map_err(failed)?;
        keep_permissions(&self.path, &file).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        std::fs::rename(&self.tmp, &self.path).map_err(failed)?;
        self.tmp = PathBuf::new();
        sync_dir(&self.path).map_err(failed)
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
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
    fn replacements_open_side_by_side_land_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("kept.json");
        let dropped = dir.path().join("dropped.json");
        std::fs::write(&dropped, b"old").unwrap();
        let mut a = Replacement::begin(&kept).unwrap();
        let mut b = Replacement::begin(&dropped).unwrap();
        a.file().write_all(b"[1").unwrap();
        b.file().write_all(b"half").unwrap();
        a.file().write_all(b"]").unwrap();
        assert!(!kept.exists(), "visible before its commit");
        a.commit().unwrap();
        drop(b);
        assert_eq!(std::fs::read(&kept).unwrap(), b"[1]");
        assert_eq!(std::fs::read(&dropped).unwrap(), b"old");
        let mut names = others(dir.path(), "kept.json");
        names.sort();
        assert_eq!(names, ["dropped.json"], "a temporary file was left");
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
