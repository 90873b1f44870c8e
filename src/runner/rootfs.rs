//! The machine's root in rmach's helper: a mount namespace of its own, the root mounted
//! (bound, idmapped or an overlay), `pivot_root` into it, and the host's root detached once
//! the kernel stage no longer needs it.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::Mode;

use super::channel::{ctx, Step};
use super::plan::{Plan, RootMode};
use crate::sys::mount::{self as m, MountFlags};
use crate::sys::ns::{self, Namespaces};

/// Gives the helper a mount namespace of its own (private, so nothing propagates to the
/// host), mounts the machine's root (a bind of the directory onto itself, the idmapped `tree`,
/// or an overlay with a tmpfs upper layer in the plan's scratch directory) and makes it the
/// current directory, which the machine inherits: it never walks the host path (a 0700 store).
pub(crate) fn prepare(plan: &Plan, tree: Option<&OwnedFd>) -> Step<()> {
    ctx(ns::unshare(Namespaces::NEWNS), "new mount namespace")?;
    ctx(m::make_private(Path::new("/")), "make / private")?;
    let attach = |at: &Path| match tree {
        Some(t) => ctx(m::attach_tree(t, at), "attach the idmapped root"),
        None => ctx(
            m::bind(&plan.root, at, true),
            format!("bind {}", plan.root.display()),
        ),
    };
    let root = match (plan.root_mode, &plan.scratch_dir) {
        (RootMode::Ephemeral, Some(scratch)) => {
            overlay(plan, scratch, attach)?;
            scratch.join("root")
        }
        _ => {
            attach(&plan.root)?;
            plan.root.clone()
        }
    };
    ctx(std::env::set_current_dir(&root), root.display())
}

/// The ephemeral root: the image (attached by `attach`) as the lower layer of an overlay
/// whose upper layer is a tmpfs in `scratch`, mounted at `scratch/root`.
fn overlay(plan: &Plan, scratch: &Path, attach: impl Fn(&Path) -> Step<()>) -> Step<()> {
    let tmpfs = Some(Path::new("tmpfs"));
    let private = Some("mode=700");
    let mounted = m::mount(tmpfs, scratch, Some("tmpfs"), MountFlags::empty(), private);
    ctx(mounted, "scratch tmpfs")?;
    for d in ["upper", "work", "root", "lower"] {
        ctx(std::fs::create_dir(scratch.join(d)), "scratch directory")?;
    }
    let (lower, upper, work) = (
        scratch.join("lower"),
        scratch.join("upper"),
        scratch.join("work"),
    );
    attach(&lower)?;
    // The upper layer's root is the machine's "/": it takes the image root's mode, and
    // belongs to the machine's root.
    let mode = ctx(std::fs::metadata(&lower), "lower layer")?.permissions();
    ctx(std::fs::set_permissions(&upper, mode), "upper layer")?;
    if let Some(map) = plan.id_map {
        for d in [&upper, &work] {
            let owned = std::os::unix::fs::chown(d, Some(map.base), Some(map.base));
            ctx(owned, "upper layer owner")?;
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
        esc(&lower),
        esc(&upper),
        esc(&work)
    );
    let target = scratch.join("root");
    let overlay = Some(Path::new("overlay"));
    let mounted = m::mount(
        overlay,
        &target,
        Some("overlay"),
        MountFlags::empty(),
        Some(&data),
    );
    ctx(mounted, "ephemeral overlay")
}

/// Where the host's root waits, inside the machine's /dev, between the helper's pivot and the
/// kernel stage (whose /proc and /sys mounts the kernel allows only beside visible ones).
pub(crate) const OLD_ROOT: &str = "dev/.rmach-old-root";

/// Makes the current directory (the machine's root) the root, keeping the host's at
/// [`OLD_ROOT`] until [`detach_old_root`].
pub(crate) fn pivot() -> Step<()> {
    let mode = Mode::from_raw_mode(0o700);
    ctx(rustix::fs::mkdir(OLD_ROOT, mode), "old root mount point")?;
    ctx(
        m::pivot_root(Path::new("."), Path::new(OLD_ROOT)),
        "pivot_root",
    )?;
    ctx(std::env::set_current_dir("/"), "chdir /")
}

/// Detaches the host's root: nothing of the host's mount tree is left for the machine to copy.
pub(crate) fn detach_old_root() -> Step<()> {
    let old = Path::new("/").join(OLD_ROOT);
    ctx(m::umount_detach(&old), "detach the old root")?;
    ctx(std::fs::remove_dir(&old), "old root mount point")
}
