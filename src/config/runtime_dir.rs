//! Where the pid file and the upgrade socket live by default: a private runtime directory, not
//! `/tmp`, where any local user could create the socket first and be handed the listeners
//! (or feed a stale one to `--upgrade`). Path choice is pure; [`ensure_private`] does I/O.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default runtime directory: systemd's `RUNTIME_DIRECTORY`, else
/// `$XDG_RUNTIME_DIR/sting-proxy`, else `/run/sting-proxy` for root, else
/// `/tmp/sting-proxy-<uid>` (created 0700 and checked, see [`ensure_private`]).
pub fn default_dir(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(d) = env("RUNTIME_DIRECTORY").and_then(|v| v.split(':').next().map(str::to_owned)).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("sting-proxy");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        PathBuf::from("/run/sting-proxy")
    } else {
        PathBuf::from(format!("/tmp/sting-proxy-{uid}"))
    }
}

/// The directory a file path lives in (`.` for a bare file name).
pub fn parent_of(path: &str) -> &Path {
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Why a directory is not fit to hold the upgrade socket: a symbolic link (whoever owns the
/// link can point it elsewhere later, e.g. in sticky `/tmp`), or writable by group or others
/// (they could create the socket first).
pub fn unsafe_reason(dir: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if meta.file_type().is_symlink() {
        return Some(format!("{} is a symbolic link: its owner could re-point it; use a real private directory", dir.display()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Some(format!("{} is writable by group or others: another local user could create the socket first; use a private directory", dir.display()));
    }
    None
}

/// Creates `dir` (0700) if missing; refuses a symbolic link, one another user owns, or one
/// others may write.
pub fn ensure_private(dir: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: as above.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        return Err(format!("{} belongs to uid {}, not to this process (uid {uid})", dir.display(), meta.uid()));
    }
    match unsafe_reason(dir) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_prefers_systemd_then_xdg() {
        let env = |k: &str| match k {
            "RUNTIME_DIRECTORY" => Some("/run/sp:/run/other".to_owned()),
            _ => Some("/run/user/1000".to_owned()),
        };
        assert_eq!(default_dir(env), PathBuf::from("/run/sp"));
        assert_eq!(default_dir(|k: &str| (k == "XDG_RUNTIME_DIR").then(|| "/run/user/7".to_owned())), PathBuf::from("/run/user/7/sting-proxy"));
        let fallback = default_dir(|_: &str| None);
        assert!(fallback.starts_with("/run/sting-proxy") || fallback.to_string_lossy().starts_with("/tmp/sting-proxy-"), "{fallback:?}");
    }

    #[test]
    fn private_dirs_are_made_0700_and_world_writable_ones_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        ensure_private(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(ensure_private(&d).unwrap_err().contains("writable by group or others"));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(ensure_private(&d).is_err(), "group-writable");
        assert!(unsafe_reason(Path::new("/tmp")).is_some());
        // A link to a private directory of ours is still refused: its owner could re-point it.
        let private = t.path().join("private");
        ensure_private(&private).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(ensure_private(&link).unwrap_err().contains("symbolic link"));
        assert_eq!(parent_of("upgrade.sock"), Path::new("."));
        assert_eq!(parent_of("/run/x/upgrade.sock"), Path::new("/run/x"));
    }
}
