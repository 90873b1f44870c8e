//! Typed messages between rmach and the processes it starts, over pipes: each message is one
//! `write` of at most `PIPE_BUF` bytes (so writers never interleave): a tag byte, and a
//! 4-byte integer or a 2-byte length and that many bytes of text (a failure: its errno, then
//! the text). Three kinds of pipe carry them: the *report* channel from the helper (the
//! machine's PID, then its final wait status), the *setup* channel from everything that sets
//! the machine up (close-on-exec: its end-of-file with no message means the payload's exec
//! went through) and the *go* pipes, on which a process waits for [`Message::Go`].

use std::io::{self, Read};
use std::os::fd::AsFd;

/// A setup step that failed in a process rmach started: what it was doing and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SetupError {
    /// The step, naming the path it worked on (`mount /proc`, `set the hostname`).
    pub(crate) what: String,
    #[source]
    pub(crate) source: io::Error,
}

impl SetupError {
    pub(crate) fn new(what: impl std::fmt::Display, source: impl Into<io::Error>) -> SetupError {
        SetupError {
            what: what.to_string(),
            source: source.into(),
        }
    }

    /// The same failure, said to be part of `step`.
    pub(crate) fn within(self, step: impl std::fmt::Display) -> SetupError {
        SetupError {
            what: format!("{step}: {}", self.what),
            source: self.source,
        }
    }

    /// The errno that carries the source across a pipe.
    fn errno(&self) -> i32 {
        self.source
            .raw_os_error()
            .unwrap_or(match self.source.kind() {
                io::ErrorKind::NotFound => libc::ENOENT,
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => libc::EINVAL,
                _ => libc::EIO,
            })
    }
}

/// Attaches the step `what` to a failed system call (io::Error or rustix's Errno).
pub(crate) fn ctx<T, E: Into<io::Error>>(r: Result<T, E>, what: impl std::fmt::Display) -> Step<T> {
    r.map_err(|e| SetupError::new(what, e))
}

/// The result of a setup step in a child process.
pub(crate) type Step<T> = Result<T, SetupError>;

/// One message.
#[derive(Debug)]
pub(crate) enum Message {
    /// The machine's PID (report channel).
    Pid(i32),
    /// The machine's raw wait status, or the payload's with `run` (report channel).
    Status(i32),
    /// The other side's part is done: go on (go pipes).
    Go,
    /// A setup step failed (setup channel).
    Failed(SetupError),
    /// The command does not exist in the machine (setup channel).
    CommandNotFound(String),
}

impl From<SetupError> for Message {
    fn from(e: SetupError) -> Message {
        Message::Failed(e)
    }
}

/// At most what one atomic pipe write carries (PIPE_BUF), tag included.
const MAX: usize = 4096;

impl Message {
    fn encode(&self) -> Vec<u8> {
        let int = |tag: u8, n: i32| [&[tag][..], &n.to_ne_bytes()].concat();
        let text = |mut v: Vec<u8>, t: &str| {
            let bytes = &t.as_bytes()[..t.len().min(MAX - v.len() - 2)];
            v.extend_from_slice(&(bytes.len() as u16).to_ne_bytes());
            v.extend_from_slice(bytes);
            v
        };
        match self {
            Message::Pid(p) => int(b'P', *p),
            Message::Status(s) => int(b'S', *s),
            Message::Go => vec![b'G'],
            Message::Failed(e) => text(int(b'F', e.errno()), &e.what),
            Message::CommandNotFound(c) => text(vec![b'N'], c),
        }
    }
}

/// Sends `message` with one write (errors ignored: the reader's absence is its own signal).
pub(crate) fn send(fd: impl AsFd, message: &Message) {
    let _ = rustix::io::write(fd, &message.encode());
}

/// Reads a descriptor without taking it over.
struct FdReader<F>(F);

impl<F: AsFd> Read for FdReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match rustix::io::read(&self.0, &mut *buf) {
                Err(rustix::io::Errno::INTR) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }
}

/// Reads the next message; None at end of file (or on a malformed one).
pub(crate) fn receive(fd: impl AsFd) -> Option<Message> {
    decode(&mut FdReader(fd))
}

/// Waits for [`Message::Go`]; false when anything else (or nothing) comes.
pub(crate) fn wait_go(fd: impl AsFd) -> bool {
    matches!(receive(fd), Some(Message::Go))
}

fn decode(reader: &mut impl Read) -> Option<Message> {
    let mut tag = [0u8; 1];
    reader.read_exact(&mut tag).ok()?;
    let mut int = || -> Option<i32> {
        let mut b = [0u8; 4];
        reader.read_exact(&mut b).ok()?;
        Some(i32::from_ne_bytes(b))
    };
    Some(match tag[0] {
        b'P' => Message::Pid(int()?),
        b'S' => Message::Status(int()?),
        b'G' => Message::Go,
        b'F' => {
            let errno = int()?;
            Message::Failed(SetupError {
                what: text(reader)?,
                source: io::Error::from_raw_os_error(errno),
            })
        }
        b'N' => Message::CommandNotFound(text(reader)?),
        _ => return None,
    })
}

fn text(reader: &mut impl Read) -> Option<String> {
    let mut len = [0u8; 2];
    reader.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u16::from_ne_bytes(len) as usize];
    reader.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_a_pipe() {
        let (r, w) = crate::sys::process::pipe().unwrap();
        send(&w, &Message::Pid(4242));
        send(&w, &Message::Status(9));
        send(&w, &Message::Go);
        send(&w, &Message::CommandNotFound("nosuch".into()));
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        send(&w, &SetupError::new("mount /proc", eperm).into());
        let nul = io::Error::from(io::ErrorKind::InvalidInput);
        send(&w, &SetupError::new("a NUL byte", nul).into());
        drop(w);
        assert!(matches!(receive(&r), Some(Message::Pid(4242))));
        assert!(matches!(receive(&r), Some(Message::Status(9))));
        assert!(wait_go(&r));
        assert!(matches!(receive(&r), Some(Message::CommandNotFound(c)) if c == "nosuch"));
        let Some(Message::Failed(e)) = receive(&r) else {
            panic!("a failure")
        };
        assert_eq!(
            (e.what.as_str(), e.source.raw_os_error()),
            ("mount /proc", Some(libc::EPERM))
        );
        assert_eq!(
            e.to_string(),
            "mount /proc",
            "Display leaves out the source"
        );
        let Some(Message::Failed(e)) = receive(&r) else {
            panic!("a failure")
        };
        assert_eq!(e.source.raw_os_error(), Some(libc::EINVAL));
        assert!(receive(&r).is_none());
        let long = SetupError::new("x".repeat(10_000), io::Error::from_raw_os_error(1));
        assert_eq!(Message::Failed(long).encode().len(), MAX);
        assert!(decode(&mut &b"Zjunk"[..]).is_none());
        let (r, w) = crate::sys::process::pipe().unwrap();
        send(&w, &Message::Pid(1));
        drop(w);
        assert!(!wait_go(&r), "only Go lets a process go on");
        assert!(!wait_go(&r), "nor does end of file");
    }
}
