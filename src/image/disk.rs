//! A directory tree into a bootable disk image: a GPT whose one partition has the discoverable
//! root type for this architecture (so systemd-nspawn -i, systemd-dissect and rmach find it
//! without being told), holding an ext4, btrfs, xfs or erofs file system made by that file
//! system's own mkfs on a loop device over the partition. The tools copy owners, modes,
//! xattrs, hard links and times themselves (mkfs.ext4 -d, mkfs.btrfs --rootdir, mkfs.erofs);
//! for xfs, whose mkfs cannot, the store's full-fidelity copy fills the mounted file system.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use super::gpt::{write_gpt, PARTITION_START, TRAILER};
use super::partition::ROOT_TYPE;
use super::ImageError;
use crate::sys::loopdev::{LoopDevice, LoopRange};
use crate::sys::mount::{mount, MountFlags};

/// The file systems a disk can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskFs {
    Ext4,
    Btrfs,
    Xfs,
    Erofs,
}

impl DiskFs {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DiskFs::Ext4 => "ext4",
            DiskFs::Btrfs => "btrfs",
            DiskFs::Xfs => "xfs",
            DiskFs::Erofs => "erofs",
        }
    }
}

/// Bytes a disk for `tree` gets when no size is given: the tree's usage, a quarter more for
/// the file system's own structures and growth, and 64 MiB, in whole MiB.
pub(crate) fn default_size(tree: &Path, fs: DiskFs) -> u64 {
    // erofs (1.5) stores holes as zeros: it needs the files' full lengths.
    let usage = if fs == DiskFs::Erofs {
        apparent_size(tree)
    } else {
        crate::store::tree_usage(tree)
    };
    // The smallest file systems mkfs.xfs and mkfs.btrfs agree to make.
    let floor = match fs {
        DiskFs::Xfs => 320 << 20,
        DiskFs::Btrfs => 256 << 20,
        _ => 0,
    };
    ((usage + usage / 4 + (64 << 20)).max(floor)).div_ceil(1 << 20) << 20
}

fn apparent_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => apparent_size(&e.path()) + 4096,
            _ => e.metadata().map_or(0, |m| m.len().max(4096)),
        })
        .sum()
}

/// Builds the disk for `tree` in the empty file `disk` (`disk_path` for messages), `size`
/// bytes long. Runs mkfs as a child process, then mounts the new file system to finish it, in
/// a private mount namespace of this process, on a tmpfs over `mount_base` (created if
/// missing; empty again on the host).
pub(crate) fn build_disk(
    tree: &Path,
    disk: &File,
    disk_path: &Path,
    size: u64,
    fs: DiskFs,
    mount_base: &Path,
) -> Result<(), ImageError> {
    let io = |e| ImageError::io(disk_path, e);
    let min = PARTITION_START + TRAILER + (16 << 20);
    if size < min {
        return Err(ImageError::Layout {
            path: disk_path.to_path_buf(),
            what: format!("a disk of {size} bytes is too small; give --size of at least {min}"),
        });
    }
    disk.set_len(size).map_err(io)?;
    let name = match std::env::consts::ARCH {
        "x86_64" => "root-x86-64",
        "aarch64" => "root-arm64",
        _ => "root",
    };
    let (offset, len) = write_gpt(disk, size, ROOT_TYPE, name)?;
    let device = LoopDevice::attach(
        disk,
        LoopRange {
            offset,
            size: len,
            read_only: false,
            direct_io: false,
        },
    )
    .map_err(|e| ImageError::Mount {
        path: disk_path.to_path_buf(),
        what: "cannot attach a loop device for the new partition".into(),
        source: e,
    })?;
    let dev = device.path().to_path_buf();
    let (t, d) = (tree.as_os_str(), dev.as_os_str());
    match fs {
        DiskFs::Ext4 => tool(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), "-d".as_ref(), t, d],
        )?,
        DiskFs::Btrfs => tool(
            "mkfs.btrfs",
            &["-q".as_ref(), "-f".as_ref(), "--rootdir".as_ref(), t, d],
        )?,
        DiskFs::Erofs => tool("mkfs.erofs", &[d, t])?,
        DiskFs::Xfs => {
            tool("mkfs.xfs", &["-q".as_ref(), "-f".as_ref(), d])?;
        }
    }
    if fs != DiskFs::Erofs {
        finish_in_mount(tree, &device, disk_path, fs, mount_base)?;
    }
    drop(device);
    disk.sync_all().map_err(io)
}

/// Mounts the new file system to fill it (xfs) and to drop ext4's empty lost+found, which is
/// not part of the tree (export-tar of the disk must give the tree back).
fn finish_in_mount(
    tree: &Path,
    device: &LoopDevice,
    disk_path: &Path,
    fs: DiskFs,
    at: &Path,
) -> Result<(), ImageError> {
    let fail = |what: &str, e: std::io::Error| ImageError::Mount {
        path: disk_path.to_path_buf(),
        what: what.into(),
        source: e,
    };
    let target = super::mount::private_scratch(disk_path, at, "mode=0700", "disk")?;
    mount(
        Some(device.path()),
        &target,
        Some(fs.name()),
        MountFlags::empty(),
        None,
    )
    .map_err(|e| fail("cannot mount the new file system", e))?;
    let result = match fs {
        DiskFs::Xfs => copy_into(tree, &target),
        _ => {
            let _ = std::fs::remove_dir(target.join("lost+found"));
            // mkfs.ext4 -d keeps whole seconds only: put the nanoseconds back, deepest first,
            // the root last (removing lost+found changed its times).
            same_times_below(tree, &target, Path::new("")).and_then(|()| same_times(tree, &target))
        }
    };
    rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty())
        .map_err(|e| fail("cannot unmount the new file system", e.into()))?;
    let _ = rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH);
    result
}

/// Gives every entry below `target/rel` the times of the same entry below `tree/rel`.
fn same_times_below(tree: &Path, target: &Path, rel: &Path) -> Result<(), ImageError> {
    let dir = tree.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(|e| ImageError::io(&dir, e))? {
        let entry = entry.map_err(|e| ImageError::io(&dir, e))?;
        let rel = rel.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            same_times_below(tree, target, &rel)?;
        }
        same_times(&tree.join(&rel), &target.join(&rel))?;
    }
    Ok(())
}

/// Gives `target` the access and modification times of `tree`, symlinks themselves included.
fn same_times(tree: &Path, target: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(tree).map_err(|e| ImageError::io(tree, e))?;
    let ts = |sec: i64, nsec: i64| rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(meta.atime(), meta.atime_nsec()),
        last_modification: ts(meta.mtime(), meta.mtime_nsec()),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        target,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| ImageError::io(target, e))
}

/// The store's full-fidelity copy, which copies into an existing directory (the mounted
/// file system's root, which takes the tree top's own metadata too).
fn copy_into(tree: &Path, target: &Path) -> Result<(), ImageError> {
    crate::store::copy_tree(tree, target, None).map_err(|source| ImageError::Copy { source })
}

fn tool(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), ImageError> {
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ImageError::Tool {
            tool: program.into(),
            detail: format!("cannot start it ({e}); install it (Debian: e2fsprogs, btrfs-progs, xfsprogs, erofs-utils)"),
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(ImageError::Tool {
            tool: program.into(),
            detail: format!("{} ({})", out.status, last.trim()),
        });
    }
    Ok(())
}
