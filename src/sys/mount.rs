//! mount(2) and friends with optional arguments, plus `pivot_root`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use libc::{
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE,
    MS_STRICTATIME,
};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// mount(2); `None` arguments are passed as NULL.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cpath).transpose()?;
    let target = cpath(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.filter(|d| !d.is_empty()).map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string that lives until the call returns.
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data) as *const libc::c_void,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches the mount at `target` lazily.
pub fn umount_detach(target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: `t` is a NUL-terminated string alive for the call.
    if unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    rustix::process::pivot_root(new_root, put_old).map_err(io::Error::from)
}
