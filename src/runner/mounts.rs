//! Carrying out the mount table inside the child, before `pivot_root`. Every target is
//! resolved beneath the new root with `RESOLVE_IN_ROOT` and mounted through its
//! `/proc/self/fd` link, so symlinks in an image cannot redirect a mount onto the host.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};

use super::channel::{ctx, SetupError, Step};
use super::plan::{MountEntry, MountKind, Plan, RootMode, Stage};
use crate::sys::mount::{self as m, mount};

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

fn open_in(root: &OwnedFd, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::CLOEXEC | OFlags::PATH;
    let res = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    openat2(root, rel, flags, Mode::empty(), res).map_err(io::Error::from)
}

/// The target as a path relative to the root; "." for the root itself.
fn relative(target: &Path) -> PathBuf {
    let mut rel = PathBuf::from(".");
    rel.extend(
        target
            .components()
            .filter(|c| matches!(c, Component::Normal(_))),
    );
    rel
}

/// Opens `target` under `root` (O_PATH), creating missing parents as directories and the last
/// component as a directory or an empty file when `create` says so.
fn ensure(root: &OwnedFd, target: &Path, dir: bool, create: bool) -> io::Result<OwnedFd> {
    let rel = relative(target);
    if let Ok(fd) = open_in(root, &rel, OFlags::empty()) {
        return Ok(fd);
    }
    if !create {
        return Err(io::ErrorKind::NotFound.into());
    }
    let mut cur = PathBuf::from(".");
    let parts: Vec<_> = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let n = parts.len();
    for (i, c) in parts.into_iter().enumerate() {
        let parent = open_in(root, &cur, OFlags::DIRECTORY)?;
        cur.push(c);
        if open_in(root, &cur, OFlags::empty()).is_ok() {
            continue;
        }
        let last = i + 1 == n;
        let r = if !last || dir {
            rustix::fs::mkdirat(&parent, c.as_os_str(), Mode::from_raw_mode(0o755)).map(drop)
        } else {
            let fl = OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&parent, c.as_os_str(), fl, Mode::from_raw_mode(0o644)).map(drop)
        };
        match r {
            Err(rustix::io::Errno::EXIST) | Ok(()) => {}
            Err(e) => return Err(e.into()),
        }
    }
    open_in(root, &rel, OFlags::empty())
}

/// The mount flags a statvfs result reports, as mount(2) flags. The two sets differ
/// (`ST_RELATIME` is 0x1000, `MS_RELATIME` 1 << 21), so each is mapped by name.
pub fn mount_flags_of(st: rustix::fs::StatVfsMountFlags) -> libc::c_ulong {
    use rustix::fs::StatVfsMountFlags as St;
    [
        (St::RDONLY, m::MS_RDONLY),
        (St::NOSUID, m::MS_NOSUID),
        (St::NODEV, m::MS_NODEV),
        (St::NOEXEC, m::MS_NOEXEC),
        (St::NOATIME, libc::MS_NOATIME),
        (St::NODIRATIME, libc::MS_NODIRATIME),
        (St::RELATIME, libc::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(st_flag, _)| st.contains(*st_flag))
    .fold(0, |acc, (_, ms)| acc | ms)
        // Neither noatime nor relatime is strictatime, which must be said: a remount naming
        // any atime flag (nodiratime) otherwise falls back to relatime.
        | if st.intersects(St::NOATIME | St::RELATIME) {
            0
        } else {
            libc::MS_STRICTATIME
        }
}

/// Flags a bind remount must keep (the kernel refuses to clear locked ones in a user namespace).
fn kept_flags(fd: &impl AsFd) -> libc::c_ulong {
    rustix::fs::fstatvfs(fd).map_or(0, |s| mount_flags_of(s.f_flag))
}

fn flags_of(e: &MountEntry) -> libc::c_ulong {
    let mut f = 0;
    if e.read_only {
        f |= m::MS_RDONLY;
    }
    if e.nosuid {
        f |= m::MS_NOSUID;
    }
    if e.nodev {
        f |= m::MS_NODEV;
    }
    if e.noexec {
        f |= m::MS_NOEXEC;
    }
    f
}

/// Re-applies flags to the bind mount now on top of `target`.
fn remount_bind(root: &OwnedFd, target: &Path, flags: libc::c_ulong) -> Step<()> {
    let top = ctx(
        open_in(root, &relative(target), OFlags::empty()),
        target.display(),
    )?;
    let f = m::MS_REMOUNT | m::MS_BIND | flags | kept_flags(&top);
    ctx(
        mount(None, &fd_path(&top), None, f, None),
        format!("remount {}", target.display()),
    )
}

/// In rmach's helper: gives it a mount namespace of its own (private, so nothing propagates to
/// the host), mounts the machine's root (a bind of the directory onto itself, the idmapped
/// `tree`, or an overlay with a tmpfs upper layer in `scratch`) and makes it the current
/// directory, which the machine inherits: it never walks the host path (a 0700 store).
pub fn prepare_root(plan: &Plan, tree: Option<&OwnedFd>) -> Step<()> {
    ctx(
        crate::sys::ns::unshare(crate::sys::ns::Namespaces::NEWNS),
        "new mount namespace",
    )?;
    ctx(
        mount(None, Path::new("/"), None, m::MS_REC | m::MS_PRIVATE, None),
        "make / private",
    )?;
    let attach = |at: &Path| match tree {
        Some(t) => ctx(m::attach_tree(t, at), "attach the idmapped root"),
        None => ctx(
            mount(Some(&plan.root), at, None, m::MS_BIND | m::MS_REC, None),
            format!("bind {}", plan.root.display()),
        ),
    };
    let root = match plan.root_mode {
        RootMode::Bind => {
            attach(&plan.root)?;
            plan.root.clone()
        }
        RootMode::Ephemeral => {
            let scratch = plan.scratch_dir.as_deref().unwrap_or(Path::new("/"));
            ctx(
                mount(
                    Some(Path::new("tmpfs")),
                    scratch,
                    Some("tmpfs"),
                    0,
                    Some("mode=700"),
                ),
                "scratch tmpfs",
            )?;
            for d in ["upper", "work", "root", "lower"] {
                ctx(std::fs::create_dir(scratch.join(d)), "scratch directory")?;
            }
            attach(&scratch.join("lower"))?;
            // The upper layer's root is the machine's "/": it takes the image root's mode,
            // and belongs to the machine's root.
            let lower = ctx(std::fs::metadata(scratch.join("lower")), "lower layer")?;
            let upper = scratch.join("upper");
            ctx(
                std::fs::set_permissions(&upper, lower.permissions()),
                "upper layer",
            )?;
            if let Some(map) = plan.id_map {
                for d in ["upper", "work"] {
                    ctx(
                        std::os::unix::fs::chown(scratch.join(d), Some(map.base), Some(map.base)),
                        "upper layer owner",
                    )?;
                }
            }
            let esc = |p: &Path| {
                let s = p.to_string_lossy();
                s.replace('\\', "\\\\")
                    .replace(',', "\\,")
                    .replace(':', "\\:")
            };
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                esc(&scratch.join("lower")),
                esc(&upper),
                esc(&scratch.join("work"))
            );
            let target = scratch.join("root");
            ctx(
                mount(
                    Some(Path::new("overlay")),
                    &target,
                    Some("overlay"),
                    0,
                    Some(&data),
                ),
                "ephemeral overlay",
            )?;
            target
        }
    };
    ctx(std::env::set_current_dir(&root), root.display())
}

/// Applies the table's entries of `stage` under the current directory (the machine's root).
/// The kernel stage ends by making the root read-only when asked, so that too is locked.
pub fn apply(plan: &Plan, stage: Stage, console: Option<&Path>) -> Step<()> {
    let root = ctx(
        openat2(
            CWD,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        ),
        "the machine's root",
    )?;
    for e in plan.mounts.iter().filter(|e| e.stage == stage) {
        apply_one(plan, &root, e, console)
            .map_err(|err| err.within(format_args!("mount {}", e.target.display())))?;
    }
    if stage == Stage::Kernel && plan.root_read_only {
        remount_bind(&root, Path::new("/"), m::MS_RDONLY)?;
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

/// Opens a mount point, creating it unless it is a user's bind or tmpfs in a read-only root.
fn mount_point(plan: &Plan, root: &OwnedFd, e: &MountEntry, dir: bool) -> Step<OwnedFd> {
    let create = !(e.from_user && plan.root_read_only);
    // In the helper, host root has no id on an idmapped root: create as the machine's root.
    let as_machine_root = plan
        .id_map
        .filter(|m| m.base != 0 && e.stage != Stage::Inner)
        .map(|m| crate::sys::process::set_fs_ids(m.base, m.base));
    let opened = ensure(root, &e.target, dir, create);
    if let Some((uid, gid)) = as_machine_root {
        crate::sys::process::set_fs_ids(uid, gid);
    }
    opened.map_err(|err| {
        if create {
            SetupError::new("create mount point", err)
        } else {
            let what = "no such mount point in the read-only root (create it in the image or use --ephemeral)";
            SetupError::new(what, err)
        }
    })
}

fn apply_one(plan: &Plan, root: &OwnedFd, e: &MountEntry, console: Option<&Path>) -> Step<()> {
    let flags = flags_of(e);
    match &e.kind {
        MountKind::Fs { fstype, data } => {
            let t = mount_point(plan, root, e, true)?;
            let src = Path::new(fstype);
            let mut data = data.clone();
            if *fstype == "tmpfs" {
                data.push_str(&owner_options(plan, e));
            }
            ctx(
                mount(Some(src), &fd_path(&t), Some(fstype), flags, Some(&data)),
                fstype,
            )
        }
        MountKind::Node { major, minor } => {
            let rel = relative(&e.target);
            let parent = ctx(
                ensure(root, rel.parent().unwrap_or(Path::new(".")), true, true),
                "parent",
            )?;
            let name = rel.file_name().unwrap_or_default();
            let dev = rustix::fs::makedev(*major, *minor);
            let mode = Mode::from_raw_mode(0o666);
            ctx(
                rustix::fs::mknodat(
                    &parent,
                    name,
                    rustix::fs::FileType::CharacterDevice,
                    mode,
                    dev,
                ),
                "mknod",
            )?;
            // mknod obeys the umask: set the mode for real, and give the node to the machine's
            // root, as a node on a real /dev belongs to root.
            ctx(
                rustix::fs::chmodat(&parent, name, mode, rustix::fs::AtFlags::empty()),
                "chmod",
            )?;
            if let Some(map) = plan.id_map {
                let (uid, gid) = (
                    rustix::fs::Uid::from_raw(map.base),
                    rustix::fs::Gid::from_raw(map.base),
                );
                ctx(
                    rustix::fs::chownat(
                        &parent,
                        name,
                        Some(uid),
                        Some(gid),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    ),
                    "chown",
                )?;
            }
            Ok(())
        }
        MountKind::BindHost { source, recursive } => {
            let meta = match std::fs::metadata(source) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, source.display())?,
            };
            let t = mount_point(plan, root, e, meta.is_dir())?;
            let rec = if *recursive { m::MS_REC } else { 0 };
            ctx(
                mount(Some(source), &fd_path(&t), None, m::MS_BIND | rec, None),
                source.display(),
            )?;
            if *recursive && e.read_only {
                // Every mount below the source too, not only the top one.
                let top = ctx(
                    open_in(root, &relative(&e.target), OFlags::empty()),
                    "reopen",
                )?;
                ctx(m::set_read_only_recursive(&top), "read-only below")?;
            }
            remount_bind(root, &e.target, flags)
        }
        MountKind::BindSelf => {
            let t = match ensure(root, &e.target, true, false) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, "open")?,
            };
            let p = fd_path(&t);
            ctx(
                mount(Some(&p), &p, None, m::MS_BIND | m::MS_REC, None),
                "bind",
            )?;
            remount_bind(root, &e.target, flags)
        }
        MountKind::Mask => {
            let t = match ensure(root, &e.target, false, false) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, "open")?,
            };
            let null = ctx(
                ensure(root, Path::new("/dev/null"), false, false),
                "/dev/null",
            )?;
            ctx(
                mount(Some(&fd_path(&null)), &fd_path(&t), None, m::MS_BIND, None),
                "mask",
            )
        }
        MountKind::Symlink { to } => {
            let rel = relative(&e.target);
            let parent = ctx(
                ensure(root, rel.parent().unwrap_or(Path::new(".")), true, true),
                "parent",
            )?;
            let name = rel.file_name().unwrap_or_default();
            match rustix::fs::symlinkat(to, &parent, name) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(err) => Err(SetupError::new("symlink", err)),
            }
        }
        MountKind::File { contents } => {
            let rel = relative(&e.target);
            let parent = ctx(
                ensure(root, rel.parent().unwrap_or(Path::new(".")), true, true),
                "parent",
            )?;
            let fl = OFlags::CREATE
                | OFlags::TRUNC
                | OFlags::WRONLY
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC;
            let name = rel.file_name().unwrap_or_default();
            let fd = ctx(
                rustix::fs::openat(&parent, name, fl, Mode::from_raw_mode(0o444)),
                "create",
            )?;
            ctx(
                std::io::Write::write_all(&mut std::fs::File::from(fd), contents),
                "write",
            )
        }
        MountKind::Console => {
            let Some(pty) = console else { return Ok(()) };
            let t = mount_point(plan, root, e, false)?;
            ctx(
                mount(Some(pty), &fd_path(&t), None, m::MS_BIND, None),
                pty.display(),
            )
        }
    }
}

/// Where the host's root waits, inside the machine's /dev, between the helper's pivot and the
/// kernel stage (whose /proc and /sys mounts the kernel allows only beside visible ones).
pub const OLD_ROOT: &str = "dev/.rmach-old-root";

/// In the helper: makes the current directory (the machine's root) the root, keeping the
/// host's at [`OLD_ROOT`] until [`detach_old_root`].
pub fn pivot() -> Step<()> {
    ctx(
        rustix::fs::mkdir(OLD_ROOT, Mode::from_raw_mode(0o700)),
        "old root mount point",
    )?;
    ctx(
        m::pivot_root(Path::new("."), Path::new(OLD_ROOT)),
        "pivot_root",
    )?;
    ctx(std::env::set_current_dir("/"), "chdir /")
}

/// Detaches the host's root: nothing of the host's mount tree is left for the machine to copy.
pub fn detach_old_root() -> Step<()> {
    let old = Path::new("/").join(OLD_ROOT);
    ctx(m::umount_detach(&old), "detach the old root")?;
    ctx(std::fs::remove_dir(&old), "old root mount point")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statvfs_flags_map_by_name() {
        use rustix::fs::StatVfsMountFlags as St;
        assert_eq!(mount_flags_of(St::RELATIME), libc::MS_RELATIME);
        assert_eq!(
            mount_flags_of(St::NODIRATIME),
            libc::MS_NODIRATIME | libc::MS_STRICTATIME
        );
        assert_eq!(
            mount_flags_of(St::RDONLY | St::NOSUID | St::NODEV | St::NOEXEC | St::NOATIME),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME
        );
        assert_eq!(
            mount_flags_of(St::SYNCHRONOUS | St::MANDLOCK | St::RELATIME),
            libc::MS_RELATIME
        );
    }
}
