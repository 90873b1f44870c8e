//! `shell`: a session inside a running machine. rmach joins the machine's cgroups, then all of
//! its namespaces at once through a pidfd of its leader (`setns(pidfd, ...)`), becomes root of
//! its user namespace, and forks the session's process (the fork puts it in the machine's PID
//! namespace). That process takes the leader's confinement (capability bounding set and with
//! it the seccomp filter, `no_new_privs`), the user's identity,
//! groups, home and login environment, and execs the command, the user's login shell, or
//! `SHELL -c "$SSH_ORIGINAL_COMMAND"` (what sshd runs, so scp, sftp and rsync work through a
//! `ForceCommand`). A pty from the machine's own devpts is used when rmach is on a terminal,
//! plain pipes otherwise; rmach waits and returns the process's status.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::cgroup;
use super::record::{self, Record};
use super::user::{self, User};
use super::{MachineError, Result};
use crate::runner::channel::{Channel, Message, SetupError};
use crate::sys::{ns, pidfd, process as p};

/// What the session runs and how.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    /// User name or uid; None is root.
    pub(crate) user: Option<String>,
    /// The command; empty means the user's login shell.
    pub(crate) command: Vec<String>,
    /// A command line for the user's shell (`SSH_ORIGINAL_COMMAND`); wins over `command`.
    pub(crate) shell_command: Option<String>,
    /// Give the session a pty (rmach is on a terminal).
    pub(crate) pty: bool,
    /// Variables over the login environment (TERM, ...).
    pub(crate) env: Vec<(String, String)>,
    /// Where compiled seccomp programs are kept (the runner's cache; None compiles afresh).
    pub(crate) seccomp_cache: Option<PathBuf>,
}

const NAMESPACES: &[(&str, i32)] = &[
    ("user", ns::CLONE_NEWUSER),
    ("mnt", ns::CLONE_NEWNS),
    ("pid", ns::CLONE_NEWPID),
    ("net", ns::CLONE_NEWNET),
    ("uts", ns::CLONE_NEWUTS),
    ("ipc", ns::CLONE_NEWIPC),
    ("cgroup", ns::CLONE_NEWCGROUP),
];

/// What the session process runs: path, argv, environment.
struct Exec {
    exe: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    user: User,
    /// Compiled before joining, for the leader's bounding set, as the runner does.
    seccomp: crate::runner::seccomp::SeccompProgram,
}

fn enter_err(rec: &Record, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MachineError {
    let (name, what) = (rec.name.clone(), what.into());
    move |source| MachineError::Enter { name, what, source }
}

/// What of the machine's confinement a process entering it takes on from its leader, as a
/// child of the machine's init would inherit it (the seccomp filter follows from the bounding
/// set, as the runner compiles it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Confinement {
    /// The capability bounding set.
    pub(crate) bounding: u64,
    /// The machine runs with `--no-new-privileges`.
    pub(crate) no_new_privs: bool,
}

impl Confinement {
    /// The leader's, from /proc/PID/status.
    fn of(pid: u32) -> Option<Confinement> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Confinement::parse(&status)
    }

    fn parse(status: &str) -> Option<Confinement> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        Some(Confinement {
            bounding: u64::from_str_radix(field("CapBnd")?, 16).ok()?,
            no_new_privs: field("NoNewPrivs")? == "1",
        })
    }
}

/// Joins the machine (cgroups, namespaces, root of its user namespace) in this process.
/// Returns the leader's confinement, which the session process takes on.
pub(crate) fn join(rec: &Record) -> Result<Confinement> {
    let not_running = || MachineError::NotRunning {
        name: rec.name.clone(),
    };
    let leader = rec.live_leader().ok_or_else(not_running)?;
    let fd: OwnedFd = pidfd::open(leader).map_err(|_| not_running())?;
    if !rec.is_live() || record::find_leader(rec.supervisor) != Some(leader) {
        return Err(not_running());
    }
    let confinement = Confinement::of(leader).ok_or_else(not_running)?;
    rec.machine_cgroup().join(cgroup::v2_dir_of(leader))?;
    let mut flags = 0;
    for (ns, flag) in NAMESPACES {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).ok();
        let its = std::fs::read_link(format!("/proc/{leader}/ns/{ns}")).ok();
        if mine != its {
            flags |= flag;
        }
    }
    pidfd::enter_namespaces(&fd, flags).map_err(enter_err(rec, "join its namespaces"))?;
    if flags & ns::CLONE_NEWUSER != 0 {
        // Host root is nobody in the machine: become its root, as the runner's child does.
        p::set_identity(0, 0, &[]).map_err(enter_err(rec, "become root in its user namespace"))?;
    }
    std::env::set_current_dir("/").map_err(enter_err(rec, "change to its root"))?;
    Ok(confinement)
}

/// Runs the session; returns its status as a shell reports it (128+N for signal N).
pub(crate) fn run(rec: &Record, session: &Session) -> Result<u8> {
    // The filter is compiled, or found in the cache, while the host's file system is still
    // this process's: compiling costs more than all the rest of a session.
    let early = rec
        .live_leader()
        .and_then(Confinement::of)
        .map(|c| {
            crate::runner::seccomp::compile_cached(c.bounding, session.seccomp_cache.as_deref())
                .map(|program| (c.bounding, program))
        })
        .transpose()?;
    let confinement = join(rec)?;
    let seccomp = match early {
        Some((bounding, program)) if bounding == confinement.bounding => program,
        _ => crate::runner::seccomp::compile(confinement.bounding)?,
    };
    run_joined(rec, session, confinement, seccomp)
}

/// `login`: a getty inside on a new pty of the machine's devpts, attached to this terminal,
/// as machinectl login does it: `container-getty@N.service` for `/dev/pts/N`. Returns when
/// Ctrl-] is pressed three times within a second (or input ends).
pub(crate) fn login(rec: &Record) -> Result<()> {
    if !rec.systemd {
        return Err(MachineError::Enter {
            name: rec.name.clone(),
            what: "login needs systemd in the machine (it starts container-getty@N.service); use `rmach shell`".into(),
            source: std::io::ErrorKind::Unsupported.into(),
        });
    }
    let confinement = join(rec)?;
    let (master, path) = crate::sys::pty::open_pty().map_err(enter_err(rec, "open a pty in it"))?;
    // Held until the getty has it: reads from a master nobody else holds fail with EIO.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(enter_err(rec, "open its pty"))?;
    let index = path
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let unit = format!("container-getty@{index}.service");
    let start = Session {
        command: vec!["systemctl".into(), "start".into(), unit.clone()],
        ..Default::default()
    };
    let seccomp = crate::runner::seccomp::compile(confinement.bounding)?;
    if run_joined(rec, &start, confinement, seccomp)? != 0 {
        return Err(MachineError::Enter {
            name: rec.name.clone(),
            what: format!("systemctl start {unit} failed"),
            source: std::io::ErrorKind::Other.into(),
        });
    }
    super::relay::attach(master, slave);
    Ok(())
}

fn run_joined(
    rec: &Record,
    session: &Session,
    confinement: Confinement,
    seccomp: crate::runner::seccomp::SeccompProgram,
) -> Result<u8> {
    let want = session.user.as_deref().unwrap_or("root");
    let user = user::resolve(want).ok_or_else(|| MachineError::NoUser {
        name: rec.name.clone(),
        user: want.into(),
    })?;
    let exec = prepare(rec, session, user, seccomp)?;
    let pty = match session.pty {
        true => Some(crate::sys::pty::open_pty().map_err(enter_err(rec, "open a pty in it"))?),
        false => None,
    };
    let forwarded = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGCONT,
        libc::SIGWINCH,
        libc::SIGCHLD,
    ];
    let _mask = p::block_signals(&forwarded).map_err(enter_err(rec, "block signals"))?;
    let sigfd = p::signalfd(&forwarded).map_err(enter_err(rec, "signalfd"))?;
    // The session process reports a failure before exec over this channel; exec closes its
    // end (close-on-exec).
    let (channel, session_end) = Channel::pair().map_err(enter_err(rec, "create a channel"))?;
    let child = match ns::fork_threadsafe().map_err(enter_err(rec, "fork"))? {
        None => {
            drop(channel);
            session_process(
                &exec,
                confinement,
                pty.as_ref().map(|p| p.1.as_path()),
                session_end,
            )
        }
        Some(pid) => pid,
    };
    drop(session_end);
    let raw = super::relay::wait(child, &sigfd, pty.map(|p| p.0));
    if let Some(Message::Failed(e)) = channel.receive() {
        return Err(MachineError::Enter {
            name: rec.name.clone(),
            what: e.what,
            source: e.source,
        });
    }
    Ok(crate::runner::exit_code(
        std::os::unix::process::ExitStatusExt::from_raw(raw),
    ))
}

/// Argv and environment for the session, resolved inside the machine.
fn prepare(
    rec: &Record,
    s: &Session,
    user: User,
    seccomp: crate::runner::seccomp::SeccompProgram,
) -> Result<Exec> {
    let path = if user.uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin:/usr/games"
    };
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path.into()),
        ("HOME".into(), user.home.clone()),
        ("USER".into(), user.name.clone()),
        ("LOGNAME".into(), user.name.clone()),
        ("SHELL".into(), user.shell.clone()),
        ("container".into(), "rmach".into()),
    ];
    for (k, v) in &s.env {
        env.retain(|e| &e.0 != k);
        env.push((k.clone(), v.clone()));
    }
    let shell = Path::new(&user.shell);
    let shell_name = shell
        .file_name()
        .map_or("sh".into(), |n| n.to_string_lossy().into_owned());
    let (exe, argv): (PathBuf, Vec<String>) = if let Some(cmd) = &s.shell_command {
        (shell.into(), vec![shell_name, "-c".into(), cmd.clone()])
    } else if s.command.is_empty() {
        // argv[0] starting with '-' makes any shell a login shell.
        (shell.into(), vec![format!("-{shell_name}")])
    } else {
        let exe = find_executable(&s.command[0], path).ok_or_else(|| MachineError::Enter {
            name: rec.name.clone(),
            what: format!("{}: no such command in the machine", s.command[0]),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        (exe, s.command.clone())
    };
    let c = |s: &[u8]| {
        CString::new(s).map_err(|_| MachineError::Enter {
            name: rec.name.clone(),
            what: "a NUL byte in the command line or environment".into(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })
    };
    use std::os::unix::ffi::OsStrExt;
    Ok(Exec {
        exe: c(exe.as_os_str().as_bytes())?,
        argv: argv
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_>>()?,
        env: env
            .iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<Result<_>>()?,
        user,
        seccomp,
    })
}

fn find_executable(cmd: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.contains('/') {
        return ok(Path::new(cmd)).then(|| cmd.into());
    }
    path.split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| ok(p))
}

/// The forked session process (in the machine's PID namespace); never returns.
fn session_process(exec: &Exec, confined: Confinement, tty: Option<&Path>, rmach: Channel) -> ! {
    let fail = |what: &str, e: std::io::Error| -> ! {
        rmach.send(&SetupError::new(what, e).into());
        p::exit_now(1)
    };
    if let Err(e) = rustix::process::setsid() {
        fail("setsid", e.into());
    }
    if let Some(path) = tty {
        let t = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(t) => t,
            Err(e) => fail("open the pty", e),
        };
        // The terminal belongs to the user and the tty group, as login makes it.
        let _ = std::os::unix::fs::fchown(&t, Some(exec.user.uid), Some(5));
        if let Err(e) = p::set_controlling_tty(&t) {
            fail("controlling terminal", e);
        }
        for n in 0..3 {
            if let Err(e) = p::dup2(&t, n) {
                fail("console", e);
            }
        }
    }
    if let Err(e) = p::limit_capabilities(confined.bounding) {
        fail("limit capabilities", e);
    }
    // As every process of a machine started with --no-new-privileges has it from its init.
    if confined.no_new_privs {
        if let Err(e) = p::set_no_new_privs() {
            fail("no_new_privs", e);
        }
    }
    // The same system call filters the machine's own processes run under.
    for filter in &exec.seccomp.filters {
        if let Err(e) = crate::sys::seccomp::install(filter) {
            fail("install the seccomp filter", e);
        }
    }
    let u = &exec.user;
    if let Err(e) = p::set_identity(u.uid, u.gid, &u.groups) {
        fail(&format!("become {}", u.name), e);
    }
    if std::env::set_current_dir(&u.home).is_err() {
        let _ = std::env::set_current_dir("/");
    }
    let _ = p::reset_signals();
    let _ = p::cloexec_from(3);
    let e = p::execve(&exec.exe, &exec.argv, &exec.env);
    fail(&format!("execute {}", exec.exe.to_string_lossy()), e)
}

#[cfg(test)]
mod tests {
    use super::Confinement;

    #[test]
    fn confinement_from_proc_status() {
        let status = "Name:\tsystemd\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        assert_eq!(
            Confinement::parse(status),
            Some(Confinement {
                bounding: 0x1ff_ffff_ffff,
                no_new_privs: true
            })
        );
        let status = status.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert!(!Confinement::parse(&status).unwrap().no_new_privs);
        assert_eq!(Confinement::parse("CapBnd:\t0\n"), None);
    }
}
