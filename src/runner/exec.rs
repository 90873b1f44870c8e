//! The one place a plan is carried out: the host side (cgroup, console, network, id maps,
//! waiting, clean-up) and the child that becomes the machine.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::cgroup::Cgroup;
use super::console::{self, RawMode, Relay};
use super::mounts::{self, ctx, ChildResult};
use super::plan::{Plan, Stage};
use super::spec::{Console, Network};
use super::{init, passwd, userns, RunnerError};
use crate::sys::{net, ns, process as p};

/// What one run of the machine ended with.
pub struct Ended {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The machine asked to reboot (init killed by SIGHUP through `reboot(2)`).
    pub reboot: bool,
}

/// Pipe ends the child keeps.
struct ChildFds {
    /// The idmapped root to attach, with a user namespace.
    tree: Option<OwnedFd>,
    sync: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<PathBuf>,
    /// The pty's slave, opened by rmach (a user namespace's root may not open the host's node).
    tty: Option<OwnedFd>,
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
    // The namespaces are cloned by a helper forked with glibc's fork: a raw clone from a
    // library caller with threads could leave the child with a locked allocator. The helper is
    // single-threaded; it reports the machine's PID, waits for it and reports its status.
    let (pid_r, pid_w) = pipe()?;
    let (hstat_r, hstat_w) = pipe()?;
    let helper = match ns::fork_threadsafe() {
        Ok(None) => {
            drop((pid_r, hstat_r));
            let _ = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ));
            let prepared =
                isolate_from_caller(plan, &fds, [&error_w, &pid_w, &hstat_w, &sync_w, &ready_r])
                    .and_then(|_| {
                        let scratch = scratch.0.as_deref().unwrap_or(Path::new("/"));
                        mounts::prepare_root(plan, scratch, fds.tree.as_ref())?;
                        mounts::apply(plan, Stage::Host, fds.pty.as_deref())?;
                        mounts::pivot()
                    });
            if let Err(message) = prepared {
                let _ = std::fs::File::from(error_w).write_all(message.as_bytes());
                p::exit_now(1)
            }
            match ns::clone_fork(flags) {
                Ok(None) => {
                    drop((sync_w, ready_r));
                    child(plan, fds, error_w, payload_status, idmap.is_some())
                }
                Ok(Some(pid)) => {
                    // Only the machine may hold these ends, or rmach would never see EOF.
                    drop(fds);
                    let _ = std::fs::File::from(pid_w).write_all(&pid.to_ne_bytes());
                    // rmach has written the id maps, moved the machine into its cgroup and
                    // made its veth: mount what must be locked, then let the machine go.
                    let mut go = [0u8; 1];
                    let outer = match rustix::io::read(&ready_r, &mut go) {
                        Ok(1) => kernel_mounts(plan, pid, &error_w),
                        _ => false,
                    };
                    if !outer {
                        let _ = p::kill(pid, libc::SIGKILL);
                        p::exit_now(1)
                    }
                    let _ = rustix::io::write(&sync_w, b"1");
                    drop((sync_w, error_w));
                    let mut raw = p::wait_raw(pid, false).ok().flatten().map_or(0, |r| r.1);
                    // With `run`, the payload's status as init left it, if it did.
                    let word = payload_status.load(std::sync::atomic::Ordering::SeqCst);
                    if !plan.boot && word & init::REPORTED != 0 {
                        raw = word as u32 as i32;
                    }
                    let _ = std::fs::File::from(hstat_w).write_all(&raw.to_ne_bytes());
                    p::exit_now(0)
                }
                Err(e) => {
                    let msg = format!("clone the machine's namespaces: {e}");
                    let _ = std::fs::File::from(error_w).write_all(msg.as_bytes());
                    p::exit_now(1)
                }
            }
        }
        Ok(Some(h)) => {
            drop((fds, error_w, pid_w, hstat_w, sync_w, ready_r));
            h
        }
        Err(e) => {
            return Err(RunnerError::Setup {
                message: format!("fork: {e}"),
            })
        }
    };
    let mut pid_bytes = [0u8; 4];
    if std::fs::File::from(pid_r)
        .read_exact(&mut pid_bytes)
        .is_err()
    {
        let mut message = String::new();
        let _ = error_r.read_to_string(&mut message);
        let _ = p::wait_raw(helper, false);
        return Err(RunnerError::Setup { message });
    }
    let pid = i32::from_ne_bytes(pid_bytes);
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
    let mut message = String::new();
    let _ = error_r.read_to_string(&mut message);
    if !message.is_empty() {
        let _ = p::kill(pid, libc::SIGKILL);
        let _ = p::wait_raw(helper, false);
        return Err(if let Some(cmd) = message.strip_prefix("notfound:") {
            RunnerError::CommandNotFound {
                command: cmd.into(),
                root: plan.root.clone(),
            }
        } else {
            RunnerError::Setup { message }
        });
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
    let mut b = [0u8; 4];
    let raw = match std::fs::File::from(hstat_r).read_exact(&mut b) {
        Ok(()) => i32::from_ne_bytes(b),
        Err(_) => raw,
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

/// In the helper, before the machine is cloned: closes every descriptor but 0-2 and the
/// run's own, and replaces the arguments and environment the helper inherited from the caller
/// with the machine's, so PID 1 (which never execs for `run`) holds nothing of the caller.
fn isolate_from_caller(plan: &Plan, fds: &ChildFds, pipes: [&OwnedFd; 5]) -> ChildResult<()> {
    use std::os::fd::AsRawFd;
    let mut keep: Vec<i32> = pipes.iter().map(|f| f.as_raw_fd()).collect();
    keep.push(fds.sync.as_raw_fd());
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
/// False after a failure, which has been written to the error pipe.
fn kernel_mounts(plan: &Plan, machine: i32, error: &OwnedFd) -> bool {
    let report = |message: String| {
        let _ = rustix::io::write(error, message.as_bytes());
    };
    let pidfd = match rustix::process::Pid::from_raw(machine)
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()))
    {
        Ok(fd) => fd,
        Err(e) => {
            report(format!("open the machine's pidfd: {e}"));
            return false;
        }
    };
    if let Err(e) = ns::setns(&pidfd, ns::CLONE_NEWPID) {
        report(format!("join the machine's PID namespace: {e}"));
        return false;
    }
    let mounted = match ns::fork() {
        Ok(None) => {
            let mounted = if plan.network != Network::Host {
                ctx(
                    ns::setns(&pidfd, ns::CLONE_NEWNET),
                    "join the machine's network",
                )
            } else {
                Ok(())
            }
            .and_then(|_| mounts::apply(plan, Stage::Kernel, None));
            // This process took PID 2 in the machine's namespace: hand it back, so the payload
            // of `run` is PID 2 as with nspawn --as-pid2 (the write counts for the writer's
            // PID namespace; the host's /proc still hangs beside the old root).
            let last_pid = Path::new("/")
                .join(mounts::OLD_ROOT)
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
            report(format!("fork: {e}"));
            false
        }
    };
    mounted && mounts::detach_old_root().map_err(report).is_ok()
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

/// The machine side; never returns. Failures go to the error pipe as one line.
fn child(
    plan: &Plan,
    fds: ChildFds,
    error: OwnedFd,
    status: &'static std::sync::atomic::AtomicU64,
    user_ns: bool,
) -> ! {
    let (c_exe, c_argv, c_env) = match setup(plan, &fds, user_ns) {
        Ok(v) => v,
        Err(message) => {
            let _ = std::fs::File::from(error).write_all(message.as_bytes());
            p::exit_now(1)
        }
    };
    // Everything the setup needed is done with: from here the machine holds 0-2 and, until
    // the payload's exec, the error pipe.
    std::mem::forget(fds);
    if p::close_all_except(&[std::os::fd::AsRawFd::as_raw_fd(&error)]).is_err() {
        p::exit_now(1)
    }
    let exec = move |error: OwnedFd| -> std::convert::Infallible {
        let _ = p::reset_signals();
        let _ = p::cloexec_from(3);
        let e = p::execve(&c_exe, &c_argv, &c_env);
        let _ = std::fs::File::from(error)
            .write_all(format!("execute {}: {e}", c_exe.to_string_lossy()).as_bytes());
        p::exit_now(127)
    };
    if plan.boot {
        match exec(error) {}
    }
    let Ok(payload_error) = error.try_clone() else {
        p::exit_now(1)
    };
    init::run(status, error, move || exec(payload_error))
}

type Exec = (CString, Vec<CString>, Vec<CString>);

fn setup(plan: &Plan, fds: &ChildFds, user_ns: bool) -> ChildResult<Exec> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let mut go = [0u8; 1];
    if rustix::io::read(&fds.sync, &mut go) != Ok(1) {
        p::exit_now(1);
    }
    if user_ns {
        ctx(
            p::set_identity(0, 0, &[]),
            "become root in the user namespace",
        )?;
        // A change of ids clears the parent-death signal: set it again, or a killed rmach
        // would leave this machine running.
        ctx(
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
            "parent-death signal",
        )?;
    }
    // A copy of the helper's mount namespace, made from inside the user namespace: the kernel
    // locks the flags of every mount in it. And now that rmach has moved us into the machine's
    // cgroup, that becomes our cgroup root.
    ctx(
        ns::unshare(ns::CLONE_NEWNS | ns::CLONE_NEWCGROUP),
        "new mount and cgroup namespaces",
    )?;
    ctx(
        rustix::system::sethostname(plan.hostname.as_bytes()),
        "set the hostname",
    )?;
    if plan.network != Network::Host {
        ctx(net::link_up("lo"), "bring up lo")?;
    }
    let tty = fds.tty.as_ref();
    ctx(std::env::set_current_dir("/"), "chdir /")?;
    mounts::apply(plan, Stage::Inner, None)?;
    ctx(rustix::process::setsid(), "setsid")?;
    match plan.console {
        // Which fds become the machine's 0-2 per mode: docs/console.md.
        c if c.has_pty() => {
            let tty = tty.ok_or("no pty")?;
            ctx(p::set_controlling_tty(tty), "controlling terminal")?;
            for n in 0..3 {
                ctx(p::dup2(tty, n), "console")?;
            }
        }
        Console::Capture => {
            let null: OwnedFd = ctx(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null"),
                "/dev/null",
            )?
            .into();
            ctx(p::dup2(&null, 0), "stdin")?;
            ctx(p::dup2(fds.stdout.as_ref().unwrap_or(&null), 1), "stdout")?;
            ctx(p::dup2(fds.stderr.as_ref().unwrap_or(&null), 2), "stderr")?;
        }
        _ => {}
    }
    let user = passwd::resolve(plan.user.as_deref())?;
    let argv = command_line(plan, &user);
    let env = environment(plan, &user);
    let exe = find_executable(&argv[0], &env)?;
    let workdir = plan
        .chdir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&user.home));
    // The filters first: installing one without no_new_privs needs CAP_SYS_ADMIN, which the
    // bounding set may drop.
    for filter in &plan.seccomp.filters {
        ctx(
            crate::sys::seccomp::install(filter),
            "install the seccomp filter",
        )?;
    }
    ctx(
        p::limit_capabilities(plan.bounding_caps),
        "limit capabilities",
    )?;
    if plan.no_new_privs {
        ctx(p::set_no_new_privs(), "no_new_privs")?;
    }
    if user.uid != 0 || user.gid != 0 {
        ctx(
            p::set_identity(user.uid, user.gid, &user.groups),
            format!("become {}", user.name),
        )?;
        ctx(
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)),
            "parent-death signal",
        )?;
    }
    if std::env::set_current_dir(&workdir).is_err() {
        if plan.chdir.is_some() {
            return Err(format!(
                "change to {}: no such directory in the machine",
                workdir.display()
            ));
        }
        let _ = std::env::set_current_dir("/");
    }
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| "a NUL byte in the command line or environment".to_string())
    };
    let c_exe = cstr(exe.as_os_str().as_bytes())?;
    let c_argv = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<ChildResult<Vec<_>>>()?;
    let c_env = env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<ChildResult<Vec<_>>>()?;
    Ok((c_exe, c_argv, c_env))
}

/// The payload's argv: the command, init with its arguments, or a login shell.
fn command_line(plan: &Plan, user: &passwd::User) -> Vec<String> {
    if plan.boot {
        let init = [
            "/usr/lib/systemd/systemd",
            "/lib/systemd/systemd",
            "/sbin/init",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/sbin/init");
        let mut v = vec![init.to_string()];
        v.extend(plan.command.iter().cloned());
        return v;
    }
    if plan.command.is_empty() {
        return vec![user.shell.clone(), "-l".into()];
    }
    plan.command.clone()
}

fn environment(plan: &Plan, user: &passwd::User) -> Vec<(String, String)> {
    let mut env = plan.env.clone();
    for (k, v) in [
        ("HOME", &user.home),
        ("USER", &user.name),
        ("LOGNAME", &user.name),
        ("SHELL", &user.shell),
    ] {
        if !env.iter().any(|e| e.0 == k) {
            env.push((k.into(), v.clone()));
        }
    }
    env
}

/// Looks the command up in the machine's PATH (we are inside the new root already).
fn find_executable(cmd: &str, env: &[(String, String)]) -> ChildResult<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.contains('/') {
        return if is_exe(Path::new(cmd)) {
            Ok(cmd.into())
        } else {
            Err(format!("notfound:{cmd}"))
        };
    }
    let path = env
        .iter()
        .find(|e| e.0 == "PATH")
        .map_or("/usr/bin:/bin", |e| e.1.as_str());
    path.split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| is_exe(p))
        .ok_or_else(|| format!("notfound:{cmd}"))
}
