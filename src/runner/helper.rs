//! rmach's helper: forked with glibc's `fork` (a raw clone from a library caller with threads
//! could leave the child with a locked allocator), single-threaded from then on. It drops
//! everything of the caller, builds the machine's mount namespace (root, host stage), pivots
//! into it, clones the machine, mounts the kernel stage once rmach has done the host-side
//! setup, tells rmach (which lets the machine go), waits for the machine and reports its
//! status.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use super::channel::{ctx, Channel, Message, SetupError, Step};
use super::init;
use super::machine::{self, ChildFds};
use super::plan::{Plan, Stage};
use super::{mounts, rootfs};
use crate::sys::ns::Namespaces;
use crate::sys::{ns, pidfd, process as p};

/// The channel ends the helper is handed.
pub(super) struct Ends {
    /// Its own end of its channel with rmach (see `exec::Helper` for what goes each way).
    pub(super) rmach: Channel,
    /// The machine's end of the machine's channel with rmach, passed on at the clone.
    pub(super) machine: Channel,
}

/// The helper's whole life; never returns.
pub(super) fn run(plan: &Plan, fds: ChildFds, ends: Ends, payload_status: &'static AtomicU64) -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let prepared = isolate_from_caller(plan, &fds, [&ends.rmach, &ends.machine]).and_then(|_| {
        rootfs::prepare(plan, fds.tree.as_ref())?;
        mounts::apply(plan, Stage::Host, fds.pty.as_deref())?;
        rootfs::pivot()
    });
    if let Err(e) = prepared {
        ends.rmach.send(&e.into());
        p::exit_now(1)
    }
    // rmach has moved this helper into the machine's cgroup: the machine is born there.
    if !ends.rmach.wait_go() {
        p::exit_now(1)
    }
    // SAFETY: the helper is single-threaded (forked from rmach with glibc's fork).
    match unsafe { ns::clone_fork(plan.namespaces) } {
        Ok(None) => {
            // The helper's end: rmach must see the helper's exit as end of file.
            drop(ends.rmach);
            machine::child(plan, fds, ends.machine, payload_status)
        }
        Ok(Some(pid)) => {
            // Only the machine may hold these, or rmach would never see the end of file that
            // says the payload's exec went through.
            drop((fds, ends.machine));
            ends.rmach.send(&Message::Pid(pid));
            // rmach has written the id maps, moved the machine into its cgroup and
            // made its veth: mount what must be locked, then have rmach let the machine go.
            if !(ends.rmach.wait_go() && kernel_mounts(plan, pid, &ends.rmach)) {
                let _ = p::kill(pid, libc::SIGKILL);
                p::exit_now(1)
            }
            ends.rmach.send(&Message::Go);
            let mut raw = p::wait_raw(pid, false).ok().flatten().map_or(0, |r| r.1);
            // With `run`, the payload's status as init left it, if it did.
            let word = payload_status.load(std::sync::atomic::Ordering::SeqCst);
            if !plan.boot && word & init::REPORTED != 0 {
                raw = word as u32 as i32;
            }
            ends.rmach.send(&Message::Status(raw));
            p::exit_now(0)
        }
        Err(e) => {
            let e = SetupError::new("clone the machine's namespaces", e);
            ends.rmach.send(&e.into());
            p::exit_now(1)
        }
    }
}

/// In the helper, before the machine is cloned: closes every descriptor but 0-2 and the
/// run's own, and replaces the arguments and environment the helper inherited from the caller
/// with the machine's, so PID 1 (which never execs for `run`) holds nothing of the caller.
fn isolate_from_caller(plan: &Plan, fds: &ChildFds, channels: [&Channel; 2]) -> Step<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut keep: Vec<i32> = channels.iter().map(|c| c.as_fd().as_raw_fd()).collect();
    for f in [&fds.tree, &fds.stdout, &fds.stderr, &fds.tty]
        .into_iter()
        .flatten()
    {
        keep.push(f.as_raw_fd());
    }
    ctx(p::close_all_except(&keep), "close the caller's descriptors")?;
    let mut environ = Vec::new();
    for (k, v) in &plan.env {
        environ.extend_from_slice(format!("{k}={v}").as_bytes());
        environ.push(0);
    }
    ctx(
        p::replace_cmdline_and_environ(b"rmach\0", &environ),
        "replace the environment",
    )
}

/// In the helper: mounts the table's kernel stage from a process in the machine's PID
/// namespace (its /proc must show the machine's processes) and, with a private network, its
/// network namespace (its /sys shows the machine's interfaces), then detaches the host's root.
/// False after a failure, which has been sent to rmach.
fn kernel_mounts(plan: &Plan, machine: i32, rmach: &Channel) -> bool {
    let report = |e: SetupError| rmach.send(&e.into());
    let pidfd = match ctx(pidfd::open(machine as u32), "open the machine's pidfd").and_then(|fd| {
        let pid_ns = pidfd::enter_namespaces(&fd, ns::CLONE_NEWPID);
        ctx(pid_ns, "join the machine's PID namespace").map(|_| fd)
    }) {
        Ok(fd) => fd,
        Err(e) => {
            report(e);
            return false;
        }
    };
    // SAFETY: the helper is single-threaded.
    let mounted = match unsafe { ns::fork() } {
        Ok(None) => {
            let mounted = if plan.namespaces.contains(Namespaces::NEWNET) {
                let net = pidfd::enter_namespaces(&pidfd, ns::CLONE_NEWNET);
                ctx(net, "join the machine's network")
            } else {
                Ok(())
            }
            .and_then(|_| mounts::apply(plan, Stage::Kernel, None));
            // This process took PID 2 in the machine's namespace: hand it back, so the payload
            // of `run` is PID 2 as with nspawn --as-pid2 (the write counts for the writer's
            // PID namespace; the host's /proc still hangs beside the old root).
            let last_pid = Path::new("/")
                .join(rootfs::OLD_ROOT)
                .join("proc/sys/kernel/ns_last_pid");
            let _ = std::fs::write(last_pid, "1");
            match mounted {
                Ok(()) => p::exit_now(0),
                Err(m) => {
                    report(m);
                    p::exit_now(1)
                }
            }
        }
        Ok(Some(mounter)) => matches!(p::wait_raw(mounter, false), Ok(Some((_, 0)))),
        Err(e) => {
            report(SetupError::new("fork the mounter", e));
            false
        }
    };
    mounted && rootfs::detach_old_root().map_err(report).is_ok()
}
