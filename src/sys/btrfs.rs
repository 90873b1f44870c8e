//! The btrfs ioctls the store uses: subvolume create, snapshot, and the read-only flag.
//! rustix has no wrappers for them, so the structures are declared here as in
//! `linux/btrfs.h`.

use std::ffi::CStr;
use std::os::fd::AsFd;

use rustix::fs::{fstatfs, statat, AtFlags};
use rustix::io::{Errno, Result};
use rustix::ioctl::{ioctl, opcode, Getter, Opcode, Setter};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_SUBVOL_RDONLY: u64 = 1 << 1;
const BTRFS_PATH_NAME_MAX: usize = 4087;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

const SUBVOL_CREATE: Opcode = opcode::write::<VolArgs>(0x94, 14);
const SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(0x94, 23);
const SUBVOL_GETFLAGS: Opcode = opcode::read::<u64>(0x94, 25);
const SUBVOL_SETFLAGS: Opcode = opcode::write::<u64>(0x94, 26);

/// Whether the file system under `fd` is btrfs.
pub(crate) fn is_btrfs(fd: impl AsFd) -> bool {
    fstatfs(fd).is_ok_and(|s| s.f_type == BTRFS_SUPER_MAGIC)
}

/// Whether `name` in `dir` is the top directory of a btrfs subvolume.
pub(crate) fn is_subvolume(dir: impl AsFd, name: &CStr) -> bool {
    is_btrfs(&dir)
        && statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            st.st_ino == BTRFS_FIRST_FREE_OBJECTID && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
        })
}

fn copy_name<const N: usize>(name: &CStr) -> Result<[u8; N]> {
    let bytes = name.to_bytes();
    if bytes.len() >= N {
        return Err(Errno::NAMETOOLONG);
    }
    let mut out = [0u8; N];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// Creates an empty subvolume `name` in `dir`.
pub(crate) fn create_subvolume(dir: impl AsFd, name: &CStr) -> Result<()> {
    let args = VolArgs {
        fd: 0,
        name: copy_name(name)?,
    };
    // SAFETY: SUBVOL_CREATE takes a pointer to btrfs_ioctl_vol_args, which VolArgs mirrors
    // field for field (repr(C), 4096 bytes); the name is NUL-terminated by copy_name.
    unsafe { ioctl(dir, Setter::<SUBVOL_CREATE, VolArgs>::new(args)) }
}

/// Snapshots the subvolume open at `source` as `name` in `dir`.
pub(crate) fn snapshot(
    source: impl AsFd,
    dir: impl AsFd,
    name: &CStr,
    read_only: bool,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let args = VolArgsV2 {
        fd: source.as_fd().as_raw_fd() as i64,
        transid: 0,
        flags: if read_only { BTRFS_SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: copy_name(name)?,
    };
    // SAFETY: SNAP_CREATE_V2 takes a pointer to btrfs_ioctl_vol_args_v2, mirrored by VolArgsV2
    // (repr(C), 4096 bytes); `fd` is a live descriptor borrowed for the call.
    unsafe { ioctl(dir, Setter::<SNAP_CREATE_V2, VolArgsV2>::new(args)) }
}

/// Whether the subvolume open at `fd` is read-only.
pub(crate) fn subvolume_read_only(fd: impl AsFd) -> Result<bool> {
    // SAFETY: SUBVOL_GETFLAGS writes one u64 through the pointer Getter provides.
    let flags = unsafe { ioctl(fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }?;
    Ok(flags & BTRFS_SUBVOL_RDONLY != 0)
}

/// Sets or clears the read-only flag of the subvolume open at `fd`.
pub(crate) fn set_subvolume_read_only(fd: impl AsFd, read_only: bool) -> Result<()> {
    // SAFETY: as above; the value read is a plain u64 of flag bits.
    let flags = unsafe { ioctl(&fd, Getter::<SUBVOL_GETFLAGS, u64>::new()) }?;
    let flags = if read_only {
        flags | BTRFS_SUBVOL_RDONLY
    } else {
        flags & !BTRFS_SUBVOL_RDONLY
    };
    // SAFETY: SUBVOL_SETFLAGS reads one u64 of flag bits through the pointer Setter passes.
    unsafe { ioctl(fd, Setter::<SUBVOL_SETFLAGS, u64>::new(flags)) }
}
