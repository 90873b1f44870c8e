//! Namespaces: a fork-like `clone` into new namespaces, glibc's fork, and `unshare`.
//! (Joining a process's namespaces is `pidfd::enter_namespaces`.)

use std::io;

pub(crate) use libc::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER,
    CLONE_NEWUTS,
};
/// A set of namespaces (`CLONE_NEW*` bits), as `clone` and `unshare` take them.
pub(crate) use rustix::thread::UnshareFlags as Namespaces;

/// Forks into the new namespaces `namespaces`: `Ok(None)` in the child, `Ok(Some(pid))` in
/// the parent.
///
/// # Safety
///
/// Like `fork(2)` without glibc's bookkeeping: the child gets only the calling thread, and
/// glibc's locks (the allocator's among them) are left as they were. So either the caller is
/// single-threaded, or the child calls only async-signal-safe functions (no allocation) until
/// it execs or exits with [`super::process::exit_now`].
pub(crate) unsafe fn clone_fork(namespaces: Namespaces) -> io::Result<Option<i32>> {
    // SAFETY: the raw clone syscall with a null stack behaves like fork (the child continues
    // on a copy of the parent's stack); no CLONE_VM, so no memory is shared. What the child
    // may do afterwards is the caller's promise (see # Safety).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (namespaces.bits() as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
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
pub(crate) fn fork_threadsafe() -> io::Result<Option<i32>> {
    // SAFETY: fork has no memory-safety preconditions; glibc's implementation makes the heap
    // usable in the child, which is all the child relies on.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// A plain fork (for the small init's payload and the helper's mounter).
///
/// # Safety
///
/// As for [`clone_fork`].
pub(crate) unsafe fn fork() -> io::Result<Option<i32>> {
    // SAFETY: the caller keeps clone_fork's promise.
    unsafe { clone_fork(Namespaces::empty()) }
}

/// Moves the calling process into new namespaces (never a new descriptor table: `FILES` is
/// refused, which is what makes rustix's `unshare_unsafe` unsafe).
pub(crate) fn unshare(namespaces: Namespaces) -> io::Result<()> {
    if namespaces.contains(Namespaces::FILES) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: without FILES, no thread can be left with descriptors of another table.
    unsafe { rustix::thread::unshare_unsafe(namespaces) }.map_err(io::Error::from)
}
