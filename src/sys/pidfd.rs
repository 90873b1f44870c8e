//! Process file descriptors: a handle on one process that a reused PID cannot redirect.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Opens a pidfd for `pid`.
pub(crate) fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).map_err(io::Error::from)
}

/// Sends signal `sig` (any number, real-time ones included) to the process behind `pidfd`.
pub(crate) fn send_signal(pidfd: &impl AsRawFd, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a borrowed fd, a signal number, a null siginfo and flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Joins the namespaces `flags` (CLONE_NEW* bits) of the process behind `pidfd`, all at once.
pub(crate) fn enter_namespaces(pidfd: &impl std::os::fd::AsFd, flags: i32) -> io::Result<()> {
    let types = rustix::thread::ThreadNameSpaceType::from_bits_retain(flags as u32);
    rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), types).map_err(io::Error::from)
}
