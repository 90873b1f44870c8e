//! Pseudo terminals: opening a pair and copying window sizes.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Opens a new pty master on the host's devpts and returns it with its slave's path.
pub fn open_pty() -> io::Result<(OwnedFd, PathBuf)> {
    // SAFETY: posix_openpt takes flags only; the returned fd is owned by us from here on.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: grantpt/unlockpt take the master fd we own.
    if unsafe { libc::grantpt(fd) } == -1 || unsafe { libc::unlockpt(fd) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: the buffer and its length are ours; ptsname_r NUL-terminates on success.
    if unsafe { libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ptsname_r succeeded, so `buf` holds a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok((master, PathBuf::from(name.to_string_lossy().into_owned())))
}

/// Copies the window size of the terminal on `from` to the one on `to`.
pub fn copy_winsize(from: &impl AsRawFd, to: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it, TIOCSWINSZ reads it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == -1
            || libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) == -1
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
