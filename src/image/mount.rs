//! Mounting a raw image's file systems so that a machine can run from them, in a way that
//! cannot leak: the calling process first moves into a private mount namespace of its own, the
//! mounts go on a tmpfs inside it, and each loop device is attached with autoclear. When the
//! process and its children end (also by SIGKILL) the namespace goes, its mounts go with it, and
//! the kernel detaches the loop devices. Nothing is left to clean up on the host but the empty
//! directory the tmpfs was mounted on.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::partition::{dissect, Partition, Role};
use super::ImageError;
use crate::sys::loopdev::{private_mount_namespace, LoopDevice, LoopRange};
use crate::sys::mount::{mount, MountFlags};

/// An image's file systems mounted under [`MountedImage::root`], in this process's private
/// mount namespace.
#[derive(Debug)]
pub(crate) struct MountedImage {
    root: PathBuf,
    mounted: Vec<PathBuf>,
    skipped: Vec<String>,
}

impl MountedImage {
    /// The directory holding the image's root file system (and the others below it).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Partitions left unmounted because the kernel lacks their file system (an ESP on a
    /// kernel without vfat): the machine runs without them. One sentence each, for a warning.
    pub(crate) fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

/// Moves this process into a private mount namespace (see the module documentation) and
/// mounts the file systems of the raw image `image` on a tmpfs at `base` (created if missing,
/// and empty again on the host afterwards). `read_only` attaches and mounts everything
/// read-only; `direct_io` asks for direct I/O on the loop devices. Call it before any thread
/// starts.
pub(crate) fn mount_image(
    image: &Path,
    base: &Path,
    read_only: bool,
    direct_io: bool,
) -> Result<MountedImage, ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)
        .map_err(|e| ImageError::io(image, e))?;
    let parts = dissect(&file, image)?;
    let root = private_scratch(image, base, "mode=0755", "root")?;
    let mut mounted = MountedImage {
        root: root.clone(),
        mounted: Vec::new(),
        skipped: Vec::new(),
    };
    let has_xbootldr = parts.iter().any(|p| p.role == Role::Xbootldr);
    for part in &parts {
        let Some(target) = mount_point(&root, part.role, has_xbootldr) else {
            continue;
        };
        match mount_one(&file, image, part, &target, read_only, direct_io) {
            Ok(()) => mounted.mounted.push(target),
            // The boot partitions are not needed to run; a kernel without vfat is common.
            Err(ImageError::Mount { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV)
                    && matches!(part.role, Role::Esp | Role::Xbootldr) =>
            {
                mounted.skipped.push(format!(
                    "the {} partition of {} is not mounted on /{}: this kernel has no {} file system",
                    if part.role == Role::Esp { "EFI system" } else { "XBOOTLDR" },
                    image.display(),
                    target.strip_prefix(&root).unwrap_or(&target).display(),
                    part.fs
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(mounted)
}

/// Moves this process into a private mount namespace and mounts a tmpfs with `options` at
/// `base` (created if missing), with the empty directory `sub` in it, which it returns. What
/// goes wrong is said of `image`.
pub(super) fn private_scratch(
    image: &Path,
    base: &Path,
    options: &str,
    sub: &str,
) -> Result<PathBuf, ImageError> {
    let fail = |what: &str, e: std::io::Error| ImageError::Mount {
        path: image.to_path_buf(),
        what: what.into(),
        source: e,
    };
    private_mount_namespace().map_err(|e| fail("cannot enter a private mount namespace", e))?;
    std::fs::create_dir_all(base).map_err(|e| ImageError::io(base, e))?;
    mount(
        Some(Path::new("tmpfs")),
        base,
        Some("tmpfs"),
        MountFlags::empty(),
        Some(options),
    )
    .map_err(|e| fail("cannot mount a tmpfs to work in", e))?;
    let dir = base.join(sub);
    std::fs::create_dir(&dir).map_err(|e| ImageError::io(&dir, e))?;
    Ok(dir)
}

/// Where a partition goes: a directory that exists in the image and is not a symlink at any
/// step (a hostile image could otherwise point a mount at the host). None: not mounted.
fn mount_point(root: &Path, role: Role, has_xbootldr: bool) -> Option<PathBuf> {
    let rel = match role {
        Role::Root => return Some(root.to_path_buf()),
        // Per systemd: the ESP is /efi when the image has one, else /boot unless XBOOTLDR is it.
        Role::Esp if is_real_dir(root, "efi") => "efi",
        Role::Esp if !has_xbootldr => "boot",
        r => r.mount_point(),
    };
    is_real_dir(root, rel).then(|| root.join(rel))
}

fn is_real_dir(root: &Path, rel: &str) -> bool {
    let mut at = root.to_path_buf();
    rel.split('/').all(|c| {
        at.push(c);
        std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir())
    })
}

fn mount_one(
    file: &File,
    image: &Path,
    part: &Partition,
    target: &Path,
    read_only: bool,
    direct_io: bool,
) -> Result<(), ImageError> {
    let read_only = read_only || part.read_only || matches!(part.fs, "squashfs" | "erofs");
    let device = LoopDevice::attach(
        file,
        LoopRange {
            offset: part.offset,
            size: part.size,
            read_only,
            direct_io,
        },
    )
    .map_err(|e| ImageError::Mount {
        path: image.to_path_buf(),
        what: format!(
            "cannot attach a loop device for the partition at byte {}",
            part.offset
        ),
        source: e,
    })?;
    let flags = if read_only {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = if part.fs == "vfat" {
        Some("umask=0077")
    } else {
        None
    };
    let mut result = mount(Some(device.path()), target, Some(part.fs), flags, data);
    if result.is_err() && read_only && matches!(part.fs, "ext4" | "xfs") {
        // A journal that needs replaying cannot be replayed on a read-only device.
        let skip = if part.fs == "ext4" {
            "noload"
        } else {
            "norecovery"
        };
        result = mount(
            Some(device.path()),
            target,
            Some(part.fs),
            flags,
            Some(skip),
        );
    }
    result.map_err(|e| ImageError::Mount {
        path: image.to_path_buf(),
        what: format!(
            "cannot mount the {} file system at byte {} ({}) on /{}",
            part.fs,
            part.offset,
            device.path().display(),
            part.role.mount_point()
        ),
        source: e,
    })
    // `device` closes here; the mount keeps the loop device until it is unmounted.
}
