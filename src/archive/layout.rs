//! What an extracted tree looks like: whether it is an OS tree, and lifting the contents of a
//! single top-level directory to the root (machinectl does this for tarballs that wrap the
//! root filesystem in one directory).

use std::ffi::OsString;
use std::path::Path;

use super::ArchiveError;

/// An OS tree has an os-release file, as systemd's `path_is_os_tree()` requires.
pub fn is_os_tree(dir: &Path) -> bool {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .any(|p| dir.join(p).symlink_metadata().is_ok())
}

/// If `root` is not an OS tree but holds exactly one entry, a directory that is one, moves that
/// directory's contents (and its owner, mode and times) up into `root`. Returns the name of the
/// directory that was lifted.
pub fn strip_single_top_dir(root: &Path) -> Result<Option<OsString>, ArchiveError> {
    if is_os_tree(root) {
        return Ok(None);
    }
    let fs = |op, p: &Path, e| ArchiveError::fs(op, p, e);
    let mut entries = std::fs::read_dir(root).map_err(|e| fs("read directory", root, e))?;
    let Some(only) = entries
        .next()
        .transpose()
        .map_err(|e| fs("read directory", root, e))?
    else {
        return Ok(None);
    };
    if entries.next().is_some() {
        return Ok(None);
    }
    let top = only.path();
    let is_dir = top.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
    if !is_dir || !is_os_tree(&top) {
        return Ok(None);
    }
    // Move it aside first so that a child with the same name does not collide.
    let aside = root.join(".rmach-lift");
    std::fs::rename(&top, &aside).map_err(|e| fs("rename", &top, e))?;
    for child in std::fs::read_dir(&aside).map_err(|e| fs("read directory", &aside, e))? {
        let child = child.map_err(|e| fs("read directory", &aside, e))?;
        let to = root.join(child.file_name());
        std::fs::rename(child.path(), &to).map_err(|e| fs("rename", &child.path(), e))?;
    }
    let meta = aside
        .symlink_metadata()
        .map_err(|e| fs("stat", &aside, e))?;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::os::unix::fs::lchown(root, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| fs("change the owner of", root, e))?;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| fs("change the mode of", root, e))?;
    std::fs::remove_dir(&aside).map_err(|e| fs("remove", &aside, e))?;
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec() as u32);
    let dir = std::fs::File::open(root).map_err(|e| fs("open", root, e))?;
    dir.set_modified(mtime)
        .map_err(|e| fs("set the times of", root, e))?;
    Ok(Some(only.file_name()))
}
