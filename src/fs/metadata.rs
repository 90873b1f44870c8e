//! One inode's metadata and its restoration in the order that keeps it: owner, then mode
//! (chown clears setuid/setgid), then xattrs with `security.capability` last (chown clears it
//! too), then times. Used by the extractor and the store's tree copy.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

pub(crate) const CAPABILITY_XATTR: &[u8] = b"security.capability";

#[derive(Debug, Clone, Default)]
pub(crate) struct Metadata {
    /// `None`: leave the owner; inside, `None` leaves that one id.
    pub(crate) owner: Option<(Option<Uid>, Option<Gid>)>,
    /// Permission bits with setuid/setgid/sticky; `None` leaves them (symlinks have none).
    pub(crate) mode: Option<u32>,
    /// Set in this order; capabilities last.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) mtime: (i64, u32),
    /// `None` leaves the access time.
    pub(crate) atime: Option<(i64, u32)>,
}

/// Which step failed, on which xattr if one.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op}")]
pub(crate) struct RestoreError {
    pub(crate) op: &'static str,
    pub(crate) xattr: Option<Vec<u8>>,
    #[source]
    pub(crate) source: Errno,
}

fn fail(op: &'static str) -> impl Fn(Errno) -> RestoreError {
    move |source| RestoreError {
        op,
        xattr: None,
        source,
    }
}

impl Metadata {
    fn times(&self) -> Timestamps {
        let t = |v: Option<(i64, u32)>| match v {
            Some((s, n)) => Timespec {
                tv_sec: s,
                tv_nsec: n as _,
            },
            None => Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
        };
        Timestamps {
            last_access: t(self.atime),
            last_modification: t(Some(self.mtime)),
        }
    }

    /// Restores on an open file. `tolerate(name, errno)` decides whether a failed xattr is
    /// skipped (true) or fails the restore.
    pub(crate) fn restore_fd(
        &self,
        fd: BorrowedFd<'_>,
        tolerate: &mut dyn FnMut(&[u8], Errno) -> bool,
    ) -> Result<(), RestoreError> {
        if let Some((uid, gid)) = self.owner {
            rustix::fs::fchown(fd, uid, gid).map_err(fail("change the owner of"))?;
        }
        if let Some(mode) = self.mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
                .map_err(fail("change the mode of"))?;
        }
        for (name, value) in &self.xattrs {
            let set =
                rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty());
            xattr_outcome(set, name, tolerate)?;
        }
        rustix::fs::futimens(fd, &self.times()).map_err(fail("set the times of"))
    }

    /// Restores on `name` in `dir` without following it (symlinks, devices, FIFOs: what must
    /// not be opened). `mode` is applied with chmodat, which follows: leave it `None` for a
    /// symlink.
    pub(crate) fn restore_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        tolerate: &mut dyn FnMut(&[u8], Errno) -> bool,
    ) -> Result<(), RestoreError> {
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        if let Some((uid, gid)) = self.owner {
            rustix::fs::chownat(dir, name, uid, gid, nofollow)
                .map_err(fail("change the owner of"))?;
        }
        if let Some(mode) = self.mode {
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(fail("change the mode of"))?;
        }
        if !self.xattrs.is_empty() {
            let path = super::proc_path(dir, name);
            for (xname, value) in &self.xattrs {
                let set = rustix::fs::lsetxattr(
                    &path,
                    OsStr::from_bytes(xname),
                    value,
                    XattrFlags::empty(),
                );
                xattr_outcome(set, xname, tolerate)?;
            }
        }
        rustix::fs::utimensat(dir, name, &self.times(), nofollow).map_err(fail("set the times of"))
    }
}

fn xattr_outcome(
    set: rustix::io::Result<()>,
    name: &[u8],
    tolerate: &mut dyn FnMut(&[u8], Errno) -> bool,
) -> Result<(), RestoreError> {
    match set {
        Ok(()) => Ok(()),
        Err(e) if tolerate(name, e) => Ok(()),
        Err(source) => Err(RestoreError {
            op: "set an extended attribute on",
            xattr: Some(name.to_vec()),
            source,
        }),
    }
}
