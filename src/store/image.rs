//! What an image is on disk: its kind, read-only flag, usage, times and os-release.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags, Mode, OFlags};

use super::error::IoContext;
use super::lock::LockHolder;
use super::StoreError;
use crate::fs::Root;
use crate::sys::btrfs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Directory,
    Subvolume,
    Raw,
}

impl ImageKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ImageKind::Directory => "directory",
            ImageKind::Subvolume => "subvolume",
            ImageKind::Raw => "raw",
        }
    }

    pub(crate) fn is_tree(self) -> bool {
        self != ImageKind::Raw
    }
}

/// An image found in the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub(crate) name: String,
    pub(crate) kind: ImageKind,
    pub(crate) path: PathBuf,
}

impl Image {
    /// The image's name (for hidden entries, the entry's file name).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn kind(&self) -> ImageKind {
        self.kind
    }
    /// The directory (or raw file) that holds the image.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    pub(crate) fn is_hidden(&self) -> bool {
        self.name.starts_with('.')
    }
    pub(crate) fn read_only(&self) -> Result<bool, StoreError> {
        is_read_only_path(&self.path, self.kind)
    }
}

/// Everything `list` and `show` print about an image. Field names are part of the JSON
/// contract documented in docs/store.md.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: ImageKind,
    pub(crate) path: PathBuf,
    pub(crate) read_only: bool,
    /// Bytes allocated, hard links counted once.
    pub(crate) usage: u64,
    pub(crate) created: Option<String>,
    pub(crate) modified: Option<String>,
    pub(crate) state: ImageState,
    /// Who holds the image's lock, if anyone.
    pub(crate) lock: Option<LockHolder>,
    pub(crate) os_release: Option<OsRelease>,
}

/// Whether an image is in use by a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Its lock is held by a machine: rmach's `run`/`boot`, or systemd-nspawn.
    Running,
    Stopped,
    /// An unfinished operation's leftover (hidden entries only).
    Staging,
}

impl ImageState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ImageState::Running => "running",
            ImageState::Stopped => "stopped",
            ImageState::Staging => "staging",
        }
    }
}

impl std::fmt::Display for ImageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields of the image's os-release file.
pub type OsRelease = BTreeMap<String, String>;

/// Opens an image's top without following a symlink and checks its type, so a symlink (or a
/// FIFO, or a device) named like an image is never followed, waited on or changed.
fn open_top(path: &Path, kind: ImageKind) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    if kind.is_tree() {
        flags |= libc::O_DIRECTORY;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .at(path)?;
    let is_right_type = file.metadata().at(path).map(|m| {
        if kind.is_tree() {
            m.is_dir()
        } else {
            m.is_file()
        }
    })?;
    if !is_right_type {
        return Err(StoreError::io(
            path,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    }
    Ok(file)
}

pub(crate) fn is_read_only_path(path: &Path, kind: ImageKind) -> Result<bool, StoreError> {
    match kind {
        ImageKind::Raw => {
            let meta = open_top(path, kind)?.metadata().at(path)?;
            Ok(meta.permissions().mode() & 0o222 == 0)
        }
        ImageKind::Subvolume => {
            let dir = open_top(path, kind)?;
            let btrfs_ro = btrfs::subvolume_read_only(&dir).at(path)?;
            Ok(btrfs_ro || ioctl_getflags(&dir).is_ok_and(|f| f.contains(IFlags::IMMUTABLE)))
        }
        ImageKind::Directory => {
            let dir = open_top(path, kind)?;
            Ok(ioctl_getflags(&dir)
                .map(|f| f.contains(IFlags::IMMUTABLE))
                .unwrap_or(false))
        }
    }
}

/// Marks an image read-only the way machinectl does: the btrfs read-only flag on a
/// subvolume, FS_IMMUTABLE_FL on a directory's top, no write bits on a raw file.
pub(crate) fn set_read_only_path(
    path: &Path,
    kind: ImageKind,
    read_only: bool,
) -> Result<(), StoreError> {
    match kind {
        ImageKind::Raw => {
            let file = open_top(path, kind)?;
            let mode = file.metadata().at(path)?.permissions().mode() & 0o7777;
            let mode = if read_only {
                mode & !0o222
            } else {
                mode | 0o200
            };
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .at(path)
        }
        ImageKind::Subvolume => {
            let dir = open_top(path, kind)?;
            if !read_only {
                set_immutable(&dir, path, false)?;
            }
            btrfs::set_subvolume_read_only(&dir, read_only).at(path)
        }
        ImageKind::Directory => {
            let dir = open_top(path, kind)?;
            set_immutable(&dir, path, read_only)
        }
    }
}

fn set_immutable(dir: &File, path: &Path, on: bool) -> Result<(), StoreError> {
    let flags = match ioctl_getflags(dir) {
        Ok(flags) => flags,
        Err(_) if !on => return Ok(()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let wanted = if on {
        flags | IFlags::IMMUTABLE
    } else {
        flags - IFlags::IMMUTABLE
    };
    if wanted != flags {
        ioctl_setflags(dir, wanted).at(path)?;
    }
    Ok(())
}

/// Removes an image's directory tree or raw file. Files inside marked immutable or
/// append-only (`chattr +i` in the image) are unmarked first, as `rm -rf` would fail on them.
pub(crate) fn remove_image_path(path: &Path) -> Result<(), StoreError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path).at(path);
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            clear_flags_below(path);
            std::fs::remove_dir_all(path).at(path)
        }
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn clear_flags_below(path: &Path) {
    let clear = |p: &Path| {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        if let Ok(fd) = rustix::fs::open(p, flags, Mode::empty()) {
            if let Ok(f) = ioctl_getflags(&fd) {
                let _ = ioctl_setflags(&fd, f - IFlags::IMMUTABLE - IFlags::APPEND);
            }
        }
    };
    clear(path);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => clear_flags_below(&p),
                Ok(t) if t.is_file() => clear(&p),
                _ => {}
            }
        }
    }
}

/// Bytes allocated under `path`, each inode counted once however many links it has.
pub fn usage(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        *total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), seen, total);
                }
            }
        }
    }
    let mut total = 0;
    walk(path, &mut HashSet::new(), &mut total);
    total
}

pub(crate) fn times(path: &Path) -> (Option<String>, Option<String>) {
    let fmt = |t: std::io::Result<SystemTime>| {
        t.ok()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => (fmt(meta.created()), fmt(meta.modified())),
        Err(_) => (None, None),
    }
}

/// The image's os-release, read with every path resolved inside the image so a hostile
/// image's symlinks cannot point the read at the host. Only a regular file is read: the last
/// component is never followed (Debian's `etc/os-release` is a symlink, so its
/// `usr/lib/os-release` is what is read), the open never blocks (a FIFO, a device node), and
/// the type is checked on the open file before a byte is read.
pub fn os_release(root: &Path) -> Option<OsRelease> {
    let tree = Root::new(File::open(root).ok()?.into());
    for candidate in ["etc/os-release", "usr/lib/os-release"] {
        let Ok(fd) = tree.open(
            candidate.as_bytes(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::NOFOLLOW,
        ) else {
            continue;
        };
        let mut file = File::from(fd);
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let mut text = String::new();
        use std::io::Read;
        (&mut file).take(64 * 1024).read_to_string(&mut text).ok()?;
        return Some(parse_os_release(&text));
    }
    None
}

fn parse_os_release(text: &str) -> OsRelease {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((
                key.to_string(),
                value.replace("\\\"", "\"").replace("\\\\", "\\"),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let text = "# c\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\nX='a b'\n";
        let fields = parse_os_release(text);
        assert_eq!(fields["NAME"], "Debian GNU/Linux");
        assert_eq!(fields["VERSION_ID"], "12");
        assert_eq!(fields["ID"], "debian");
        assert_eq!(fields["X"], "a b");
        assert_eq!(fields.len(), 4);
    }
}
