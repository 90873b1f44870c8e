//! The machine's side: the process rmach's helper clones into the new namespaces. It waits
//! for rmach's word (given once the helper has mounted the host and kernel stages), takes its
//! own mount and cgroup namespaces, mounts the inner stage, sets up its console, seccomp,
//! capabilities and user, and execs the payload (under the small init for `run`). Failures go
//! to rmach over the machine's channel as typed messages; its end of file (every copy of the
//! machine's end closed, the last by the payload's exec) tells rmach the exec went through.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::channel::{ctx, Channel, Message, SetupError, Step};
use super::mounts;
use super::plan::{Plan, Stage};
use super::spec::Console;
use super::{init, passwd};
use crate::sys::ns::Namespaces;
use crate::sys::{net, ns, process as p};

/// Descriptors the machine's side is handed.
pub(super) struct ChildFds {
    /// The idmapped root the helper attaches, with a user namespace.
    pub(super) tree: Option<OwnedFd>,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    pub(super) pty: Option<PathBuf>,
    /// The pty's slave, opened by rmach (a user namespace's root may not open the host's node).
    pub(super) tty: Option<OwnedFd>,
}

/// The machine side; never returns. `rmach` is the machine's end of its channel with rmach.
pub(super) fn child(
    plan: &Plan,
    fds: ChildFds,
    rmach: Channel,
    status: &'static std::sync::atomic::AtomicU64,
) -> ! {
    let (c_exe, c_argv, c_env) = match setup(plan, &fds, &rmach) {
        Ok(v) => v,
        Err(message) => {
            rmach.send(&message);
            p::exit_now(1)
        }
    };
    // Everything the setup needed is done with: from here the machine holds 0-2 and, until
    // the payload's exec, its channel's end.
    std::mem::forget(fds);
    if p::close_all_except(&[rmach.as_fd().as_raw_fd()]).is_err() {
        p::exit_now(1)
    }
    let exec = move |rmach: Channel| -> std::convert::Infallible {
        let _ = p::reset_signals();
        let _ = p::cloexec_from(3);
        let e = p::execve(&c_exe, &c_argv, &c_env);
        let e = SetupError::new(format!("execute {}", c_exe.to_string_lossy()), e);
        rmach.send(&e.into());
        p::exit_now(127)
    };
    if plan.boot {
        match exec(rmach) {}
    }
    let Ok(payload_end) = rmach.try_clone() else {
        p::exit_now(1)
    };
    init::run(status, rmach, move || exec(payload_end))
}

type Exec = (CString, Vec<CString>, Vec<CString>);

fn setup(plan: &Plan, fds: &ChildFds, rmach: &Channel) -> Result<Exec, Message> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if !rmach.wait_go() {
        p::exit_now(1);
    }
    let user_ns = plan.namespaces.contains(Namespaces::NEWUSER);
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
    // With a user namespace: a copy of the helper's mount namespace, made from inside it, so
    // the kernel locks the flags of every mount in it (without one there is nothing to lock,
    // and the helper's namespace, already the machine's alone, is kept: a copy costs time).
    // And now that rmach has moved us into the machine's cgroup, that becomes our cgroup root.
    let mut own = Namespaces::NEWCGROUP;
    if user_ns {
        own |= Namespaces::NEWNS;
    }
    ctx(ns::unshare(own), "new mount and cgroup namespaces")?;
    ctx(
        rustix::system::sethostname(plan.hostname.as_bytes()),
        "set the hostname",
    )?;
    if plan.namespaces.contains(Namespaces::NEWNET) {
        ctx(net::link_up("lo"), "bring up lo")?;
    }
    let tty = fds.tty.as_ref();
    ctx(std::env::set_current_dir("/"), "chdir /")?;
    mounts::apply(plan, Stage::Inner, None)?;
    ctx(rustix::process::setsid(), "setsid")?;
    match plan.console {
        // Which fds become the machine's 0-2 per mode: docs/console.md.
        c if c.has_pty() => {
            let tty = tty.ok_or_else(|| {
                SetupError::new("the console's pty", std::io::ErrorKind::NotFound)
            })?;
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
    if let Err(e) = std::env::set_current_dir(&workdir) {
        if plan.chdir.is_some() {
            let what = format!("change to {} in the machine", workdir.display());
            return Err(SetupError::new(what, e).into());
        }
        let _ = std::env::set_current_dir("/");
    }
    let cstr = |s: &[u8]| {
        let nul = std::io::ErrorKind::InvalidInput;
        ctx(
            CString::new(s).map_err(|_| nul),
            "a NUL byte in the command line or environment",
        )
    };
    let c_exe = cstr(exe.as_os_str().as_bytes())?;
    let c_argv = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Step<Vec<_>>>()?;
    let c_env = env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
        .collect::<Step<Vec<_>>>()?;
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
fn find_executable(cmd: &str, env: &[(String, String)]) -> Result<PathBuf, Message> {
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
            Err(Message::CommandNotFound(cmd.into()))
        };
    }
    let path = env
        .iter()
        .find(|e| e.0 == "PATH")
        .map_or("/usr/bin:/bin", |e| e.1.as_str());
    path.split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| is_exe(p))
        .ok_or_else(|| Message::CommandNotFound(cmd.into()))
}
