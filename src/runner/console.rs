//! The host side of the console while the machine runs: relaying a pty in raw mode (with
//! window size changes and the Ctrl-] Ctrl-] Ctrl-] escape that kills the machine), collecting
//! captured output, and turning signals into what the machine should receive.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};

use crate::sys::process as p;

/// Ctrl-]: pressed three times within a second, the machine is killed.
const ESCAPE: u8 = 0x1d;

/// What the relay loop watches besides the signal fd.
pub struct Relay {
    pub pty: Option<OwnedFd>,
    /// Capture pipes (None once closed) and what came through them.
    pub captured: Vec<(Option<OwnedFd>, Vec<u8>)>,
}

/// Puts the terminal on stdin into raw mode until dropped.
pub struct RawMode(Option<Termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = tcsetattr(&stdin, OptionalActions::Now, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, t);
        }
    }
}

fn read_some(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<usize> {
    match rustix::io::read(fd, buf) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Runs until the child `wait_pid` exits; returns its raw wait status. `on_signal` maps a
/// signal rmach received to the signal sent to `pid`, the machine (None: not forwarded).
pub fn relay(
    pid: i32,
    wait_pid: i32,
    sigfd: &OwnedFd,
    relay: &mut Relay,
    on_signal: impl Fn(i32) -> Option<i32>,
) -> i32 {
    let stdin = std::io::stdin();
    let mut stdin_open = relay.pty.is_some();
    let mut pty_open = relay.pty.is_some();
    let mut escapes: (u8, Instant) = (0, Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    if let Some(pty) = &relay.pty {
        let _ = crate::sys::pty::copy_winsize(&stdin, pty);
    }
    loop {
        let mut fds = vec![PollFd::new(sigfd, PollFlags::IN)];
        if let (true, Some(pty)) = (pty_open, &relay.pty) {
            fds.push(PollFd::new(pty, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        for fd in relay.captured.iter().filter_map(|c| c.0.as_ref()) {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        // A timeout, and the wait below on every round: a SIGCHLD that never reaches the
        // signalfd (seen under load) must not leave rmach waiting forever for a dead machine.
        let timeout = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        if poll(&mut fds, Some(&timeout)).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 1;
        if let (true, Some(pty)) = (pty_open, &relay.pty) {
            if ready[i] {
                match read_some(pty.as_fd(), &mut buf) {
                    Some(n) => {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                    }
                    None => pty_open = false,
                }
            }
            i += 1;
        }
        if stdin_open {
            if ready[i] {
                match stdin.lock().read(&mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        for &b in &buf[..n] {
                            if b == ESCAPE {
                                if escapes.1.elapsed() > Duration::from_secs(1) {
                                    escapes = (0, Instant::now());
                                }
                                escapes.0 += 1;
                                if escapes.0 >= 3 {
                                    let _ = p::kill(pid, libc::SIGKILL);
                                }
                            } else {
                                escapes.0 = 0;
                            }
                        }
                        if let Some(pty) = &relay.pty {
                            let _ = rustix::io::write(pty, &buf[..n]);
                        }
                    }
                }
            }
            i += 1;
        }
        for (slot, data) in relay.captured.iter_mut() {
            let Some(fd) = slot else { continue };
            if ready[i] {
                match read_some(fd.as_fd(), &mut buf) {
                    Some(n) => data.extend_from_slice(&buf[..n]),
                    None => *slot = None,
                }
            }
            i += 1;
        }
        if ready[0] {
            while let Ok(Some(sig)) = p::read_signal(sigfd) {
                if sig == libc::SIGCHLD {
                    continue;
                }
                if sig == libc::SIGWINCH {
                    if let Some(pty) = &relay.pty {
                        let _ = crate::sys::pty::copy_winsize(&stdin, pty);
                    }
                    continue;
                }
                if let Some(s) = on_signal(sig) {
                    let _ = p::kill(pid, s);
                }
            }
        }
        if let Ok(Some((_, status))) = p::wait_raw(wait_pid, true) {
            drain(relay, &mut buf);
            return status;
        }
    }
}

/// After the machine is gone: what is still buffered in the pty and the capture pipes.
fn drain(relay: &mut Relay, buf: &mut [u8]) {
    if let Some(pty) = &relay.pty {
        let _ = rustix::fs::fcntl_setfl(pty, rustix::fs::OFlags::NONBLOCK);
        let mut out = std::io::stdout();
        while let Some(n) = read_some(pty.as_fd(), buf) {
            let _ = out.write_all(&buf[..n]);
        }
        let _ = out.flush();
    }
    for (slot, data) in relay.captured.iter_mut() {
        if let Some(fd) = slot.take() {
            while let Some(n) = read_some(fd.as_fd(), buf) {
                data.extend_from_slice(&buf[..n]);
            }
        }
    }
}
