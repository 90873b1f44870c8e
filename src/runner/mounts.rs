//! Carrying out the mount table inside the child, before `pivot_root`. Every target is
//! resolved beneath the new root with `RESOLVE_IN_ROOT` and mounted through its
//! `/proc/self/fd` link, so symlinks in an image cannot redirect a mount onto the host.

use std::fmt::Display;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};

use super::plan::{MountEntry, MountKind, Plan, RootMode};
use crate::sys::mount::{self as m, mount};

/// Errors inside the child are plain messages: they travel to the parent through a pipe.
pub type ChildResult<T> = Result<T, String>;

pub fn ctx<T, E: Display>(r: Result<T, E>, what: impl Display) -> ChildResult<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
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

/// Flags a bind remount must keep (the kernel refuses to clear locked ones in a user namespace).
fn kept_flags(fd: &impl AsFd) -> libc::c_ulong {
    let keep = (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC)
        | libc::MS_NOATIME
        | libc::MS_NODIRATIME
        | libc::MS_RELATIME;
    rustix::fs::fstatvfs(fd).map_or(0, |s| s.f_flag.bits() as libc::c_ulong & keep)
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
fn remount_bind(root: &OwnedFd, target: &Path, flags: libc::c_ulong) -> ChildResult<()> {
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

/// Mounts the root: a bind of the directory onto itself, or an overlay with a tmpfs upper
/// layer in `scratch`. Returns the path to pivot into.
/// With a user namespace, `tree` is the idmapped root to attach instead of a plain bind.
pub fn prepare_root(plan: &Plan, scratch: &Path, tree: Option<&OwnedFd>) -> ChildResult<PathBuf> {
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
    match plan.root_mode {
        RootMode::Bind => {
            attach(&plan.root)?;
            Ok(plan.root.clone())
        }
        RootMode::Ephemeral => {
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
            let esc = |p: &Path| {
                let s = p.to_string_lossy();
                s.replace('\\', "\\\\")
                    .replace(',', "\\,")
                    .replace(':', "\\:")
            };
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                esc(&scratch.join("lower")),
                esc(&scratch.join("upper")),
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
            Ok(target)
        }
    }
}

/// Applies the table under `new_root`, then makes the root read-only if asked.
pub fn apply(plan: &Plan, new_root: &Path, console: Option<&Path>) -> ChildResult<()> {
    let root = ctx(
        openat2(
            CWD,
            new_root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        ),
        new_root.display(),
    )?;
    for e in &plan.mounts {
        apply_one(&root, e, console)
            .map_err(|err| format!("mount {}: {err}", e.target.display()))?;
    }
    if plan.root_read_only {
        remount_bind(&root, Path::new("/"), m::MS_RDONLY)?;
    }
    Ok(())
}

fn apply_one(root: &OwnedFd, e: &MountEntry, console: Option<&Path>) -> ChildResult<()> {
    let flags = flags_of(e);
    match &e.kind {
        MountKind::Fs { fstype, data } => {
            let t = ctx(ensure(root, &e.target, true, true), "create mount point")?;
            let src = Path::new(fstype);
            ctx(
                mount(Some(src), &fd_path(&t), Some(fstype), flags, Some(data)),
                fstype,
            )
        }
        MountKind::BindHost { source, recursive } => {
            let meta = match std::fs::metadata(source) {
                Err(_) if e.optional => return Ok(()),
                r => ctx(r, source.display())?,
            };
            let t = ctx(
                ensure(root, &e.target, meta.is_dir(), true),
                "create mount point",
            )?;
            let rec = if *recursive { m::MS_REC } else { 0 };
            ctx(
                mount(Some(source), &fd_path(&t), None, m::MS_BIND | rec, None),
                source.display(),
            )?;
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
                Err(err) => Err(err.to_string()),
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
            let t = ctx(ensure(root, &e.target, false, true), "create mount point")?;
            ctx(
                mount(Some(pty), &fd_path(&t), None, m::MS_BIND, None),
                pty.display(),
            )
        }
    }
}

/// Makes `new_root` the root and detaches the old one.
pub fn pivot(new_root: &Path) -> ChildResult<()> {
    ctx(std::env::set_current_dir(new_root), new_root.display())?;
    ctx(m::pivot_root(Path::new("."), Path::new(".")), "pivot_root")?;
    ctx(m::umount_detach(Path::new(".")), "detach the old root")?;
    ctx(std::env::set_current_dir("/"), "chdir /")
}
