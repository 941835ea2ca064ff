//! Secret files (tokens, private keys, passwords) are read only when nobody but their
//! owner, and at most their group reading them, can see or change them, as ssh refuses a
//! private key others can read.
//!
//! Refused: any permission for others, and write for the group (`mode & 0o027`). Group
//! read stays allowed because the deployments share secrets with the service's group:
//! systemd units read `root:umi` files of mode 0440 (deploy/README.md), and a Kubernetes
//! secret volume with an `fsGroup` makes its files group-readable whatever `defaultMode`
//! says.

use std::path::Path;

use crate::security::SecurityError;

/// The permission bits that make a secret file exposed: all of others', the group's write.
pub const EXPOSING_BITS: u32 = 0o027;

/// Refuses `path` (a `what`, e.g. "token file") if its permissions expose it; follows
/// links, as reading it does. Not checked off unix, where modes do not say who reads.
pub fn check_private(what: &'static str, path: &Path) -> Result<(), SecurityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| SecurityError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & EXPOSING_BITS != 0 {
            return Err(SecurityError::Exposed {
                what,
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (what, path);
    Ok(())
}

/// Reads the secret file at `path` after [`check_private`] accepts it.
pub fn read_private(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    check_private(what, path)?;
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        let path = dir.join(format!("secret-{mode:o}"));
        std::fs::write(&path, "s3cret-0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn files_others_can_read_or_the_group_can_write_are_refused_with_the_fix() {
        let dir = std::env::temp_dir().join(format!("umi-secret-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for mode in [0o600, 0o400, 0o640, 0o440] {
            let path = file_with_mode(&dir, mode);
            assert!(read_private("token file", &path).is_ok(), "{mode:o}");
        }
        for mode in [0o644, 0o604, 0o660, 0o666, 0o601] {
            let path = file_with_mode(&dir, mode);
            let err = read_private("token file", &path).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(&format!("mode {mode:04o}")), "{err}");
            assert!(
                err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
