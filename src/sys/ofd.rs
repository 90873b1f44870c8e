//! Open file description locks (`F_OFD_SETLK`), the whole-file locks systemd-nspawn,
//! machinectl and machined take on images: `.#NAME.lck` beside an image and
//! `/run/systemd/nspawn/locks/inode-DEV:INO`. They conflict with each other across processes
//! and with POSIX record locks, but not with `flock`, so rmach must use them to see nspawn's.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Who else holds a lock on a file, as `F_OFD_GETLK` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Nobody holds a lock that would conflict.
    None,
    /// Someone holds a shared (read) lock.
    Shared,
    /// Someone holds an exclusive (write) lock.
    Exclusive,
}

fn whole_file(exclusive: bool) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value (offset 0, length 0 = whole file).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if exclusive {
        libc::F_WRLCK as libc::c_short
    } else {
        libc::F_RDLCK as libc::c_short
    };
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// Takes a whole-file lock without waiting: Ok(true) when taken, Ok(false) when another open
/// file description holds a conflicting one. An exclusive lock needs the file open for writing.
pub(crate) fn try_lock(fd: impl AsFd, exclusive: bool) -> io::Result<bool> {
    let fl = whole_file(exclusive);
    // SAFETY: F_OFD_SETLK reads the flock struct we own; the fd is borrowed for the call.
    let r = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file description holds a lock that would conflict with an exclusive one.
pub(crate) fn conflict(fd: impl AsFd) -> io::Result<Conflict> {
    let mut fl = whole_file(true);
    // SAFETY: F_OFD_GETLK fills the flock struct we own; the fd is borrowed for the call.
    let r = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match fl.l_type as libc::c_int {
        libc::F_UNLCK => Conflict::None,
        libc::F_RDLCK => Conflict::Shared,
        _ => Conflict::Exclusive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_description_sees_and_is_refused_the_first_ones_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".#x.lck");
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let (a, b) = (open(), open());
        assert_eq!(conflict(&b).unwrap(), Conflict::None);
        assert!(try_lock(&a, false).unwrap());
        assert_eq!(conflict(&b).unwrap(), Conflict::Shared);
        assert!(try_lock(&b, false).unwrap(), "shared locks coexist");
        assert!(
            !try_lock(&b, true).unwrap(),
            "no exclusive lock beside a shared one"
        );
        drop(a);
        assert!(try_lock(&b, true).unwrap());
        let c = open();
        assert_eq!(conflict(&c).unwrap(), Conflict::Exclusive);
    }
}
