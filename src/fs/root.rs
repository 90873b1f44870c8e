//! File-system operations confined to a root directory. Every parent directory is resolved
//! with `openat2(RESOLVE_IN_ROOT)`, so `..` and symlinks (absolute or relative) can never
//! leave the root; the last component is handled with `*at` calls that do not follow it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{openat2, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

pub(crate) struct Root {
    fd: OwnedFd,
    /// The last parent directory resolved, by its joined path. Dropped whenever the tree
    /// changes in a way that could change what a path resolves to (unlink, new symlink).
    cache: Option<(Vec<u8>, OwnedFd)>,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// What [`Root::ensure`] makes of a missing path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Nothing: not found is an error.
    Fail,
    /// A directory (0755), with its parents.
    Directory,
    /// An empty file (0644), with its parents.
    File,
}

pub(crate) fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

impl Root {
    pub(crate) fn new(fd: OwnedFd) -> Root {
        Root { fd, cache: None }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Opens `rel` (any file type) inside the root, following in-root symlinks.
    pub(crate) fn open(&self, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
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
    pub(crate) fn open_dir(&self, rel: &[u8], flags: OFlags) -> rustix::io::Result<OwnedFd> {
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
    pub(crate) fn parent(
        &mut self,
        comps: &[&[u8]],
        create: bool,
    ) -> rustix::io::Result<BorrowedFd<'_>> {
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

    /// Opens `comps` inside the root as an `O_PATH` descriptor, following in-root symlinks;
    /// when it is missing, creates it as `missing` says, parents included (for a mount
    /// point). Forgets the cached parent first: a mount since may have covered it.
    pub(crate) fn ensure(
        &mut self,
        comps: &[&[u8]],
        missing: Missing,
    ) -> rustix::io::Result<OwnedFd> {
        self.invalidate();
        let path = join(comps);
        match self.open(&path, OFlags::PATH) {
            Err(Errno::NOENT) if missing != Missing::Fail && !comps.is_empty() => {}
            other => return other,
        }
        let parent = self.parent(comps, true)?;
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        let created = if missing == Missing::Directory {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))
        } else {
            let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o644)).map(drop)
        };
        match created {
            Ok(()) | Err(Errno::EXIST) => self.open(&path, OFlags::PATH),
            Err(e) => Err(e),
        }
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
pub(crate) fn remove_existing(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR),
        Err(e) => Err(e),
    }
}

/// Is `name` in `dir` a directory (not following a symlink)?
pub(crate) fn is_dir(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
        })
        .unwrap_or(false)
}

/// The /proc path that reaches `name` in `dir` without following `name` itself, for the
/// path-only `l*xattr` calls on symlinks and device nodes.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_of(dir: &std::path::Path) -> Root {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Root::new(rustix::fs::open(dir, flags, Mode::empty()).unwrap())
    }

    #[test]
    fn ensure_creates_inside_the_root_only() {
        let outside = tempfile::tempdir().unwrap();
        let dir = outside.path().join("tree");
        std::fs::create_dir(&dir).unwrap();
        // A hostile image: `etc` climbs out of the tree, `abs` names the host's root.
        std::os::unix::fs::symlink("../..", dir.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("abs")).unwrap();
        let mut root = root_of(&dir);
        root.ensure(&[b"etc", b"mnt", b"point"], Missing::Directory)
            .unwrap();
        root.ensure(&[b"abs", b"file"], Missing::File).unwrap();
        let names = std::fs::read_dir(outside.path()).unwrap().count();
        assert_eq!(names, 1, "nothing beside the tree");
        assert!(dir.join("mnt/point").is_dir(), "etc resolved as the root");
        assert!(dir.join("file").is_file());
        assert_eq!(
            root.ensure(&[b"missing"], Missing::Fail).err(),
            Some(Errno::NOENT)
        );
        assert!(root.ensure(&[], Missing::Fail).is_ok(), "the root itself");
    }
}
