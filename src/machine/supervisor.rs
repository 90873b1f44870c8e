//! The supervisor: one rmach process per started machine, in a session of its own, that boots
//! the image through the runner (console relayed into `STATE/machines/NAME.console`), keeps the
//! machine's record up to date (leader, readiness) and removes it when the machine ends.
//! Readiness is systemd's own: the supervisor binds a datagram socket into the machine as
//! `/run/host/notify` and sets `NOTIFY_SOCKET` for init, as systemd-nspawn does; systemd sends
//! `READY=1` there when its boot finishes. Other inits are ready once exec'd. When rmach itself
//! runs under systemd (`rmach@.service`, Type=notify), the supervisor passes READY=1 on.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{self, Record};
use super::{IoAt, MachineError, Result, Settings};
use crate::runner::{self, Bind, RunSpec};

/// Where init finds the notify socket inside the machine.
const NOTIFY_INSIDE: &str = "/run/host/notify";

/// Signals the watcher thread must never take: those the runner forwards to the machine (it
/// waits for them and SIGCHLD on a signalfd in the main thread), and SIGPIPE; an unblocked
/// thread would get the default action (death) instead.
fn shielded() -> Vec<i32> {
    let mut set = crate::runner::init::FORWARDED.to_vec();
    set.extend([libc::SIGCHLD, libc::SIGPIPE]);
    set
}

/// Whether the runner will exec systemd as the image's init.
pub(crate) fn has_systemd(root: &Path) -> bool {
    ["usr/lib/systemd/systemd", "lib/systemd/systemd"]
        .iter()
        .any(|p| root.join(p).exists())
}

/// Boots `spec` in this process as the supervised machine `spec.name` and returns when it ends.
/// The record exists from before the boot until after the machine's cgroup is gone.
pub(crate) fn supervise(mut spec: RunSpec, state: &Path, settings: Settings) -> Result<ExitStatus> {
    let name = spec.name.clone();
    let dir = record::dir(state);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let sock_path = record::notify_socket(state, &name);
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).at(&sock_path)?;
    // init may be an unprivileged user of the host (user namespace): it must be able to send.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).at(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .at(&sock_path)?;
    spec.boot = true;
    spec.binds.push(Bind {
        source: sock_path.clone(),
        target: NOTIFY_INSIDE.into(),
        read_only: false,
    });
    spec.env
        .push(("NOTIFY_SOCKET".into(), NOTIFY_INSIDE.into()));
    // Under rmach@.service: the machine's cgroup goes below the unit's, so that systemd's
    // KillMode reaches it, as systemd-nspawn@.service's payload does.
    spec.cgroup_parent = super::cgroup::enter_delegated()?;
    let me = std::process::id();
    let rec = Record {
        name: name.clone(),
        root: spec.root.clone(),
        supervisor: me,
        supervisor_start: record::start_time(me).unwrap_or(0),
        boot_id: record::boot_id(),
        leader: None,
        leader_start: None,
        since: record::now(),
        systemd: has_systemd(&spec.root),
        ready: false,
        cgroup: format!("{name}-{me}"),
        cgroup_parent: spec.cgroup_parent.clone(),
        veth: (spec.network == runner::Network::Veth).then(|| veth_name(&name)),
        settings,
    };
    rec.save(state)?;
    let host_notify = std::env::var_os("NOTIFY_SOCKET");
    std::env::remove_var("NOTIFY_SOCKET");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, state, host) = (stop.clone(), state.to_path_buf(), host_notify.clone());
        std::thread::spawn(move || watch(rec, sock, &state, host, &stop))
    };
    let result = runner::run(&spec);
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    if let Some(host) = &host_notify {
        let _ = send_notify(host, "STOPPING=1");
    }
    record::remove(state, &name);
    Ok(result?)
}

/// The systemd notification protocol's one datagram.
fn send_notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let s = UnixDatagram::unbound()?;
    let bytes = socket.as_bytes();
    if let Some(abs) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abs)?;
        s.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        s.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

/// Follows the machine while it runs: a new leader (boot, reboot), READY=1 from its init.
fn watch(
    mut rec: Record,
    sock: UnixDatagram,
    state: &Path,
    host_notify: Option<std::ffi::OsString>,
    stop: &AtomicBool,
) {
    let _mask = crate::sys::process::block_signals(&shielded());
    let my_comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let mut told_host = false;
    let mut ready_sent = false;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut changed = false;
        if let Some(leader) = record::find_leader(rec.supervisor) {
            let comm = std::fs::read_to_string(format!("/proc/{leader}/comm")).unwrap_or_default();
            // Before exec the leader is still a copy of rmach; it is the machine once exec'd.
            if comm != my_comm && rec.leader != Some(leader) {
                rec.leader = Some(leader);
                rec.leader_start = record::start_time(leader);
                rec.since = record::now();
                rec.ready = !rec.systemd;
                changed = true;
            }
        }
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            ready_sent |= text.lines().any(|l| l == "READY=1");
        }
        // Counted once the leader is known (a READY=1 read before that is kept for it).
        if ready_sent && rec.leader.is_some() && !rec.ready {
            ready_sent = false;
            rec.ready = true;
            changed = true;
        }
        if changed {
            let _ = rec.save(state);
        }
        if rec.ready && !told_host {
            told_host = true;
            if let Some(host) = &host_notify {
                let status = format!("READY=1\nSTATUS={} is running", rec.name);
                let _ = send_notify(host, &status);
            }
        }
    }
}

/// `ve-` and as much of the name as fits in an interface name (15 bytes), as the runner names it.
pub(crate) fn veth_name(name: &str) -> String {
    let mut n = format!("ve-{name}");
    n.truncate(15);
    n
}

/// Starts `exe ARGS` as a detached supervisor with its output going to the console log.
pub(crate) fn spawn(
    exe: &Path,
    args: &[std::ffi::OsString],
    state: &Path,
    name: &str,
) -> Result<Child> {
    let dir = record::dir(state);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let log_path = record::console_log(state, name);
    // Appended to, not truncated: a second `start` racing the first must not wipe the first
    // machine's log; the supervisor empties it once it holds the image's lock.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .at(&log_path)?;
    let err = log.try_clone().at(&log_path)?;
    std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| MachineError::Command {
            what: format!("start the supervisor {}", exe.display()),
            source: e,
        })
}

/// Waits until the supervisor reports the machine ready; on failure, the reason and the
/// console's last lines.
pub(crate) fn wait_ready(
    state: &Path,
    name: &str,
    child: &mut Child,
    timeout: Duration,
) -> Result<Record> {
    let deadline = Instant::now() + timeout;
    let failed = |reason: String| MachineError::StartFailed {
        name: name.into(),
        reason,
        tail: tail_text(&record::console_log(state, name)),
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!("its supervisor exited ({status})")));
        }
        if let Some(r) = record::load(state, name).filter(|r| r.ready && r.supervisor == child.id())
        {
            return Ok(r);
        }
        if Instant::now() > deadline {
            // Halt what came up, so a failed start leaves nothing running.
            let _ = crate::sys::process::kill(child.id() as i32, libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("not up within {} s", timeout.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The console log's last lines, cleaned of terminal escapes, as one suffix for a message.
fn tail_text(log: &Path) -> String {
    let lines = console_tail(log, 5);
    if lines.is_empty() {
        String::new()
    } else {
        format!("; console: {}", lines.join(" | "))
    }
}

/// The last `n` non-empty lines of a console log, without escape sequences.
pub(crate) fn console_tail(log: &Path, n: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(log) else {
        return Vec::new();
    };
    let text = strip_escapes(&String::from_utf8_lossy(&bytes));
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l = l.trim_end_matches('\r');
            l.rsplit('\r').next().unwrap_or("").trim().to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Empties the console log for a new run (the supervisor, once it holds the lock).
pub(crate) fn reset_log(state: &Path, name: &str) {
    if let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(record::console_log(state, name))
    {
        let _ = f.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            super::strip_escapes("\x1b[0;32m  OK  \x1b[0m] Started x"),
            "  OK  ] Started x"
        );
    }
}
