//! Namespaces: a fork-like `clone` with namespace flags, `unshare` and `setns`.

use std::io;
use std::os::fd::AsRawFd;

pub use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
    CLONE_NEWUTS,
};

/// Forks into new namespaces: `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// The caller must be single-threaded: like `fork`, the child gets only the calling thread,
/// and it goes on to allocate.
pub fn clone_fork(flags: i32) -> io::Result<Option<i32>> {
    // SAFETY: the raw clone syscall with a null stack behaves like fork (the child continues
    // on a copy of the parent's stack); no CLONE_VM, so no memory is shared. The callers in
    // this crate call it before spawning any thread, so no lock can be held by a lost thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

/// glibc's fork, safe to call from a multi-threaded process: glibc takes and resets its
/// allocator locks around it, so the (single-threaded) child may allocate.
pub fn fork_threadsafe() -> io::Result<Option<i32>> {
    // SAFETY: fork has no memory-safety preconditions; glibc's implementation makes the heap
    // usable in the child, which is all the child relies on.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// A plain fork (for the small init's payload and helpers). Same rule as [`clone_fork`].
pub fn fork() -> io::Result<Option<i32>> {
    clone_fork(0)
}

pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare takes flags only and changes no memory of this process.
    if unsafe { libc::unshare(flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn setns(fd: &impl AsRawFd, nstype: i32) -> io::Result<()> {
    // SAFETY: the fd is borrowed and open for the duration of the call.
    if unsafe { libc::setns(fd.as_raw_fd(), nstype) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
