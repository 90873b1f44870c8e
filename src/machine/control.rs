//! Signals to a running machine: stop (systemd's SIGRTMIN+4 "poweroff", another init's own
//! halt signal, then SIGKILL after the timeout), kill, reboot. Signals go through a pidfd of the
//! leader, opened after its start time was checked against the record, so a reused PID is
//! never signalled.

use std::path::Path;
use std::time::{Duration, Instant};

use super::record::{self, Record};
use super::{MachineError, Result};
use crate::sys::pidfd;

/// The running machine `name`, or NotRunning.
pub(crate) fn running(state: &Path, name: &str) -> Result<Record> {
    record::load(state, name).ok_or_else(|| MachineError::NotRunning { name: name.into() })
}

/// Sends `sig` to the machine's leader.
pub(crate) fn signal_leader(rec: &Record, sig: i32) -> Result<()> {
    let not_running = || MachineError::NotRunning {
        name: rec.name.clone(),
    };
    let leader = rec
        .live_leader()
        .or_else(|| record::find_leader(rec.supervisor))
        .ok_or_else(not_running)?;
    let fd = pidfd::open(leader).map_err(|_| not_running())?;
    // The pidfd pins the process; the check after opening it makes sure it is the leader.
    if record::find_leader(rec.supervisor) != Some(leader) {
        return Err(not_running());
    }
    pidfd::send_signal(&fd, sig).map_err(|e| MachineError::Enter {
        name: rec.name.clone(),
        what: format!("send signal {sig} to its leader {leader}"),
        source: e,
    })
}

/// The signal that asks the machine's init to power off.
pub(crate) fn halt_signal(rec: &Record) -> i32 {
    if rec.systemd {
        return libc::SIGRTMIN() + 4;
    }
    let comm = rec
        .leader
        .and_then(|l| std::fs::read_to_string(format!("/proc/{l}/comm")).ok())
        .unwrap_or_default();
    match comm.trim() {
        // busybox init powers off on SIGUSR2; sysvinit and most others halt on SIGTERM.
        "init" if is_busybox(rec) => libc::SIGUSR2,
        _ => libc::SIGTERM,
    }
}

fn is_busybox(rec: &Record) -> bool {
    std::fs::read_link(rec.root.join("sbin/init"))
        .is_ok_and(|t| t.to_string_lossy().contains("busybox"))
}

/// Whether the supervisor of `rec` has exited (and with it the machine and its record).
pub(crate) fn gone(rec: &Record) -> bool {
    !rec.is_live()
}

fn wait_gone(rec: &Record, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if gone(rec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    gone(rec)
}

/// Powers the machine off cleanly; after `timeout` kills it. Returns when the supervisor has
/// removed the machine's cgroup and record. `Ok(true)`: it halted by itself.
pub(crate) fn stop(rec: &Record, timeout: Duration) -> Result<bool> {
    match signal_leader(rec, halt_signal(rec)) {
        Ok(()) => {}
        Err(MachineError::NotRunning { .. }) if gone(rec) => return Ok(true),
        Err(e) => return Err(e),
    }
    if wait_gone(rec, timeout) {
        return Ok(true);
    }
    let _ = signal_leader(rec, libc::SIGKILL);
    if wait_gone(rec, Duration::from_secs(10)) {
        return Ok(false);
    }
    Err(MachineError::StopTimeout {
        name: rec.name.clone(),
        seconds: timeout.as_secs() + 10,
    })
}

/// Parses a signal as `kill` takes it: `TERM`, `SIGTERM`, `15`, `RTMIN+3`.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(off) = name.strip_prefix("RTMIN+") {
        let n = libc::SIGRTMIN() + off.parse::<i32>().ok()?;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        "RTMIN" => libc::SIGRTMIN(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals() {
        use super::parse_signal;
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Some(9));
        assert_eq!(parse_signal("RTMIN+4"), Some(libc::SIGRTMIN() + 4));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("BOGUS"), None);
    }
}
