//! What an imported tree looks like: whether it is an OS tree, and lifting the contents of a
//! single top-level directory to the root (machinectl does this for tarballs that wrap the
//! root filesystem in one directory). Paths are resolved inside the tree: an image whose `etc`
//! is a symlink to `/` must not be judged by the host's /etc.

use std::ffi::OsString;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::TransferError;
use crate::fs::Root;

fn fs_err(op: &'static str, path: &Path, source: impl Into<std::io::Error>) -> TransferError {
    TransferError::Fs {
        op,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// An OS tree has an os-release file, as systemd's `path_is_os_tree()` requires; both paths
/// are resolved with the tree as `/`.
pub(crate) fn is_os_tree(dir: &Path) -> Result<bool, TransferError> {
    let fd = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fs_err("open", dir, e))?;
    let root = Root::new(fd);
    Ok(["etc/os-release", "usr/lib/os-release"]
        .iter()
        .any(|p| root.open(p.as_bytes(), OFlags::PATH).is_ok()))
}

/// If `root` is not an OS tree but holds exactly one entry, a directory that is one, moves that
/// directory's contents (and its owner, mode and times) up into `root`. Returns the name of the
/// directory that was lifted.
pub(crate) fn strip_single_top_dir(root: &Path) -> Result<Option<OsString>, TransferError> {
    if is_os_tree(root)? {
        return Ok(None);
    }
    let mut entries = std::fs::read_dir(root).map_err(|e| fs_err("read directory", root, e))?;
    let Some(only) = entries
        .next()
        .transpose()
        .map_err(|e| fs_err("read directory", root, e))?
    else {
        return Ok(None);
    };
    if entries.next().is_some() {
        return Ok(None);
    }
    let top = only.path();
    // symlink_metadata does not follow `top` itself, and `root` is the staging directory.
    let is_dir = top.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
    if !is_dir || !is_os_tree(&top)? {
        return Ok(None);
    }
    // Move it aside first so that a child with the same name does not collide.
    let aside = root.join(".rmach-lift");
    std::fs::rename(&top, &aside).map_err(|e| fs_err("rename", &top, e))?;
    for child in std::fs::read_dir(&aside).map_err(|e| fs_err("read directory", &aside, e))? {
        let child = child.map_err(|e| fs_err("read directory", &aside, e))?;
        let to = root.join(child.file_name());
        std::fs::rename(child.path(), &to).map_err(|e| fs_err("rename", &child.path(), e))?;
    }
    let meta = aside
        .symlink_metadata()
        .map_err(|e| fs_err("stat", &aside, e))?;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::os::unix::fs::lchown(root, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| fs_err("change the owner of", root, e))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| fs_err("change the mode of", root, e))?;
    std::fs::remove_dir(&aside).map_err(|e| fs_err("remove", &aside, e))?;
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec() as u32);
    let dir = std::fs::File::open(root).map_err(|e| fs_err("open", root, e))?;
    dir.set_modified(mtime)
        .map_err(|e| fs_err("set the times of", root, e))?;
    Ok(Some(only.file_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose `etc` points at the host's `/` is judged by its own tree, not the host's
    /// /etc/os-release.
    #[test]
    fn a_hostile_etc_symlink_is_resolved_inside_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("etc")).unwrap();
        assert!(std::path::Path::new("/etc/os-release").exists());
        assert!(!is_os_tree(tmp.path()).unwrap());
        std::fs::write(tmp.path().join("os-release"), b"ID=x\n").unwrap();
        assert!(
            is_os_tree(tmp.path()).unwrap(),
            "etc -> / means the tree's own root"
        );
    }
}
