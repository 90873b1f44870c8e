//! The host side of a shell session while it runs: forwarding signals to the session process
//! and, with a pty, relaying the terminal in raw mode (window size changes included); and the
//! relay of `login`, which ends on Ctrl-] pressed three times within a second.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};

use crate::runner::console::{Escape, RawMode};
use crate::sys::process as p;

/// Waits for `child`, forwarding signals and relaying `pty` if given; returns its raw status.
pub(crate) fn wait(child: i32, sigfd: &OwnedFd, pty: Option<OwnedFd>) -> i32 {
    let stdin = std::io::stdin();
    let _raw = pty
        .as_ref()
        .filter(|_| rustix::termios::isatty(&stdin))
        .map(|_| RawMode::enter());
    if let Some(m) = &pty {
        let _ = crate::sys::pty::copy_winsize(&stdin, m);
    }
    let mut stdin_open = pty.is_some();
    let mut pty_open = pty.is_some();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![PollFd::new(sigfd, PollFlags::IN)];
        if let (true, Some(m)) = (pty_open, &pty) {
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        let timeout = rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        let _ = poll(&mut fds, Some(&timeout));
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 1;
        if let (true, Some(m)) = (pty_open, &pty) {
            if ready[i] {
                match rustix::io::read(m, &mut buf) {
                    Ok(n) if n > 0 => {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                    }
                    _ => pty_open = false,
                }
            }
            i += 1;
        }
        if let (true, Some(m)) = (stdin_open, &pty) {
            if ready[i] {
                match rustix::io::read(stdin.as_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = rustix::io::write(m, &buf[..n]);
                    }
                    _ => stdin_open = false,
                }
            }
        }
        if ready[0] {
            while let Ok(Some(sig)) = p::read_signal(sigfd) {
                match (sig, &pty) {
                    (libc::SIGCHLD, _) => {}
                    (libc::SIGWINCH, Some(m)) => {
                        let _ = crate::sys::pty::copy_winsize(&stdin, m);
                    }
                    (libc::SIGWINCH, None) => {}
                    (s, _) => {
                        let _ = p::kill(child, s);
                    }
                }
            }
        }
        if let Ok(Some((_, status))) = p::wait_raw(child, true) {
            if let Some(m) = &pty {
                let _ = rustix::fs::fcntl_setfl(m, rustix::fs::OFlags::NONBLOCK);
                while let Ok(n) = rustix::io::read(m, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = std::io::stdout().write_all(&buf[..n]);
                }
                let _ = std::io::stdout().flush();
            }
            return status;
        }
    }
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
