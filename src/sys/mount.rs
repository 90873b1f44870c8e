//! Mounting with typed flags: mount(2) with optional arguments, bind remounts, `pivot_root`
//! (all through rustix), and the new mount API's detached trees: `open_tree` and
//! `move_mount` through rustix, `mount_setattr` (which rustix does not wrap) here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

pub(crate) use rustix::mount::{MountAttrFlags, MountFlags, MountPropagationFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, UnmountFlags};

/// mount(2). A `None` source is passed as "none" and a `None` type as "": the kernel reads
/// neither for a bind, a remount or a change of propagation.
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let data = data
        .filter(|d| !d.is_empty())
        .map(CString::new)
        .transpose()?;
    rustix::mount::mount(
        source.unwrap_or(Path::new("none")),
        target,
        fstype.unwrap_or(""),
        flags,
        data.as_deref(),
    )
    .map_err(io::Error::from)
}

/// A bind of `source` at `target` (with every mount below it when `recursive`).
pub(crate) fn bind(source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
    match recursive {
        true => rustix::mount::mount_bind_recursive(source, target),
        false => rustix::mount::mount_bind(source, target),
    }
    .map_err(io::Error::from)
}

/// Changes the flags of the bind mount at `target` to `flags` (MS_REMOUNT | MS_BIND).
pub(crate) fn remount_bind(target: &Path, flags: MountFlags) -> io::Result<()> {
    rustix::mount::mount_remount(target, flags | MountFlags::BIND, "").map_err(io::Error::from)
}

/// Makes the mount at `target` and every mount below it private: nothing propagates out.
pub(crate) fn make_private(target: &Path) -> io::Result<()> {
    let flags = MountPropagationFlags::PRIVATE | MountPropagationFlags::REC;
    rustix::mount::mount_change(target, flags).map_err(io::Error::from)
}

/// Detaches the mount at `target` lazily.
pub(crate) fn umount_detach(target: &Path) -> io::Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(io::Error::from)
}

pub(crate) fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    rustix::process::pivot_root(new_root, put_old).map_err(io::Error::from)
}

/// A detached copy of the mount tree at `path` (open_tree with OPEN_TREE_CLONE, recursive).
pub(crate) fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    rustix::mount::open_tree(rustix::fs::CWD, path, flags).map_err(io::Error::from)
}

/// Attaches the detached tree `tree` at `target`.
pub(crate) fn attach_tree(tree: &impl AsFd, target: &Path) -> io::Result<()> {
    let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    rustix::mount::move_mount(tree, "", rustix::fs::CWD, target, flags).map_err(io::Error::from)
}

/// Makes the detached tree `tree` an idmapped mount using the maps of the user namespace `userns`.
pub(crate) fn idmap_tree(tree: &impl AsRawFd, userns: &impl AsRawFd) -> io::Result<()> {
    set_attr(
        tree,
        MountAttrFlags::MOUNT_ATTR_IDMAP,
        userns.as_raw_fd() as u64,
    )
}

/// Makes the mount open at `tree` and every mount below it read-only, as a recursive bind's
/// remount alone changes only the top one.
pub(crate) fn read_only_tree(tree: &impl AsRawFd) -> io::Result<()> {
    set_attr(tree, MountAttrFlags::MOUNT_ATTR_RDONLY, 0)
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE)` setting `set`.
fn set_attr(tree: &impl AsRawFd, set: MountAttrFlags, userns_fd: u64) -> io::Result<()> {
    /// `struct mount_attr` of <linux/mount.h>.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set.bits().into(),
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
    // SAFETY: `attr` is a mount_attr of the size passed and the path an empty C string, both
    // alive for the call; the fd is borrowed and open.
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
