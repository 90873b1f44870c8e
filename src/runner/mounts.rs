//! Carrying out the mount table, one stage at a time, under the machine's root. Every target
//! is resolved beneath the root by `fs::Root` (`RESOLVE_IN_ROOT`) and mounted through its
//! `/proc/self/fd` link, so symlinks in an image cannot redirect a mount onto the host.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatVfsMountFlags, StatxAttributes, StatxFlags};

use super::channel::{ctx, SetupError, Step};
use super::plan::{MountEntry, MountKind, Plan, Stage};
use super::rootfs::OLD_ROOT;
use crate::fs::{Missing, Root};
use crate::sys::mount::{self as m, MountFlags};

/// The `/proc/self/fd` path of `fd`, through which it is mounted on or bound from.
fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    // Between the helper's pivot and the kernel stage's /proc, the host's /proc is the one
    // beside the old root.
    let proc_ = if Path::new("/proc/self/fd").exists() {
        PathBuf::from("/proc")
    } else {
        Path::new("/").join(OLD_ROOT).join("proc")
    };
    proc_.join(format!("self/fd/{}", fd.as_raw_fd()))
}

/// A target's components below the root (none for the root itself).
fn components(target: &Path) -> Vec<&[u8]> {
    target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect()
}

/// The mount flags a statvfs result reports, as mount(2) flags. The two sets differ
/// (`ST_RELATIME` is 0x1000, `MS_RELATIME` 1 << 21), so each is mapped by name.
pub(crate) fn mount_flags_of(st: StatVfsMountFlags) -> MountFlags {
    let mut flags = [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ]
    .into_iter()
    .filter(|(st_flag, _)| st.contains(*st_flag))
    .fold(MountFlags::empty(), |acc, (_, ms)| acc | ms);
    // Neither noatime nor relatime is strictatime, which must be said: a remount naming any
    // atime flag (nodiratime) otherwise falls back to relatime.
    if !st.intersects(StatVfsMountFlags::NOATIME | StatVfsMountFlags::RELATIME) {
        flags |= MountFlags::STRICTATIME;
    }
    flags
}

/// Flags a bind remount must keep (the kernel refuses to clear locked ones in a user namespace).
fn kept_flags(fd: &impl AsFd) -> MountFlags {
    rustix::fs::fstatvfs(fd).map_or(MountFlags::empty(), |s| mount_flags_of(s.f_flag))
}

fn flags_of(e: &MountEntry) -> MountFlags {
    [
        (e.read_only, MountFlags::RDONLY),
        (e.nosuid, MountFlags::NOSUID),
        (e.nodev, MountFlags::NODEV),
        (e.noexec, MountFlags::NOEXEC),
    ]
    .into_iter()
    .filter(|(wanted, _)| *wanted)
    .fold(MountFlags::empty(), |acc, (_, flag)| acc | flag)
}

/// Opens `target`, which must exist.
fn open(root: &mut Root, target: &Path) -> Step<OwnedFd> {
    ctx(
        root.ensure(&components(target), Missing::Fail),
        target.display(),
    )
}

/// Re-applies flags to the bind mount now on top of `target`.
fn remount_bind(root: &mut Root, target: &Path, flags: MountFlags) -> Step<()> {
    let top = open(root, target)?;
    let remounted = m::remount_bind(&fd_path(&top), flags | kept_flags(&top));
    ctx(remounted, format_args!("remount {}", target.display()))
}

/// Applies the table's entries of `stage` under the current directory (the machine's root).
/// The kernel stage ends by making the root read-only when asked, so that too is locked.
pub(crate) fn apply(plan: &Plan, stage: Stage, console: Option<&Path>) -> Step<()> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::open(".", flags, Mode::empty());
    let mut root = Root::new(ctx(fd, "the machine's root")?);
    for e in plan.mounts.iter().filter(|e| e.stage == stage) {
        apply_one(plan, &mut root, e, console)
            .map_err(|err| err.within(format_args!("mount {}", e.target.display())))?;
    }
    if stage == Stage::Kernel && plan.root_read_only {
        remount_bind(&mut root, Path::new("/"), MountFlags::RDONLY)?;
    }
    Ok(())
}

/// `uid=,gid=` for a tmpfs the helper mounts, so the machine's root owns it.
fn owner_options(plan: &Plan, e: &MountEntry) -> String {
    match (e.stage, plan.id_map) {
        (Stage::Host | Stage::Kernel, Some(map)) => format!(",uid={},gid={}", map.base, map.base),
        _ => String::new(),
    }
}

/// Runs `create` as the machine's root: in the helper, host root has no id on an idmapped
/// root, and what it creates must belong to the machine's root.
fn as_machine_root<T>(plan: &Plan, e: &MountEntry, create: impl FnOnce() -> T) -> T {
    let saved = plan
        .id_map
        .filter(|_| plan.idmapped_root && e.stage != Stage::Inner)
        .map(|m| crate::sys::process::set_fs_ids(m.base, m.base));
    let created = create();
    if let Some((uid, gid)) = saved {
        crate::sys::process::set_fs_ids(uid, gid);
        // The kernel clears the parent-death signal on any change of the file-system ids:
        // arm it again, or a killed rmach would leave the helper, and so the machine, running.
        // (Should rmach die in between, the helper sees its setup pipe close and gives up.)
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    }
    created
}

/// Opens a mount point, creating it unless it is a user's bind or tmpfs in a read-only root.
fn mount_point(plan: &Plan, root: &mut Root, e: &MountEntry, dir: bool) -> Step<OwnedFd> {
    let create = !(e.from_user && plan.root_read_only);
    let missing = match (create, dir) {
        (false, _) => Missing::Fail,
        (true, true) => Missing::Directory,
        (true, false) => Missing::File,
    };
    let opened = as_machine_root(plan, e, || root.ensure(&components(&e.target), missing));
    opened.map_err(|err| match create {
        true => SetupError::new("create mount point", err),
        false => SetupError::new(
            "no such mount point in the read-only root (create it in the image or use --ephemeral)",
            err,
        ),
    })
}

fn apply_one(plan: &Plan, root: &mut Root, e: &MountEntry, console: Option<&Path>) -> Step<()> {
    // A mount since the last entry may have covered a directory the root handle remembers.
    root.invalidate();
    let flags = flags_of(e);
    match &e.kind {
        MountKind::Fs { fstype, data } => {
            let t = mount_point(plan, root, e, true)?;
            let mut data = data.clone();
            if *fstype == "tmpfs" {
                data.push_str(&owner_options(plan, e));
            }
            let source = Some(Path::new(fstype));
            let mounted = m::mount(source, &fd_path(&t), Some(fstype), flags, Some(&data));
            ctx(mounted, fstype)
        }
        MountKind::Node { major, minor } => node(plan, root, &e.target, *major, *minor),
        MountKind::BindHost { source, recursive } => {
            let meta = match std::fs::metadata(source) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, source.display())?,
            };
            let t = mount_point(plan, root, e, meta.is_dir())?;
            ctx(m::bind(source, &fd_path(&t), *recursive), source.display())?;
            if *recursive && e.read_only {
                // Every mount below the source too, not only the top one.
                ctx(
                    m::read_only_tree(&open(root, &e.target)?),
                    "read-only below",
                )?;
            }
            remount_bind(root, &e.target, flags)
        }
        MountKind::BindSelf => {
            let t = match root.ensure(&components(&e.target), Missing::Fail) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, "open")?,
            };
            ctx(m::bind(&fd_path(&t), &fd_path(&t), true), "bind")?;
            remount_bind(root, &e.target, flags)
        }
        MountKind::Mask => {
            let t = match root.ensure(&components(&e.target), Missing::Fail) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, "open")?,
            };
            let null = open(root, Path::new("/dev/null"))?;
            ctx(m::bind(&fd_path(&null), &fd_path(&t), false), "mask")
        }
        MountKind::Symlink { to } => {
            let comps = components(&e.target);
            let parent = ctx(root.parent(&comps, true), "parent")?;
            match rustix::fs::symlinkat(to, parent, OsStr::from_bytes(comps[comps.len() - 1])) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(err) => Err(SetupError::new("symlink", err)),
            }
        }
        MountKind::File { contents } => {
            as_machine_root(plan, e, || file(root, &e.target, contents))
        }
        MountKind::Remount => {
            // Only the mount the table made there: a user's mount over a parent (a bind on
            // /run) may have covered it, and is the user's.
            let target = root.ensure(&components(&e.target), Missing::Fail);
            match target.is_ok_and(|t| is_mount_root(&t)) {
                true => remount_bind(root, &e.target, flags),
                false => Ok(()),
            }
        }
        MountKind::Console => {
            let Some(pty) = console else { return Ok(()) };
            let t = mount_point(plan, root, e, false)?;
            ctx(m::bind(pty, &fd_path(&t), false), pty.display())
        }
    }
}

/// Whether `fd` is the root of a mount (not a directory inside one).
fn is_mount_root(fd: &OwnedFd) -> bool {
    rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::empty())
        .is_ok_and(|x| x.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// A character device node of the machine's own (mode 0666), owned by the machine's root.
fn node(plan: &Plan, root: &mut Root, target: &Path, major: u32, minor: u32) -> Step<()> {
    let comps = components(target);
    let parent = ctx(root.parent(&comps, true), "parent")?;
    let name = OsStr::from_bytes(comps[comps.len() - 1]);
    let dev = rustix::fs::makedev(major, minor);
    let mode = Mode::from_raw_mode(0o666);
    let made = rustix::fs::mknodat(parent, name, FileType::CharacterDevice, mode, dev);
    ctx(made, "mknod")?;
    // mknod obeys the umask: set the mode for real, and give the node to the machine's root,
    // as a node on a real /dev belongs to root.
    ctx(
        rustix::fs::chmodat(parent, name, mode, AtFlags::empty()),
        "chmod",
    )?;
    let Some(map) = plan.id_map else {
        return Ok(());
    };
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(map.base),
        rustix::fs::Gid::from_raw(map.base),
    );
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    ctx(
        rustix::fs::chownat(parent, name, Some(uid), Some(gid), nofollow),
        "chown",
    )
}

/// A regular file (mode 0444) holding `contents`.
fn file(root: &mut Root, target: &Path, contents: &[u8]) -> Step<()> {
    let comps = components(target);
    let parent = ctx(root.parent(&comps, true), "parent")?;
    let flags =
        OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let name = OsStr::from_bytes(comps[comps.len() - 1]);
    let fd = ctx(
        rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o444)),
        "create",
    )?;
    ctx(
        std::io::Write::write_all(&mut std::fs::File::from(fd), contents),
        "write",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_flags_map_by_name() {
        use StatVfsMountFlags as St;
        assert_eq!(mount_flags_of(St::RELATIME), MountFlags::RELATIME);
        assert_eq!(
            mount_flags_of(St::NODIRATIME),
            MountFlags::NODIRATIME | MountFlags::STRICTATIME
        );
        assert_eq!(
            mount_flags_of(St::RDONLY | St::NOSUID | St::NODEV | St::NOEXEC | St::NOATIME),
            MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC
                | MountFlags::NOATIME
        );
        assert_eq!(
            mount_flags_of(St::SYNCHRONOUS | St::MANDLOCK | St::RELATIME),
            MountFlags::RELATIME
        );
    }

    #[test]
    fn entry_flags_are_typed() {
        let mut e = MountEntry {
            target: "/x".into(),
            kind: MountKind::BindSelf,
            read_only: true,
            nosuid: false,
            nodev: true,
            noexec: false,
            optional: false,
            stage: Stage::Inner,
            from_user: false,
        };
        assert_eq!(flags_of(&e), MountFlags::RDONLY | MountFlags::NODEV);
        e.read_only = false;
        e.noexec = true;
        e.nosuid = true;
        assert_eq!(
            flags_of(&e),
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC
        );
        assert_eq!(components(Path::new("/")), Vec::<&[u8]>::new());
        assert_eq!(components(Path::new("/dev//pts/")), [b"dev", b"pts"]);
    }
}
