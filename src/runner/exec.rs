//! The one place a plan is carried out, rmach's side, as a sequence of small steps. Each host
//! resource is held by a guard that undoes it however the run ends: the machine's cgroup, the
//! scratch directory, the idmapped root, the console's pty, the capture pipes, the signal mask,
//! and the helper (`helper`) that builds the machine (`machine`), killed and reaped with it.
//! rmach holds one channel with the helper and one with the machine (`channel`) and steps
//! both along with `Go`. The steps decide nothing: every choice is in the [`Plan`].

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::cgroup::Cgroup;
use super::channel::{Channel, Message, SetupError};
use super::console::{self, RawMode, Relay};
use super::machine::ChildFds;
use super::plan::Plan;
use super::spec::Console;
use super::{helper, init, userns, RunnerError};
use crate::sys::{net, ns, process as p};

/// What one run of the machine ended with.
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// The machine asked to reboot (init killed by SIGHUP through `reboot(2)`).
    pub(crate) reboot: bool,
}

pub(crate) fn execute_once(plan: &Plan) -> Result<Ended, RunnerError> {
    check_root(&plan.root)?;
    let cgroup = Cgroup::create(plan)?;
    let scratch = ScratchDir::create(plan.scratch_dir.as_deref())?;
    let tree = match plan.id_map.filter(|_| plan.idmapped_root) {
        Some(map) => Some(userns::idmapped_root(&plan.root, map)?),
        None => None,
    };
    let pty = Pty::open(plan)?;
    let mut capture = Capture::open(plan.console)?;
    let signals = Signals::block()?;
    let mut helper = Helper::start(plan, tree, &pty, &mut capture)?;
    // The helper goes into the machine's cgroup while it prepares the root, and the machine
    // it clones is born there: the migration's wait for an RCU grace period (milliseconds)
    // overlaps the helper's work instead of following the clone.
    if let Err(e) = cgroup.add(helper.pid) {
        return Err(helper.failure_if_ended(plan).unwrap_or(e));
    }
    helper.send_go();
    let pid = helper.machine_pid(plan)?;
    cgroup.release(helper.pid)?;
    host_setup(plan, &cgroup, pid)?;
    helper.send_go();
    helper.start_machine(plan)?;
    let (raw, stdout, stderr) = relay(plan, &mut helper, &signals, pty, capture);
    drop((cgroup, scratch));
    // The helper's own status says nothing; the machine's comes through its channel.
    let raw = match helper.channel.receive() {
        Some(Message::Status(status)) => status,
        _ => raw,
    };
    let (status, reboot) = match (plan.boot, libc::WIFSIGNALED(raw), libc::WTERMSIG(raw)) {
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

/// A host-side step failed: what and why.
fn failed(what: &str) -> impl FnOnce(std::io::Error) -> RunnerError + '_ {
    move |e| RunnerError::Setup(SetupError::new(what, e))
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), RunnerError> {
    p::pipe().map_err(failed(what))
}

fn check_root(root: &Path) -> Result<(), RunnerError> {
    let no_root = |source| RunnerError::NoRoot {
        path: root.into(),
        source,
    };
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(no_root(std::io::ErrorKind::NotADirectory.into())),
        Err(e) => Err(no_root(e)),
    }
}

/// The per-run scratch directory, removed when the run ends, however it ends.
struct ScratchDir(Option<PathBuf>);

impl ScratchDir {
    fn create(dir: Option<&Path>) -> Result<ScratchDir, RunnerError> {
        let Some(dir) = dir else {
            return Ok(ScratchDir(None));
        };
        let parent = dir.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent)
            .and_then(|_| std::fs::create_dir(dir))
            .map_err(|source| RunnerError::Scratch {
                path: dir.into(),
                source,
            })?;
        Ok(ScratchDir(Some(dir.into())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The machine's console, with a pty console mode: rmach's master, the slave's path, and the
/// slave, opened for the machine. rmach keeps a copy of the slave open for the whole run: once
/// init closes its own copies (systemd does so early), reads from the master would fail with
/// EIO and the relay would stop for good. (Close-on-exec: the machine never sees this copy.)
struct Pty {
    master: OwnedFd,
    path: PathBuf,
    slave: OwnedFd,
}

impl Pty {
    fn open(plan: &Plan) -> Result<Option<Pty>, RunnerError> {
        if !plan.console.has_pty() {
            return Ok(None);
        }
        let (master, path) = crate::sys::pty::open_pty().map_err(failed("open a pty"))?;
        // The size must be right before the payload's first look at it, not after.
        let _ = crate::sys::pty::copy_winsize(&std::io::stdin(), &master);
        let slave = open_tty(&path, plan.id_map.map(|m| m.base))?;
        Ok(Some(Pty {
            master,
            path,
            slave,
        }))
    }
}

/// The tty group of Debian and Ubuntu images (and systemd's default), which owns terminals.
const TTY_GID: u32 = 5;

/// Opens the pty's slave for the machine; with a user namespace it belongs to the machine's
/// root and tty group, as a terminal's owner inside expects.
fn open_tty(path: &Path, base: Option<u32>) -> Result<OwnedFd, RunnerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = format!("open {}", path.display());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(failed(&what))?;
    if let Some(b) = base.filter(|b| *b != 0) {
        std::os::unix::fs::fchown(&f, Some(b), Some(b + TTY_GID)).map_err(failed(&what))?;
    }
    Ok(f.into())
}

/// The pipes that collect the machine's stdout and stderr with [`Console::Capture`]: the
/// read ends stay here, the write ends go to the machine (rmach must not keep them, or it
/// would never see the end of the output).
struct Capture {
    read: [Option<OwnedFd>; 2],
    write: [Option<OwnedFd>; 2],
}

impl Capture {
    fn open(console: Console) -> Result<Capture, RunnerError> {
        if console != Console::Capture {
            return Ok(Capture {
                read: [None, None],
                write: [None, None],
            });
        }
        let (out_r, out_w) = pipe("a pipe for the machine's stdout")?;
        let (err_r, err_w) = pipe("a pipe for the machine's stderr")?;
        Ok(Capture {
            read: [Some(out_r), Some(err_r)],
            write: [Some(out_w), Some(err_w)],
        })
    }
}

/// The signals rmach forwards (and SIGCHLD), blocked and read from a signalfd; the caller's
/// mask is restored when dropped, so a library caller gets its Ctrl-C back.
struct Signals {
    fd: OwnedFd,
    _mask: p::SavedMask,
}

impl Signals {
    fn block() -> Result<Signals, RunnerError> {
        let mut blocked = init::FORWARDED.to_vec();
        blocked.push(libc::SIGCHLD);
        let mask = p::block_signals(&blocked).map_err(failed("block signals"))?;
        let fd = p::signalfd(&blocked).map_err(failed("signalfd"))?;
        Ok(Signals { fd, _mask: mask })
    }
}

/// rmach's helper and rmach's ends of the channels with it and with the machine it clones.
/// Dropped before the helper was reaped (any failure), it kills the machine and the helper and
/// reaps the helper.
struct Helper {
    pid: i32,
    machine: Option<i32>,
    reaped: bool,
    /// With the helper. Down: Go when it is in the machine's cgroup, Go when rmach's
    /// host-side setup is done. Up: the machine's PID, Go once the kernel stage is mounted,
    /// then the machine's status; or a failure (end of file: the helper ended).
    channel: Channel,
    /// With the machine. Down: Go. Up: a failure, or end of file once the payload's exec went
    /// through (or the machine ended).
    machine_channel: Channel,
}

impl Helper {
    /// Forks the helper (with glibc's fork: a raw clone from a library caller with threads
    /// could leave the child with a locked allocator), which never returns.
    fn start(
        plan: &Plan,
        tree: Option<OwnedFd>,
        pty: &Option<Pty>,
        capture: &mut Capture,
    ) -> Result<Helper, RunnerError> {
        let (channel, helper_end) = Channel::pair().map_err(failed("the helper's channel"))?;
        let (machine_channel, machine_end) =
            Channel::pair().map_err(failed("the machine's channel"))?;
        let payload_status = p::shared_word().map_err(failed("shared memory"))?;
        let [stdout, stderr] = std::mem::take(&mut capture.write);
        let tty = pty.as_ref().map(|p| p.slave.try_clone());
        let fds = ChildFds {
            tree,
            stdout,
            stderr,
            tty: tty
                .transpose()
                .map_err(failed("duplicate the pty's slave"))?,
            pty: pty.as_ref().map(|p| p.path.clone()),
        };
        let ends = helper::Ends {
            rmach: helper_end,
            machine: machine_end,
        };
        // Each side keeps only its own ends (the other side's end of file depends on it): the
        // helper drops rmach's here, rmach drops the helper's and the machine's on return.
        match ns::fork_threadsafe().map_err(failed("fork the helper"))? {
            None => {
                drop((channel, machine_channel));
                helper::run(plan, fds, ends, payload_status)
            }
            Some(pid) => Ok(Helper {
                pid,
                machine: None,
                reaped: false,
                channel,
                machine_channel,
            }),
        }
    }

    /// The machine's PID, once the helper has cloned it.
    fn machine_pid(&mut self, plan: &Plan) -> Result<i32, RunnerError> {
        match self.channel.receive() {
            Some(Message::Pid(pid)) => {
                self.machine = Some(pid);
                Ok(pid)
            }
            message => Err(failure(plan, message)),
        }
    }

    /// The failure the helper reported, if it has ended (a failed step ends it).
    fn failure_if_ended(&mut self, plan: &Plan) -> Option<RunnerError> {
        self.reaped = matches!(p::wait_raw(self.pid, true), Ok(Some(_)));
        self.reaped.then(|| failure(plan, self.channel.receive()))
    }

    /// Lets the helper go on to its next step.
    fn send_go(&self) {
        self.channel.send(&Message::Go);
    }

    /// Lets the machine go once the helper has mounted its kernel stage, and waits until the
    /// payload's exec went through.
    fn start_machine(&mut self, plan: &Plan) -> Result<(), RunnerError> {
        match self.channel.receive() {
            Some(Message::Go) => self.machine_channel.send(&Message::Go),
            message => return Err(failure(plan, message)),
        }
        match self.machine_channel.receive() {
            None => Ok(()),
            message => Err(failure(plan, message)),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if let Some(machine) = self.machine {
            let _ = p::kill(machine, libc::SIGKILL);
        }
        let _ = p::kill(self.pid, libc::SIGKILL);
        let _ = p::wait_raw(self.pid, false);
    }
}

/// The error a message from the helper or the machine (or its absence) stands for, where a
/// step's word was awaited.
fn failure(plan: &Plan, message: Option<Message>) -> RunnerError {
    let unexpected = |what: String| SetupError::new(what, std::io::ErrorKind::InvalidData);
    RunnerError::Setup(match message {
        Some(Message::CommandNotFound(command)) => {
            return RunnerError::CommandNotFound {
                command,
                root: plan.root.clone(),
            }
        }
        Some(Message::Failed(e)) => e,
        Some(other) => unexpected(format!("unexpected message {other:?}")),
        None => SetupError::new(
            "the helper ended without a word",
            std::io::ErrorKind::UnexpectedEof,
        ),
    })
}

/// Between the clone and the machine's start, what only host root can do: the user
/// namespace's maps and the cgroup's delegation, the machine's veth.
fn host_setup(plan: &Plan, cgroup: &Cgroup, pid: i32) -> Result<(), RunnerError> {
    if let Some(map) = plan.id_map {
        userns::write_maps(pid, map)?;
        cgroup.delegate(map.base, map.base)?;
    }
    let Some(host) = plan.veth.clone() else {
        return Ok(());
    };
    // A killed run's pair goes with its network namespace once the stale-cgroup clean-up
    // has ended its machine; give the kernel a moment to free it.
    let link = Path::new("/sys/class/net").join(&host);
    for _ in 0..200 {
        if !link.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    net::create_veth(&host, "host0", pid)
        .and_then(|_| net::link_up(&host))
        .map_err(|source| RunnerError::Network { name: host, source })
}

/// Relays the console and signals until the helper ends; its raw status and what was
/// captured.
fn relay(
    plan: &Plan,
    helper: &mut Helper,
    signals: &Signals,
    pty: Option<Pty>,
    capture: Capture,
) -> (i32, Vec<u8>, Vec<u8>) {
    let _raw_mode = RawMode::enter_for(plan.console);
    let mut relay = Relay {
        console: plan.console,
        pty: pty.map(|p| p.master),
        captured: capture.read.into_iter().map(|r| (r, Vec::new())).collect(),
    };
    let pid = helper.machine.unwrap_or(helper.pid);
    let boot = plan.boot;
    let raw = console::relay(pid, helper.pid, &signals.fd, &mut relay, |sig| match sig {
        // A booted machine's systemd halts on SIGRTMIN+3.
        libc::SIGTERM | libc::SIGINT if boot => Some(p::sigrtmin() + 3),
        s => Some(s),
    });
    // The relay returns once it has reaped the helper.
    helper.reaped = true;
    let mut captured = relay.captured.into_iter().map(|c| c.1);
    let stdout = captured.next().unwrap_or_default();
    (raw, stdout, captured.next().unwrap_or_default())
}
