//! File-system operations confined to a root directory. Every parent directory is resolved
//! with `openat2(RESOLVE_IN_ROOT)`, so `..` and symlinks (absolute or relative) can never
//! leave the root; the last component is handled with `*at` calls that do not follow it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{openat2, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

pub struct Root {
    fd: OwnedFd,
    /// The last parent directory resolved, by its joined path. Dropped whenever the tree
    /// changes in a way that could change what a path resolves to (unlink, new symlink).
    cache: Option<(Vec<u8>, OwnedFd)>,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

pub fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

impl Root {
    pub fn new(fd: OwnedFd) -> Root {
        Root { fd, cache: None }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Opens `rel` (any file type) inside the root, following in-root symlinks.
    pub fn open(&self, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        openat2(
            &self.fd,
            OsStr::from_bytes(rel),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        )
    }

    /// Opens `rel` (a directory) inside the root, following in-root symlinks.
    pub fn open_dir(&self, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
        if rel.is_empty() {
            return openat2(
                &self.fd,
                ".",
                flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                resolve(),
            );
        }
        openat2(
            &self.fd,
            OsStr::from_bytes(rel),
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        )
    }

    /// The directory that holds the last of `comps`, created (0755) where missing.
    pub fn parent(&mut self, comps: &[&[u8]], create: bool) -> rustix::io::Result<BorrowedFd<'_>> {
        let dir = &comps[..comps.len() - 1];
        if dir.is_empty() {
            return Ok(self.fd.as_fd());
        }
        let key = join(dir);
        if self.cache.as_ref().is_none_or(|(k, _)| *k != key) {
            let fd = match self.open_dir(&key, OFlags::PATH) {
                Err(Errno::NOENT) if create => self.create_dirs(dir)?,
                other => other?,
            };
            self.cache = Some((key, fd));
        }
        Ok(self
            .cache
            .as_ref()
            .map(|(_, fd)| fd.as_fd())
            .unwrap_or(self.fd.as_fd()))
    }

    fn create_dirs(&self, dir: &[&[u8]]) -> rustix::io::Result<OwnedFd> {
        let mut parent: Option<OwnedFd> = None;
        for i in 0..dir.len() {
            let prefix = join(&dir[..=i]);
            let fd = match self.open_dir(&prefix, OFlags::PATH) {
                Err(Errno::NOENT) => {
                    let at = parent
                        .as_ref()
                        .map(|f| f.as_fd())
                        .unwrap_or(self.fd.as_fd());
                    match rustix::fs::mkdirat(
                        at,
                        OsStr::from_bytes(dir[i]),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e),
                    }
                    self.open_dir(&prefix, OFlags::PATH)?
                }
                other => other?,
            };
            parent = Some(fd);
        }
        parent.ok_or(Errno::INVAL)
    }
}

/// Removes whatever is at `name` in `dir` so that something new can be created there; a
/// directory only when empty. Missing is fine.
pub fn remove_existing(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR),
        Err(e) => Err(e),
    }
}

/// Is `name` in `dir` a directory (not following a symlink)?
pub fn is_dir(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .unwrap_or(false)
}

/// The /proc path that reaches `name` in `dir` without following `name` itself, for the
/// path-only `l*xattr` calls on symlinks and device nodes.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}
