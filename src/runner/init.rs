//! The small init that is PID 1 for `run` (like `systemd-nspawn --as-pid2`): it starts the
//! payload as PID 2, forwards signals to it, reaps orphans, and leaves the payload's raw wait
//! status in a shared word for the helper before exiting (which ends every other process in
//! the namespace). It holds no descriptor but 0-2 once the payload runs.

use std::sync::atomic::{AtomicU64, Ordering};

use super::channel::{Channel, SetupError};
use crate::sys::process as p;

/// Signals rmach forwards and this init passes on (all blocked since before the fork).
pub(crate) const FORWARDED: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCONT,
    libc::SIGWINCH,
];

/// Set in the shared word above the status bits once the payload's status is there.
pub(crate) const REPORTED: u64 = 1 << 32;

/// Runs the init loop after forking off `exec_payload`; never returns.
pub(crate) fn run(
    status: &'static AtomicU64,
    rmach: Channel,
    exec_payload: impl FnOnce() -> std::convert::Infallible,
) -> ! {
    // The payload waits for the end of this pipe before it execs, so that init has closed
    // its end of the machine's channel by then: nothing but 0-2 is ever seen in PID 1.
    let (hold_r, hold_w) = match p::pipe() {
        Ok(ends) => ends,
        Err(e) => {
            rmach.send(&SetupError::new("a pipe for the payload", e).into());
            p::exit_now(1)
        }
    };
    // SAFETY: init is single-threaded (cloned by the single-threaded helper).
    let payload = match unsafe { crate::sys::ns::fork() } {
        Ok(None) => {
            drop(hold_w);
            let _ = rustix::io::read(&hold_r, &mut [0u8; 1]);
            match exec_payload() {}
        }
        Ok(Some(pid)) => {
            // The closure owns the payload's copy of the channel's end: close it here.
            drop((exec_payload, hold_r));
            pid
        }
        Err(e) => {
            rmach.send(&SetupError::new("fork the payload", e).into());
            p::exit_now(1)
        }
    };
    // rmach waits for the channel's end of file as a sign that the payload's exec went
    // through.
    drop((rmach, hold_w));
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
        while let Ok(Some((pid, raw))) = p::wait_raw(-1, true) {
            if pid == payload {
                status_word_store(status, raw);
                p::exit_now(0);
            }
        }
    }
}

fn status_word_store(word: &AtomicU64, raw: i32) {
    word.store(REPORTED | raw as u32 as u64, Ordering::SeqCst);
}
