//! Directory metadata held back until every member is extracted, kept in bounded memory: each
//! directory's record (path, owner, mode, times, xattrs, ACLs) is appended to a log that lives
//! in memory while small and spills to an unnamed temporary file (`O_TMPFILE`, beside the
//! extracted tree, else in the temporary directory) once it grows, so that thousands of
//! directories with 60 KB of xattrs each cost 16 bytes of memory apiece, not their size.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use rustix::fs::{Mode, OFlags};

use super::reader::{Kind, Member};

/// Records are kept in memory up to this many bytes, then written out.
const IN_MEMORY: usize = 4 << 20;

/// Where one record is, and how deep its directory lies (deepest are applied first).
struct Entry {
    offset: u64,
    len: u32,
    depth: u32,
}

pub(crate) struct Deferred {
    index: Vec<Entry>,
    /// Bytes not yet written to `file`, starting at `flushed`.
    tail: Vec<u8>,
    flushed: u64,
    file: Option<File>,
}

impl Deferred {
    pub(crate) fn new() -> Deferred {
        Deferred {
            index: Vec::new(),
            tail: Vec::new(),
            flushed: 0,
            file: None,
        }
    }

    /// Records the metadata of directory `rel` (relative, without "./").
    pub(crate) fn push(
        &mut self,
        near: BorrowedFd<'_>,
        rel: &[u8],
        m: &Member,
    ) -> std::io::Result<()> {
        let start = self.tail.len();
        encode(&mut self.tail, rel, m);
        let len = u32::try_from(self.tail.len() - start).map_err(std::io::Error::other)?;
        let depth = rel.iter().filter(|&&b| b == b'/').count() as u32 + u32::from(!rel.is_empty());
        self.index.push(Entry {
            offset: self.flushed + start as u64,
            len,
            depth,
        });
        if self.tail.len() > IN_MEMORY {
            self.spill(near)?;
        }
        Ok(())
    }

    fn spill(&mut self, near: BorrowedFd<'_>) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(temp_file(near)?);
        }
        if let Some(f) = &mut self.file {
            f.write_all_at(&self.tail, self.flushed)?;
            self.flushed += self.tail.len() as u64;
            self.tail.clear();
        }
        Ok(())
    }

    /// Every record, deepest directory first; records of one depth in archive order, so a
    /// directory listed twice ends with its later entry's metadata.
    pub(crate) fn drain(
        mut self,
        mut apply: impl FnMut(Vec<u8>, Member) -> Result<(), super::ArchiveError>,
    ) -> Result<(), DrainError> {
        let mut index = std::mem::take(&mut self.index);
        index.sort_by_key(|e| std::cmp::Reverse(e.depth));
        let mut buf = Vec::new();
        for e in index {
            buf.resize(e.len as usize, 0);
            if e.offset >= self.flushed {
                let at = (e.offset - self.flushed) as usize;
                buf.copy_from_slice(&self.tail[at..at + e.len as usize]);
            } else if let Some(f) = &self.file {
                f.read_exact_at(&mut buf, e.offset)
                    .map_err(DrainError::Io)?;
            }
            let (rel, m) = decode(&buf).ok_or(DrainError::Io(std::io::Error::other(
                "a deferred directory record is unreadable",
            )))?;
            apply(rel, m).map_err(DrainError::Apply)?;
        }
        Ok(())
    }
}

pub(crate) enum DrainError {
    Io(std::io::Error),
    Apply(super::ArchiveError),
}

fn temp_file(near: BorrowedFd<'_>) -> std::io::Result<File> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(0o600);
    let fd = match rustix::fs::openat(near.as_fd(), ".", flags, mode) {
        Ok(fd) => fd,
        Err(_) => rustix::fs::open(std::env::temp_dir(), flags, mode)?,
    };
    Ok(File::from(fd))
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode(out: &mut Vec<u8>, rel: &[u8], m: &Member) {
    put(out, rel);
    put(out, &m.path);
    for n in [
        m.mode as u64,
        m.uid,
        m.gid,
        m.mtime.0 as u64,
        m.mtime.1 as u64,
        m.offset,
        m.xattrs.len() as u64,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for (k, v) in &m.xattrs {
        put(out, k);
        put(out, v);
    }
    for acl in [&m.acl_access, &m.acl_default] {
        match acl {
            Some(a) => {
                out.push(1);
                put(out, a);
            }
            None => out.push(0),
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn num(&mut self) -> Option<u64> {
        let (n, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*n))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.num()?).ok()?;
        let (b, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(b.to_vec())
    }
    fn acl(&mut self) -> Option<Option<Vec<u8>>> {
        let (&flag, rest) = self.0.split_first()?;
        self.0 = rest;
        if flag == 1 {
            self.bytes().map(Some)
        } else {
            Some(None)
        }
    }
}

fn decode(buf: &[u8]) -> Option<(Vec<u8>, Member)> {
    let mut c = Cursor(buf);
    let rel = c.bytes()?;
    let path = c.bytes()?;
    let (mode, uid, gid, secs, nsec, offset, count) = (
        c.num()?,
        c.num()?,
        c.num()?,
        c.num()?,
        c.num()?,
        c.num()?,
        c.num()?,
    );
    let mut xattrs = Vec::new();
    for _ in 0..count {
        xattrs.push((c.bytes()?, c.bytes()?));
    }
    let (acl_access, acl_default) = (c.acl()?, c.acl()?);
    let m = Member {
        kind: Kind::Dir,
        path,
        link: Vec::new(),
        mode: mode as u32,
        uid,
        gid,
        mtime: (secs as i64, nsec as u32),
        atime: None,
        size: 0,
        sparse: None,
        dev: (0, 0),
        xattrs,
        acl_access,
        acl_default,
        offset,
    };
    Some((rel, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_spill_and_come_back_deepest_first() {
        let dir = tempfile::tempdir().unwrap();
        let near = File::open(dir.path()).unwrap();
        let mut d = Deferred::new();
        let mut m = decode(&{
            let mut v = Vec::new();
            encode(&mut v, b"", &decode_seed());
            v
        })
        .unwrap()
        .1;
        let big = vec![7u8; 60_000];
        let mut want = Vec::new();
        for i in 0..200 {
            let rel = if i % 2 == 0 {
                format!("a{i}")
            } else {
                format!("a{i}/b")
            };
            m.mode = i;
            m.xattrs = vec![(b"user.big".to_vec(), big.clone())];
            m.acl_default = (i % 3 == 0).then(|| b"user::rwx".to_vec());
            d.push(near.as_fd(), rel.as_bytes(), &m).unwrap();
            want.push((rel, i));
        }
        assert!(d.file.is_some(), "12 MB of records spilled to the file");
        let mut got = Vec::new();
        let ok = d.drain(|rel, m| {
            assert_eq!(m.xattrs[0].1.len(), 60_000);
            assert_eq!(m.acl_default.is_some(), m.mode % 3 == 0);
            got.push((String::from_utf8(rel).unwrap(), m.mode));
            Ok(())
        });
        assert!(ok.is_ok());
        let deep: Vec<_> = want
            .iter()
            .filter(|(r, _)| r.contains('/'))
            .cloned()
            .collect();
        let flat: Vec<_> = want
            .iter()
            .filter(|(r, _)| !r.contains('/'))
            .cloned()
            .collect();
        assert_eq!(got, [deep, flat].concat());
    }

    fn decode_seed() -> Member {
        Member {
            kind: Kind::Dir,
            path: b"./x/".to_vec(),
            link: Vec::new(),
            mode: 0o755,
            uid: 1,
            gid: 2,
            mtime: (-5, 7),
            atime: None,
            size: 0,
            sparse: None,
            dev: (0, 0),
            xattrs: Vec::new(),
            acl_access: Some(b"u::rw".to_vec()),
            acl_default: None,
            offset: 99,
        }
    }
}
