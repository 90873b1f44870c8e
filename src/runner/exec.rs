//! The one place a plan is carried out, rmach's side: cgroup, scratch directory, idmapped
//! root, console, pipes and signals; the helper (`helper`) that builds the machine (`machine`);
//! the host-side setup (id maps, cgroup, veth) between the two; the relay; clean-up.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::cgroup::Cgroup;
use super::channel::{self, Message};
use super::console::{self, RawMode, Relay};
use super::machine::ChildFds;
use super::plan::Plan;
use super::spec::{Console, Network};
use super::{helper, init, userns, RunnerError};
use crate::sys::{net, ns, process as p};

/// What one run of the machine ended with.
pub struct Ended {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The machine asked to reboot (init killed by SIGHUP through `reboot(2)`).
    pub reboot: bool,
}

/// Removes the per-run scratch directory when the run ends, however it ends.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunnerError> {
    p::pipe().map_err(|e| RunnerError::Setup {
        message: format!("create a pipe: {e}"),
    })
}

pub fn execute_once(plan: &Plan) -> Result<Ended, RunnerError> {
    let meta = std::fs::metadata(&plan.root).map_err(|e| RunnerError::NoRoot {
        path: plan.root.clone(),
        source: e,
    })?;
    if !meta.is_dir() {
        return Err(RunnerError::NoRoot {
            path: plan.root.clone(),
            source: std::io::ErrorKind::NotADirectory.into(),
        });
    }
    let me = std::process::id();
    let mut cgroup = Cgroup::create(
        &plan.cgroup,
        plan.cgroup_parent.as_deref(),
        &plan.limits,
        &plan.device_allow,
        plan.device_policy,
    )?;
    let scratch = Scratch(match plan.root_mode {
        super::plan::RootMode::Ephemeral => {
            let d = plan.scratch.join(format!(".rmach-{me}-{}", plan.uuid));
            std::fs::create_dir_all(&plan.scratch)
                .and_then(|_| std::fs::create_dir(&d))
                .map_err(|e| RunnerError::Scratch {
                    path: d.clone(),
                    source: e,
                })?;
            Some(d)
        }
        super::plan::RootMode::Bind => None,
    });
    let idmap = plan.id_map;
    let tree = match idmap {
        Some(map) if map.base != 0 => Some(userns::idmapped_root(&plan.root, map)?),
        _ => None,
    };
    let (pty_master, pty_path) = match plan.console {
        c if c.has_pty() => {
            let (m, path) = crate::sys::pty::open_pty().map_err(|e| RunnerError::Setup {
                message: format!("open a pty: {e}"),
            })?;
            // The size must be right before the payload's first look at it, not after.
            let _ = crate::sys::pty::copy_winsize(&std::io::stdin(), &m);
            (Some(m), Some(path))
        }
        _ => (None, None),
    };
    let (out_r, out_w, err_r, err_w) = if plan.console == Console::Capture {
        let (a, b) = pipe()?;
        let (c, d) = pipe()?;
        (Some(a), Some(b), Some(c), Some(d))
    } else {
        (None, None, None, None)
    };
    let (sync_r, sync_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let (error_r, error_w) = pipe()?;
    let mut error_r = std::fs::File::from(error_r);
    let payload_status = p::shared_word().map_err(|e| RunnerError::Setup {
        message: format!("shared memory: {e}"),
    })?;
    let mut blocked = init::FORWARDED.to_vec();
    blocked.push(libc::SIGCHLD);
    // Restored when this run ends: a library caller gets its Ctrl-C back.
    let _mask = p::block_signals(&blocked).map_err(|e| RunnerError::Setup {
        message: format!("block signals: {e}"),
    })?;
    let sigfd = p::signalfd(&blocked).map_err(|e| RunnerError::Setup {
        message: format!("signalfd: {e}"),
    })?;
    // No new mount namespace yet: the machine copies the helper's once the helper has mounted
    // what must be locked (see `mounts::prepare_root` and `Stage::Outer`).
    let mut flags = ns::CLONE_NEWPID | ns::CLONE_NEWUTS | ns::CLONE_NEWIPC;
    if plan.network != Network::Host {
        flags |= ns::CLONE_NEWNET;
    }
    if idmap.is_some() {
        flags |= ns::CLONE_NEWUSER;
    }
    let fds = ChildFds {
        tree,
        sync: sync_r,
        stdout: out_w,
        stderr: err_w,
        tty: match &pty_path {
            Some(path) => Some(open_tty(path, idmap.map(|m| m.base))?),
            None => None,
        },
        pty: pty_path,
    };
    // A copy of the console's slave stays open here for the whole run: once init closes its
    // own copies (systemd does so early), reads from the master would fail with EIO and the
    // console relay would stop for good. (Close-on-exec: the machine never sees this copy.)
    let _console_slave = fds.tty.as_ref().and_then(|t| t.try_clone().ok());
    // The namespaces are cloned by a helper forked with glibc's fork: a raw clone from a
    // library caller with threads could leave the child with a locked allocator. The helper is
    // single-threaded; it reports the machine's PID, waits for it and reports its status.
    let (report_r, report_w) = pipe()?;
    let mut report_r = std::fs::File::from(report_r);
    let helper = match ns::fork_threadsafe() {
        Ok(None) => {
            drop((report_r, ready_w));
            let ends = helper::Ends {
                error: error_w,
                report: report_w,
                sync: sync_w,
                ready: ready_r,
            };
            helper::run(plan, fds, ends, scratch.0.as_deref(), flags, payload_status)
        }
        Ok(Some(h)) => {
            drop((fds, error_w, report_w, sync_w, ready_r));
            h
        }
        Err(e) => {
            return Err(RunnerError::Setup {
                message: format!("fork: {e}"),
            })
        }
    };
    let pid = match channel::receive(&mut report_r) {
        Some(Message::Pid(pid)) => pid,
        _ => {
            let failure = setup_failure(plan, channel::receive(&mut error_r));
            let _ = p::wait_raw(helper, false);
            return Err(failure.unwrap_or_else(|| RunnerError::Setup {
                message: "the helper ended without a word".into(),
            }));
        }
    };
    let setup = (|| -> Result<(), RunnerError> {
        if let Some(map) = idmap {
            userns::write_maps(pid, map)?;
            cgroup.delegate(map.base, map.base)?;
        }
        cgroup.add(pid)?;
        if let Some(host) = plan.veth.clone() {
            // A killed run's pair goes with its network namespace once the stale-cgroup
            // clean-up has ended its machine; give the kernel a moment to free it.
            let link = Path::new("/sys/class/net").join(&host);
            for _ in 0..200 {
                if !link.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            net::create_veth(&host, "host0", pid)
                .and_then(|_| net::link_up(&host))
                .map_err(|e| RunnerError::Network {
                    name: host,
                    source: e,
                })?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        // The helper waits for this pipe: closing it ends the helper too.
        drop(ready_w);
        let _ = p::kill(pid, libc::SIGKILL);
        let _ = p::wait_raw(helper, false);
        return Err(e);
    }
    let _ = std::fs::File::from(ready_w).write_all(b"1");
    // End of file with no message: the payload's exec went through.
    if let Some(failure) = setup_failure(plan, channel::receive(&mut error_r)) {
        let _ = p::kill(pid, libc::SIGKILL);
        let _ = p::wait_raw(helper, false);
        return Err(failure);
    }
    let _raw = RawMode::enter_for(plan.console);
    let mut relay = Relay {
        console: plan.console,
        pty: pty_master,
        captured: vec![(out_r, Vec::new()), (err_r, Vec::new())],
    };
    let boot = plan.boot;
    let raw = console::relay(pid, helper, &sigfd, &mut relay, |sig| match sig {
        libc::SIGTERM | libc::SIGINT if boot => Some(p::sigrtmin() + 3),
        s => Some(s),
    });
    drop(_raw);
    cgroup.remove();
    drop(scratch);
    let [(_, stdout), (_, stderr)]: [(Option<OwnedFd>, Vec<u8>); 2] = relay
        .captured
        .try_into()
        .unwrap_or_else(|_| [(None, Vec::new()), (None, Vec::new())]);
    // The helper's own status says nothing; the machine's comes through its pipe.
    let raw = match channel::receive(&mut report_r) {
        Some(Message::Status(status)) => status,
        _ => raw,
    };
    let (status, reboot) = match (boot, libc::WIFSIGNALED(raw), libc::WTERMSIG(raw)) {
        (true, true, libc::SIGHUP) => (ExitStatus::from_raw(0), true),
        (true, true, libc::SIGINT) => (ExitStatus::from_raw(0), false),
        _ => (ExitStatus::from_raw(raw), false),
    };
    Ok(Ended {
        status,
        stdout,
        stderr,
        reboot,
    })
}

/// The error a setup channel message stands for.
fn setup_failure(plan: &Plan, message: Option<Message>) -> Option<RunnerError> {
    Some(match message? {
        Message::CommandNotFound(command) => RunnerError::CommandNotFound {
            command,
            root: plan.root.clone(),
        },
        Message::Failed(message) => RunnerError::Setup { message },
        other => RunnerError::Setup {
            message: format!("unexpected {other:?} on the setup channel"),
        },
    })
}

/// Opens the pty's slave for the child; with a user namespace it belongs to the machine's root
/// and tty group (5), as a terminal's owner inside expects.
fn open_tty(path: &Path, base: Option<u32>) -> Result<OwnedFd, RunnerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| RunnerError::Setup {
        message: format!("open {}: {e}", path.display()),
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(fail)?;
    if let Some(b) = base.filter(|b| *b != 0) {
        std::os::unix::fs::fchown(&f, Some(b), Some(b + 5)).map_err(fail)?;
    }
    Ok(f.into())
}
