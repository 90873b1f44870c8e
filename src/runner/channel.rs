//! Typed messages between rmach and the processes it starts, over pipes: each message is one
//! `write` of at most `PIPE_BUF` bytes (so writers never interleave): a tag byte, and a
//! 4-byte integer or a 2-byte length and that many bytes of text. Two channels carry them: the *report* channel from the helper (the machine's PID,
//! then its final wait status) and the *setup* channel from everything that sets the machine
//! up (close-on-exec: its end-of-file with no message means the payload's exec went through).

use std::io::Read;
use std::os::fd::AsFd;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The machine's PID (report channel).
    Pid(i32),
    /// The machine's raw wait status, or the payload's with `run` (report channel).
    Status(i32),
    /// A setup step failed: what and why, in words (setup channel).
    Failed(String),
    /// The command does not exist in the machine (setup channel).
    CommandNotFound(String),
}

impl From<String> for Message {
    fn from(message: String) -> Message {
        Message::Failed(message)
    }
}

impl From<&str> for Message {
    fn from(message: &str) -> Message {
        Message::Failed(message.into())
    }
}

/// At most what one atomic pipe write carries (PIPE_BUF), tag included.
const MAX: usize = 4096;

impl Message {
    fn encode(&self) -> Vec<u8> {
        let text = |tag: u8, t: &str| {
            let bytes = &t.as_bytes()[..t.len().min(MAX - 3)];
            let mut v = vec![tag];
            v.extend_from_slice(&(bytes.len() as u16).to_ne_bytes());
            v.extend_from_slice(bytes);
            v
        };
        match self {
            Message::Pid(p) => [&[b'P'][..], &p.to_ne_bytes()].concat(),
            Message::Status(s) => [&[b'S'][..], &s.to_ne_bytes()].concat(),
            Message::Failed(m) => text(b'F', m),
            Message::CommandNotFound(c) => text(b'N', c),
        }
    }
}

/// Sends `message` with one write (errors ignored: the reader's absence is its own signal).
pub fn send(fd: impl AsFd, message: &Message) {
    let _ = rustix::io::write(fd, &message.encode());
}

/// Reads the next message; None at end of file (or on a malformed one).
pub fn receive(reader: &mut impl Read) -> Option<Message> {
    let mut tag = [0u8; 1];
    reader.read_exact(&mut tag).ok()?;
    let mut int = [0u8; 4];
    let mut text = || -> Option<String> {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u16::from_ne_bytes(len) as usize];
        reader.read_exact(&mut body).ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    Some(match tag[0] {
        b'F' => Message::Failed(text()?),
        b'N' => Message::CommandNotFound(text()?),
        b'P' | b'S' => {
            reader.read_exact(&mut int).ok()?;
            let n = i32::from_ne_bytes(int);
            if tag[0] == b'P' {
                Message::Pid(n)
            } else {
                Message::Status(n)
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_a_pipe() {
        let (r, w) = crate::sys::process::pipe().unwrap();
        send(&w, &Message::Pid(4242));
        send(&w, &Message::Status(9));
        send(&w, &Message::CommandNotFound("nosuch".into()));
        send(&w, &Message::Failed("mount /proc: EPERM".into()));
        drop(w);
        let mut r = std::fs::File::from(r);
        assert_eq!(receive(&mut r), Some(Message::Pid(4242)));
        assert_eq!(receive(&mut r), Some(Message::Status(9)));
        assert_eq!(
            receive(&mut r),
            Some(Message::CommandNotFound("nosuch".into()))
        );
        assert_eq!(
            receive(&mut r),
            Some(Message::Failed("mount /proc: EPERM".into()))
        );
        assert_eq!(receive(&mut r), None);
        let long = "x".repeat(10_000);
        assert_eq!(Message::Failed(long).encode().len(), MAX);
        assert_eq!(receive(&mut &b"Zjunk"[..]), None);
    }
}
