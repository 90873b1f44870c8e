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

fn check_fd(r: libc::c_long) -> io::Result<std::os::fd::OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r as i32) })
}

/// A detached copy of the mount tree at `path` (open_tree with OPEN_TREE_CLONE, recursive).
pub fn clone_tree(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    let p = cpath(path)?;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: `p` is a NUL-terminated path alive for the call; the result is a new fd.
    check_fd(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) })
}

/// `MOUNT_ATTR_IDMAP` of <linux/mount.h>.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Makes the detached tree `tree` an idmapped mount using the maps of the user namespace `userns`.
pub fn idmap_tree(
    tree: &impl std::os::fd::AsRawFd,
    userns: &impl std::os::fd::AsRawFd,
) -> io::Result<()> {
    set_attr(tree, MOUNT_ATTR_IDMAP, userns.as_raw_fd() as u64)
}

/// `MOVE_MOUNT_F_EMPTY_PATH` of <linux/mount.h>: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// Attaches the detached tree `tree` at `target`.
pub fn attach_tree(tree: &impl std::os::fd::AsRawFd, target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    let empty = c"";
    // SAFETY: both strings are NUL-terminated and alive; the fd is borrowed and open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `MOUNT_ATTR_RDONLY` of <linux/mount.h>.
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Makes the mount open at `mount` and every mount below it read-only (mount_setattr with
/// AT_RECURSIVE), as a recursive bind's remount alone changes only the top one.
pub fn set_read_only_recursive(mount: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    set_attr(mount, MOUNT_ATTR_RDONLY, 0)
}

fn set_attr(tree: &impl std::os::fd::AsRawFd, set: u64, userns_fd: u64) -> io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
    // SAFETY: `attr` is a mount_attr of the size passed; the fd is borrowed and open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
