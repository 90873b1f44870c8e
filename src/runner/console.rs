//! The host side of the console while the machine runs, as systemd-nspawn's: relaying the
//! machine's pty (both ways for `interactive`, output only for `read-only`, nothing for
//! `passive`), with window size changes and the Ctrl-] Ctrl-] Ctrl-] escape that kills the
//! machine; collecting captured output; turning signals into what the machine should receive.
//!
//! The relay survives hangups of the pty: when every slave fd is closed or hung up (`vhangup`
//! by a getty, systemd reopening /dev/console) the master reads EIO and polls POLLHUP until the
//! slave is opened again. Like systemd's ptyfwd it keeps the master and retries instead of
//! giving up on it; whatever was written before the hangup is still read out first.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};

use super::spec::Console;
use crate::sys::process as p;

/// Ctrl-]: pressed three times within a second, the machine is killed.
const ESCAPE: u8 = 0x1d;

/// How often a hung-up master is retried (it polls POLLHUP continuously until reopened).
const HANGUP_RETRY: Duration = Duration::from_millis(40);

/// What the relay loop watches besides the signal fd.
pub(crate) struct Relay {
    /// Which directions the pty is relayed in.
    pub(crate) console: Console,
    pub(crate) pty: Option<OwnedFd>,
    /// Capture pipes (None once closed) and what came through them.
    pub(crate) captured: Vec<(Option<OwnedFd>, Vec<u8>)>,
}

/// Puts the terminal on stdin into raw mode until dropped.
pub(crate) struct RawMode(Option<Termios>);

impl RawMode {
    /// Raw mode for an interactive console whose stdin is a terminal; nothing otherwise (so a
    /// read-only console on a terminal leaves Ctrl-C to the terminal: SIGINT to rmach).
    pub(crate) fn enter_for(console: Console) -> RawMode {
        if console != Console::Interactive || !rustix::termios::isatty(std::io::stdin()) {
            return RawMode(None);
        }
        RawMode::enter()
    }

    pub(crate) fn enter() -> RawMode {
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

/// The state of the master side of the machine's pty.
struct Master {
    /// Every slave fd is closed or hung up: not polled, retried every [`HANGUP_RETRY`].
    hung_up: bool,
    /// Copied to stdout (interactive, read-only) or discarded (passive).
    show: bool,
    /// Input read from stdin and not yet accepted by the pty.
    pending: Vec<u8>,
}

impl Master {
    /// Reads what the machine has written (a bounded amount, so that a flood of output cannot
    /// starve input, signals and the ^] escape); notes a hangup instead of giving up. True when
    /// everything written so far was read.
    fn pump(&mut self, pty: &OwnedFd, buf: &mut [u8]) -> bool {
        for _ in 0..16 {
            match rustix::io::read(pty, &mut *buf) {
                Ok(0) | Err(Errno::IO) => {
                    self.hung_up = true;
                    return true;
                }
                Ok(n) => {
                    self.hung_up = false;
                    if self.show {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                    }
                }
                Err(Errno::INTR) => {}
                Err(_) => {
                    // EAGAIN: drained, and the slave side is open.
                    self.hung_up = false;
                    return true;
                }
            }
        }
        false
    }

    /// Hands pending input to the pty as far as it takes it.
    fn push(&mut self, pty: &OwnedFd) {
        while !self.pending.is_empty() {
            match rustix::io::write(pty, &self.pending) {
                Ok(0) => return,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return,
                // Hung up: the machine cannot read it; a later getty starts from a clean line.
                Err(_) => {
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// Counts Ctrl-] presses; true on the third within a second (the console's escape, and
/// `login`'s).
pub(crate) struct Escape(u8, Instant);

impl Escape {
    pub(crate) fn new() -> Escape {
        Escape(0, Instant::now())
    }

    pub(crate) fn feed(&mut self, input: &[u8]) -> bool {
        for &b in input {
            if b != ESCAPE {
                self.0 = 0;
                continue;
            }
            if self.1.elapsed() > Duration::from_secs(1) {
                *self = Escape(0, Instant::now());
            }
            self.0 += 1;
            if self.0 >= 3 {
                return true;
            }
        }
        false
    }
}

/// Runs until the child `wait_pid` exits; returns its raw wait status. `on_signal` maps a
/// signal rmach received to the signal sent to `pid`, the machine (None: not forwarded).
pub(crate) fn relay(
    pid: i32,
    wait_pid: i32,
    sigfd: &OwnedFd,
    relay: &mut Relay,
    on_signal: impl Fn(i32) -> Option<i32>,
) -> i32 {
    relay_until_exit(pid, wait_pid, sigfd, relay, on_signal, Some(Escape::new()))
}

/// The same relay for a session in a running machine (`rmach shell`): `pty` relayed both ways,
/// every signal passed on to `child` as it is, and no escape (a session's input is the
/// session's; it ends when `child` exits).
pub(crate) fn relay_session(child: i32, sigfd: &OwnedFd, pty: Option<OwnedFd>) -> i32 {
    let mut relay = Relay {
        console: Console::Interactive,
        pty,
        captured: Vec::new(),
    };
    relay_until_exit(child, child, sigfd, &mut relay, Some, None)
}

/// [`relay`], with the ^] escape when `escape` is given.
fn relay_until_exit(
    pid: i32,
    wait_pid: i32,
    sigfd: &OwnedFd,
    relay: &mut Relay,
    on_signal: impl Fn(i32) -> Option<i32>,
    mut escape: Option<Escape>,
) -> i32 {
    let stdin = std::io::stdin();
    let interactive = relay.console == Console::Interactive && relay.pty.is_some();
    let mut stdin_open = interactive;
    let mut master = Master {
        hung_up: false,
        show: relay.console != Console::Passive,
        pending: Vec::new(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    if let Some(pty) = &relay.pty {
        let _ = rustix::fs::fcntl_setfl(pty, rustix::fs::OFlags::NONBLOCK);
        let _ = crate::sys::pty::copy_winsize(&stdin, pty);
    }
    loop {
        let mut fds = vec![PollFd::new(sigfd, PollFlags::IN)];
        let pty_slot = match &relay.pty {
            Some(pty) if !master.hung_up => {
                let mut events = PollFlags::IN;
                if !master.pending.is_empty() {
                    events |= PollFlags::OUT;
                }
                fds.push(PollFd::new(pty, events));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        // Input waits while the pty has not taken the last of it.
        let stdin_slot = (stdin_open && master.pending.is_empty()).then(|| {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
            fds.len() - 1
        });
        let first_capture = fds.len();
        for fd in relay.captured.iter().filter_map(|c| c.0.as_ref()) {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        // A timeout, and the wait below on every round: a SIGCHLD that never reaches the
        // signalfd (seen under load) must not leave rmach waiting forever for a dead machine.
        let timeout = if master.hung_up && relay.pty.is_some() {
            HANGUP_RETRY
        } else {
            Duration::from_millis(200)
        };
        let timeout = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: timeout.as_nanos() as i64,
        };
        if poll(&mut fds, Some(&timeout)).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if let Some(pty) = &relay.pty {
            // A hung-up master is retried on every round: a reopened slave clears the hangup.
            if master.hung_up || pty_slot.is_some_and(|i| ready[i]) {
                let _ = master.pump(pty, &mut buf);
                master.push(pty);
            }
        }
        if stdin_slot.is_some_and(|i| ready[i]) {
            match stdin.lock().read(&mut buf) {
                Ok(0) => stdin_open = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => stdin_open = false,
                Ok(n) => {
                    if escape.as_mut().is_some_and(|e| e.feed(&buf[..n])) {
                        let _ = p::kill(pid, libc::SIGKILL);
                    }
                    master.pending.extend_from_slice(&buf[..n]);
                    if let Some(pty) = &relay.pty {
                        master.push(pty);
                    }
                }
            }
        }
        let mut i = first_capture;
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
            if let Some(pty) = &relay.pty {
                // The machine is gone: nothing refills the pty, so this ends.
                while !master.pump(pty, &mut buf) {}
            }
            drain_captured(relay, &mut buf);
            return status;
        }
    }
}

/// After the machine is gone: what is still buffered in the capture pipes.
fn drain_captured(relay: &mut Relay, buf: &mut [u8]) {
    for (slot, data) in relay.captured.iter_mut() {
        if let Some(fd) = slot.take() {
            while let Some(n) = read_some(fd.as_fd(), buf) {
                data.extend_from_slice(&buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_needs_three_in_a_row() {
        let mut e = Escape::new();
        assert!(!e.feed(&[ESCAPE, ESCAPE]));
        assert!(!e.feed(b"x"));
        assert!(!e.feed(&[ESCAPE, ESCAPE]));
        assert!(e.feed(&[ESCAPE]));
    }

    #[test]
    fn a_hung_up_master_is_read_out_and_then_resumes() {
        let (master, path) = crate::sys::pty::open_pty().unwrap();
        rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut m = Master {
            hung_up: false,
            show: false,
            pending: Vec::new(),
        };
        let mut buf = [0u8; 4096];
        let slave = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        (&slave).write_all(b"before hangup").unwrap();
        drop(slave);
        assert!(m.pump(&master, &mut buf));
        assert!(m.hung_up, "every slave fd closed: EIO");
        let _slave = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        m.pump(&master, &mut buf);
        assert!(!m.hung_up, "a reopened slave ends the hangup");
    }
}
