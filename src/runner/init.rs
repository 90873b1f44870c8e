//! The small init that is PID 1 for `run` (like `systemd-nspawn --as-pid2`): it starts the
//! payload as PID 2, forwards signals to it, reaps orphans, and reports the payload's raw wait
//! status to rmach before exiting (which ends every other process in the namespace).

use std::io::Write;
use std::os::fd::OwnedFd;

use crate::sys::process as p;

/// Signals rmach forwards and this init passes on (all blocked since before the fork).
pub const FORWARDED: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
    libc::SIGWINCH,
];

/// Runs the init loop after forking off `exec_payload`; never returns.
pub fn run(
    status_pipe: OwnedFd,
    error_pipe: OwnedFd,
    exec_payload: impl FnOnce() -> std::convert::Infallible,
) -> ! {
    let payload = match crate::sys::ns::fork() {
        Ok(None) => match exec_payload() {},
        Ok(Some(pid)) => {
            // The closure owns the payload's copy of the error pipe: close it here.
            drop(exec_payload);
            pid
        }
        Err(e) => {
            let _ = std::fs::File::from(error_pipe)
                .write_all(format!("fork the payload: {e}").as_bytes());
            p::exit_now(1)
        }
    };
    // rmach waits for this pipe to close as a sign that the payload's exec went through.
    drop(error_pipe);
    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGCHLD);
    loop {
        let sig = match p::wait_signal(&set) {
            Ok(s) => s,
            Err(_) => p::exit_now(1),
        };
        if sig != libc::SIGCHLD {
            let _ = p::kill(payload, sig);
            continue;
        }
        while let Ok(Some((pid, status))) = p::wait_raw(-1, true) {
            if pid == payload {
                let _ = std::fs::File::from(status_pipe).write_all(&status.to_ne_bytes());
                p::exit_now(0);
            }
        }
    }
}
