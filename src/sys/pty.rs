//! Pseudo terminals: opening a pair and copying window sizes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use rustix::pty::OpenptFlags;

/// Opens a new pty master on the host's devpts and returns it with its slave's path.
pub(crate) fn open_pty() -> io::Result<(OwnedFd, PathBuf)> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let name = std::ffi::OsString::from_vec(name.into_bytes());
    Ok((master, PathBuf::from(name)))
}

/// Copies the window size of the terminal on `from` to the one on `to`.
pub(crate) fn copy_winsize(from: &impl AsFd, to: &impl AsFd) -> io::Result<()> {
    let size = rustix::termios::tcgetwinsize(from)?;
    rustix::termios::tcsetwinsize(to, size)?;
    Ok(())
}
