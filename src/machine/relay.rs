//! The host side of a shell session while it runs: forwarding signals to the session process
//! and, with a pty, relaying the terminal in raw mode (window size changes included), through
//! the console's relay loop (`runner::console`) without its escape; and the relay of `login`,
//! which ends on Ctrl-] pressed three times within a second.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};

use crate::runner::console::{Escape, RawMode};

/// Waits for `child`, forwarding signals and relaying `pty` if given (with the terminal in raw
/// mode when stdin is one); returns its raw status.
pub(crate) fn wait(child: i32, sigfd: &OwnedFd, pty: Option<OwnedFd>) -> i32 {
    let _raw = pty
        .as_ref()
        .filter(|_| rustix::termios::isatty(std::io::stdin()))
        .map(|_| RawMode::enter());
    crate::runner::console::relay_session(child, sigfd, pty)
}

/// Relays this terminal to `master` until the escape (or the end of input). `slave` is held
/// until the getty has opened the pty; reads from a master nobody holds fail, and a getty
/// that restarts after a logout leaves such gaps, so those are waited out, not fatal.
pub(crate) fn attach(master: OwnedFd, slave: std::fs::File) {
    let stdin = std::io::stdin();
    let _raw = rustix::termios::isatty(&stdin).then(RawMode::enter);
    let _ = crate::sys::pty::copy_winsize(&stdin, &master);
    let mut slave = Some(slave);
    let started = std::time::Instant::now();
    // Ctrl-] pressed three times within a second lets go of the getty.
    let mut escape = Escape::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if slave.is_some() && started.elapsed() > std::time::Duration::from_secs(5) {
            slave = None;
        }
        let mut fds = [
            PollFd::new(&master, PollFlags::IN),
            PollFd::new(&stdin, PollFlags::IN),
        ];
        let timeout = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        let _ = poll(&mut fds, Some(&timeout));
        let (m_ready, in_ready) = (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
        if m_ready {
            match rustix::io::read(&master, &mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        if in_ready {
            let n = match rustix::io::read(stdin.as_fd(), &mut buf) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            if escape.feed(&buf[..n]) {
                return;
            }
            let _ = rustix::io::write(&master, &buf[..n]);
        }
    }
}
