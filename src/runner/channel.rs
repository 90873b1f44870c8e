//! Typed messages between rmach and the processes it starts, over one [`Channel`] per
//! process pair, as youki does: an `AF_UNIX` `SOCK_SEQPACKET` socket pair, close-on-exec.
//! Each message is one packet (so it is never split, nor merged with another, whoever else
//! holds a copy of the sending end): a tag byte, and a 4-byte integer or a 2-byte length and
//! that many bytes of text (a failure: its errno, then the text), at most 4096 bytes in all.
//! `run` and `boot` use two channels: rmach's with its helper (Go down; the machine's PID, Go
//! once the kernel stage is mounted, the machine's status, or a setup failure up) and rmach's
//! with the machine (Go down; a setup failure or a command not found up; end of file with no
//! message once the payload's exec went through). `shell` and `login` use one with the session
//! process for its failure before exec.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

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

    /// The errno that carries the source across a channel.
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
    /// The machine's PID (from the helper).
    Pid(i32),
    /// The machine's raw wait status, or the payload's with `run` (from the helper).
    Status(i32),
    /// The sender's part is done: go on (from rmach; from the helper: the kernel stage is
    /// mounted).
    Go,
    /// A setup step failed (from any process rmach started).
    Failed(SetupError),
    /// The command does not exist in the machine (from the machine).
    CommandNotFound(String),
}

impl From<SetupError> for Message {
    fn from(e: SetupError) -> Message {
        Message::Failed(e)
    }
}

/// The longest message, tag included: a failure's text is cut to fit, so every message fits
/// the receiver's buffer whole.
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

    /// The message one packet holds; None when it is malformed or has bytes left over.
    fn decode(packet: &[u8]) -> Option<Message> {
        let (&tag, rest) = packet.split_first()?;
        let mut body = Body(rest);
        let message = match tag {
            b'P' => Message::Pid(body.int()?),
            b'S' => Message::Status(body.int()?),
            b'G' => Message::Go,
            b'F' => {
                let errno = body.int()?;
                Message::Failed(SetupError {
                    what: body.text()?,
                    source: io::Error::from_raw_os_error(errno),
                })
            }
            b'N' => Message::CommandNotFound(body.text()?),
            _ => return None,
        };
        body.0.is_empty().then_some(message)
    }
}

/// What is left of a packet after its tag, read front to back.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }

    fn int(&mut self) -> Option<i32> {
        self.take().map(i32::from_ne_bytes)
    }

    /// A 2-byte length and that many bytes of text.
    fn text(&mut self) -> Option<String> {
        let len = u16::from_ne_bytes(self.take()?) as usize;
        let (text, tail) = self.0.split_at_checked(len)?;
        self.0 = tail;
        Some(String::from_utf8_lossy(text).into_owned())
    }
}

/// One end of a channel between rmach and a process it starts: an `AF_UNIX` `SOCK_SEQPACKET`
/// socket, close-on-exec. Each message is one packet, so it arrives whole and alone, however
/// many copies of the other end send. A receive sees end of file once every copy of the other
/// end is closed: a process's exit (or exec) is seen as such, which is why each process closes
/// the ends that are not its own.
#[derive(Debug)]
pub(crate) struct Channel(OwnedFd);

impl Channel {
    /// A connected pair of ends, one for each side.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (a, b) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel(a), Channel(b)))
    }

    /// Another descriptor for this end (for a process that passes it on to a child).
    pub(crate) fn try_clone(&self) -> io::Result<Channel> {
        Ok(Channel(self.0.try_clone()?))
    }

    /// Sends `message` as one packet. Errors are ignored: the other side's absence is its
    /// own signal, seen by whoever waits for it. (No SIGPIPE: the caller may not ignore it.)
    pub(crate) fn send(&self, message: &Message) {
        let packet = message.encode();
        while let Err(rustix::io::Errno::INTR) =
            rustix::net::send(&self.0, &packet, rustix::net::SendFlags::NOSIGNAL)
        {}
    }

    /// Waits for the next message; None at end of file (or on a malformed one).
    pub(crate) fn receive(&self) -> Option<Message> {
        let mut packet = [0u8; MAX];
        loop {
            match rustix::net::recv(&self.0, &mut packet[..], rustix::net::RecvFlags::empty()) {
                Err(rustix::io::Errno::INTR) => continue,
                Ok((len, _)) => return Message::decode(&packet[..len]),
                Err(_) => return None,
            }
        }
    }

    /// Waits for [`Message::Go`]; false when anything else (or nothing) comes.
    pub(crate) fn wait_go(&self) -> bool {
        matches!(self.receive(), Some(Message::Go))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eperm(what: &str) -> Message {
        SetupError::new(what, io::Error::from_raw_os_error(libc::EPERM)).into()
    }

    #[test]
    fn messages_round_trip_both_ways() {
        let (rmach, child) = Channel::pair().unwrap();
        rmach.send(&Message::Go);
        child.send(&Message::Pid(4242));
        child.send(&Message::Status(9));
        child.send(&Message::CommandNotFound("nosuch".into()));
        child.send(&eperm("mount /proc"));
        let nul = io::Error::from(io::ErrorKind::InvalidInput);
        child.send(&SetupError::new("a NUL byte", nul).into());
        rmach.send(&Message::Go);
        assert!(child.wait_go());
        assert!(matches!(rmach.receive(), Some(Message::Pid(4242))));
        assert!(matches!(rmach.receive(), Some(Message::Status(9))));
        assert!(matches!(rmach.receive(), Some(Message::CommandNotFound(c)) if c == "nosuch"));
        let Some(Message::Failed(e)) = rmach.receive() else {
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
        let Some(Message::Failed(e)) = rmach.receive() else {
            panic!("a failure")
        };
        assert_eq!(e.source.raw_os_error(), Some(libc::EINVAL));
        assert!(child.wait_go());
    }

    #[test]
    fn end_of_file_once_every_copy_of_the_other_end_is_closed() {
        let (rmach, child) = Channel::pair().unwrap();
        let copy = child.try_clone().unwrap();
        drop(child);
        copy.send(&Message::Pid(1));
        assert!(matches!(rmach.receive(), Some(Message::Pid(1))));
        // A copy still open (as a forked process's would be): no end of file yet.
        let pending = rustix::net::recv(&rmach, &mut [0u8; 8], rustix::net::RecvFlags::DONTWAIT);
        assert_eq!(pending.err(), Some(rustix::io::Errno::AGAIN));
        drop(copy);
        assert!(rmach.receive().is_none());
        assert!(rmach.receive().is_none(), "and it stays at end of file");
        assert!(!rmach.wait_go(), "nor does end of file let a process go on");
        // The other way, and no SIGPIPE for a send to a closed end.
        let (rmach, child) = Channel::pair().unwrap();
        drop(rmach);
        child.send(&Message::Status(0));
        assert!(child.receive().is_none());
    }

    #[test]
    fn only_go_lets_a_process_go_on() {
        let (rmach, child) = Channel::pair().unwrap();
        rmach.send(&Message::Pid(1));
        assert!(!child.wait_go());
    }

    #[test]
    fn a_message_is_one_packet_never_split_nor_merged() {
        let (rmach, child) = Channel::pair().unwrap();
        let copy = child.try_clone().unwrap();
        let long = "x".repeat(3000);
        child.send(&eperm(&long));
        copy.send(&Message::Go);
        child.send(&Message::Status(7));
        // A receive far larger than all three still takes exactly one message.
        let mut buf = vec![0u8; 65536];
        let (len, _) =
            rustix::net::recv(&rmach, &mut buf[..], rustix::net::RecvFlags::empty()).unwrap();
        assert_eq!(len, eperm(&long).encode().len());
        assert!(matches!(Message::decode(&buf[..len]), Some(Message::Failed(e)) if e.what == long));
        assert!(rmach.wait_go());
        assert!(matches!(rmach.receive(), Some(Message::Status(7))));
    }

    #[test]
    fn long_text_is_cut_to_the_cap() {
        let (rmach, child) = Channel::pair().unwrap();
        child.send(&eperm(&"x".repeat(10_000)));
        assert_eq!(eperm(&"x".repeat(10_000)).encode().len(), MAX);
        let Some(Message::Failed(e)) = rmach.receive() else {
            panic!("a failure, whole")
        };
        assert_eq!(e.what, "x".repeat(MAX - 1 - 4 - 2));
        assert_eq!(e.source.raw_os_error(), Some(libc::EPERM));
        let name = "n".repeat(70_000);
        assert_eq!(Message::CommandNotFound(name).encode().len(), MAX);
    }

    #[test]
    fn malformed_packets_are_refused() {
        assert!(Message::decode(b"").is_none());
        assert!(Message::decode(b"Zjunk").is_none());
        assert!(Message::decode(b"P12").is_none(), "a short integer");
        assert!(Message::decode(b"G!").is_none(), "bytes left over");
        let mut short = eperm("mount /proc").encode();
        short.pop();
        assert!(
            Message::decode(&short).is_none(),
            "text shorter than its length"
        );
    }
}
