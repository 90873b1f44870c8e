//! Frames a tar stream into members: ustar/GNU headers, PAX local and global headers, GNU long
//! names and links, and the three GNU sparse encodings, with everything that describes one
//! member merged into one [`Member`]. It reads forward only and never trusts a size it has not
//! checked against the stream.

use std::io::{self, Read};

use super::error::{shown, Cut, Fault};
use super::header::{check_sum, cstr, num, signed_num};
use super::pax;
use super::sparse;
use super::ArchiveError;

const BLOCK: u64 = 512;
/// Extension headers (PAX, long names) are read into memory; refuse absurd ones. This bounds
/// what one member's local headers and all global headers together may hold.
const MAX_EXTENSION: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One archive member with all of its metadata.
#[derive(Debug, Clone)]
pub struct Member {
    pub(crate) kind: Kind,
    /// The name as stored (raw bytes; not yet checked for safety).
    pub path: Vec<u8>,
    /// Symlink target or hard-link target.
    pub(crate) link: Vec<u8>,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: (i64, u32),
    pub(crate) atime: Option<(i64, u32)>,
    /// The file's length once restored (for sparse files, including holes).
    pub size: u64,
    /// Data segments (offset, length) of a sparse file, in order; `None` for dense files.
    pub(crate) sparse: Option<Vec<(u64, u64)>>,
    pub(crate) dev: (u32, u32),
    /// Extended attributes (SCHILY.xattr.*), in archive order.
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) acl_access: Option<Vec<u8>>,
    pub(crate) acl_default: Option<Vec<u8>>,
    /// Byte offset of the member's header in the uncompressed stream.
    pub(crate) offset: u64,
}

pub struct TarReader<R: Read> {
    inner: R,
    pos: u64,
    /// Bytes of the current member's data not yet read, and the padding after them.
    remaining: u64,
    padding: u64,
    global: Vec<(Vec<u8>, Vec<u8>)>,
    /// A zero block was read: the input may end here, or another archive may follow.
    after_end: bool,
    ended: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
            global: Vec::new(),
            after_end: false,
            ended: false,
        }
    }

    /// Uncompressed bytes consumed so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    fn read_exact_at(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ArchiveError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(ArchiveError::Truncated {
                        offset: self.pos + got as u64,
                        cut: Cut::Inside(what),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ArchiveError::Read {
                        offset: self.pos + got as u64,
                        source: e,
                    })
                }
            }
        }
        self.pos += got as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64, what: &'static str) -> Result<(), ArchiveError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact_at(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads the current member's data; 0 at its end.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let k = (buf.len() as u64).min(self.remaining) as usize;
        match self.inner.read(&mut buf[..k]) {
            Ok(0) => Err(ArchiveError::Truncated {
                offset: self.pos,
                cut: Cut::Inside("a member's data"),
            }),
            Ok(n) => {
                self.pos += n as u64;
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                Ok(0).and_then(|_: usize| self.read_data(buf))
            }
            Err(e) => Err(ArchiveError::Read {
                offset: self.pos,
                source: e,
            }),
        }
    }

    fn read_extension(&mut self, size: u64, offset: u64) -> Result<Vec<u8>, ArchiveError> {
        if size > MAX_EXTENSION {
            return Err(ArchiveError::Corrupt {
                offset,
                fault: Fault::ExtensionTooBig(size),
            });
        }
        let mut data = vec![0u8; size as usize];
        self.read_exact_at(&mut data, "an extension header")?;
        self.skip(pad(size), "an extension header's padding")?;
        Ok(data)
    }

    /// The next member, or `None` after the end-of-archive marker. Unread data of the
    /// previous member is skipped.
    pub fn next_member(&mut self) -> Result<Option<Member>, ArchiveError> {
        if self.ended {
            return Ok(None);
        }
        let rest = self
            .remaining
            .checked_add(self.padding)
            .ok_or(ArchiveError::Corrupt {
                offset: self.pos,
                fault: Fault::SizeOverflows,
            })?;
        self.skip(rest, "a member's data")?;
        self.remaining = 0;
        self.padding = 0;
        let mut local: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pending_ext = false;
        let mut local_bytes = 0u64;
        loop {
            let offset = self.pos;
            let mut block = [0u8; 512];
            let got = read_up_to(&mut self.inner, &mut block, offset)?;
            self.pos += got as u64;
            if got < 512 && self.after_end && block[..got].iter().all(|&b| b == 0) {
                self.ended = true;
                return Ok(None);
            }
            // A first block shorter than a header that does not even carry ustar's magic is
            // some other file (a text file given by mistake), not a cut archive.
            if got < 512 && offset == 0 && got > 0 && block.get(257..262) != Some(b"ustar") {
                return Err(ArchiveError::Corrupt {
                    offset,
                    fault: Fault::NotTar,
                });
            }
            if got < 512 {
                let cut = if got == 0 && offset == 0 {
                    Cut::NoHeader
                } else if got == 0 {
                    Cut::NoEndMarker
                } else {
                    Cut::Inside("a header")
                };
                return Err(ArchiveError::Truncated { offset, cut });
            }
            if block.iter().all(|&b| b == 0) {
                if pending_ext {
                    return Err(ArchiveError::Corrupt {
                        offset,
                        fault: Fault::OrphanExtension,
                    });
                }
                // GNU tar writes two zero blocks; one followed by the end of input is accepted.
                // What follows them is read on, as `tar --ignore-zeros` (systemd-import's way)
                // does: concatenated archives are imported whole.
                self.after_end = true;
                continue;
            }
            if self.after_end && check_sum(&block, offset).is_err() {
                return Err(ArchiveError::Corrupt {
                    offset,
                    fault: Fault::GarbageAfterEnd,
                });
            }
            check_sum(&block, offset)?;
            self.after_end = false;
            let size = num(&block[124..136], offset, "size")?;
            let typ = block[156];
            if matches!(typ, b'x' | b'X' | b'g' | b'L' | b'K') {
                local_bytes = local_bytes.saturating_add(size);
                let global: usize = self.global.iter().map(|(k, v)| k.len() + v.len()).sum();
                if local_bytes.saturating_add(global as u64) > MAX_EXTENSION {
                    return Err(ArchiveError::Corrupt {
                        offset,
                        fault: Fault::ExtensionsExceed(MAX_EXTENSION),
                    });
                }
            }
            match typ {
                b'x' | b'X' => {
                    let data = self.read_extension(size, offset)?;
                    let recs = pax::parse(&data)
                        .map_err(|what| ArchiveError::Malformed { offset, what })?;
                    local.extend(recs);
                    pending_ext = true;
                    continue;
                }
                b'g' => {
                    let data = self.read_extension(size, offset)?;
                    let recs = pax::parse(&data)
                        .map_err(|what| ArchiveError::Malformed { offset, what })?;
                    for (k, v) in recs {
                        self.global.retain(|(gk, _)| *gk != k);
                        self.global.push((k, v));
                    }
                    continue;
                }
                b'L' | b'K' => {
                    let mut data = self.read_extension(size, offset)?;
                    // A C string: GNU tar reads the name up to its first NUL.
                    if let Some(nul) = data.iter().position(|&b| b == 0) {
                        data.truncate(nul);
                    }
                    if typ == b'L' {
                        long_name = Some(data)
                    } else {
                        long_link = Some(data)
                    }
                    pending_ext = true;
                    continue;
                }
                _ => {}
            }
            let mut m = member(&block, typ, size, offset, long_name, long_link)?;
            // PAX records override what the header says; global ones sit under local ones.
            let records: Vec<&(Vec<u8>, Vec<u8>)> =
                self.global.iter().chain(local.iter()).collect();
            let mut stored = apply_pax(&mut m, &records, size, offset)?;
            let pax_sparse_1 = is_pax_sparse_1(&records);
            drop(records);
            // A trailing slash on the real name (after PAX `path` and GNU long names, not on
            // the 100-byte field, which Python's tarfile cuts anywhere) marks a directory, as
            // with GNU tar.
            if matches!(typ, b'0' | 0 | b'7') && m.path.last() == Some(&b'/') {
                m.kind = Kind::Dir;
                m.sparse = None;
            }
            if m.kind == Kind::Dir {
                while m.path.len() > 1 && m.path.last() == Some(&b'/') {
                    m.path.pop();
                }
            }
            // Only regular files (and GNU dumpdirs) carry data; GNU tar, libarchive and Python
            // ignore the size of any other member, which old writers set for directories.
            if m.kind != Kind::File && typ != b'D' {
                stored = 0;
            }
            if typ == b'S' {
                let (map, real) = sparse::read_old_gnu(self, &block, offset)?;
                m.sparse = Some(map);
                m.size = real;
            }
            self.remaining = stored;
            self.padding = pad(stored);
            if m.kind != Kind::File && m.sparse.is_none() {
                m.size = 0;
            }
            if pax_sparse_1 && m.kind == Kind::File {
                m.sparse = Some(sparse::read_pax_1_map(self, offset)?);
            }
            if let Some(map) = &m.sparse {
                sparse::check_map(map, m.size, self.remaining, offset)?;
            }
            return Ok(Some(m));
        }
    }
}

fn member(
    block: &[u8; 512],
    typ: u8,
    size: u64,
    offset: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
) -> Result<Member, ArchiveError> {
    let is_ustar = &block[257..263] == b"ustar\0";
    let path = long_name.unwrap_or_else(|| {
        let name = cstr(&block[0..100]);
        if is_ustar && block[345] != 0 {
            let mut p = cstr(&block[345..500]).to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            p
        } else {
            name.to_vec()
        }
    });
    let link = long_link.unwrap_or_else(|| cstr(&block[157..257]).to_vec());
    let kind = match typ {
        b'0' | 0 | b'7' | b'S' => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' | b'D' => Kind::Dir,
        b'6' => Kind::Fifo,
        other => {
            return Err(ArchiveError::Corrupt {
                offset,
                fault: Fault::UnsupportedType {
                    member: shown(&path),
                    typ: other as char,
                },
            })
        }
    };
    let field = |r: std::ops::Range<usize>, what: &'static str| num(&block[r], offset, what);
    let (major, minor) = if matches!(kind, Kind::Char | Kind::Block) {
        (
            field(329..337, "device major")? as u32,
            field(337..345, "device minor")? as u32,
        )
    } else {
        (0, 0)
    };
    Ok(Member {
        kind,
        path,
        link,
        mode: (field(100..108, "mode")? & 0o7777) as u32,
        uid: field(108..116, "uid")?,
        gid: field(116..124, "gid")?,
        mtime: (signed_num(&block[136..148], offset)?, 0),
        atime: None,
        size,
        sparse: None,
        dev: (major, minor),
        xattrs: Vec::new(),
        acl_access: None,
        acl_default: None,
        offset,
    })
}

fn is_pax_sparse_1(records: &[&(Vec<u8>, Vec<u8>)]) -> bool {
    records
        .iter()
        .any(|(k, v)| k == b"GNU.sparse.major" && v == b"1")
}

/// Applies PAX records to `m`; returns how many data bytes the member stores in the archive.
fn apply_pax(
    m: &mut Member,
    records: &[&(Vec<u8>, Vec<u8>)],
    header_size: u64,
    offset: u64,
) -> Result<u64, ArchiveError> {
    let bad = |k: &[u8]| ArchiveError::Corrupt {
        offset,
        fault: Fault::PaxValue(shown(k)),
    };
    let number = |k: &[u8], v: &[u8]| -> Result<u64, ArchiveError> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(k))
    };
    let mut stored = header_size;
    let mut sparse_name = None;
    let mut real_size = None;
    let mut old_map: Vec<u64> = Vec::new();
    for (k, v) in records.iter().copied() {
        match k.as_slice() {
            b"path" => m.path = v.clone(),
            b"linkpath" => m.link = v.clone(),
            b"size" => stored = number(k, v)?,
            b"uid" => m.uid = number(k, v)?,
            b"gid" => m.gid = number(k, v)?,
            b"mtime" => m.mtime = pax::parse_time(v).ok_or_else(|| bad(k))?,
            b"atime" => m.atime = Some(pax::parse_time(v).ok_or_else(|| bad(k))?),
            b"SCHILY.devmajor" => m.dev.0 = number(k, v)? as u32,
            b"SCHILY.devminor" => m.dev.1 = number(k, v)? as u32,
            b"SCHILY.acl.access" => m.acl_access = Some(v.clone()),
            b"SCHILY.acl.default" => m.acl_default = Some(v.clone()),
            b"GNU.sparse.name" => sparse_name = Some(v.clone()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => real_size = Some(number(k, v)?),
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                if old_map.len() >= 2 * sparse::MAX_SEGMENTS {
                    return Err(sparse::too_many(offset));
                }
                old_map.push(number(k, v)?)
            }
            b"GNU.sparse.map" => {
                for part in v.split(|&b| b == b',') {
                    if old_map.len() >= 2 * sparse::MAX_SEGMENTS {
                        return Err(sparse::too_many(offset));
                    }
                    old_map.push(number(k, part)?);
                }
            }
            _ => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    let name = pax::decode_xattr_name(name);
                    // A later record for the same name wins, as in GNU tar.
                    m.xattrs.retain(|(n, _)| *n != name);
                    m.xattrs.push((name, v.clone()));
                }
            }
        }
    }
    if let Some(name) = sparse_name {
        m.path = name;
    }
    if let Some(real) = real_size {
        if m.kind == Kind::File {
            m.size = real;
            if !old_map.is_empty() {
                if old_map.len() % 2 != 0 {
                    return Err(bad(b"GNU.sparse.map"));
                }
                m.sparse = Some(old_map.chunks(2).map(|c| (c[0], c[1])).collect());
            } else {
                m.sparse = Some(Vec::new()); // version 1.0: the map is in the data, read next
            }
        }
    } else {
        m.size = stored;
    }
    Ok(stored)
}

/// Reads into `buf` until it is full or `input` ends, and says how much it read; `offset` is
/// where `buf` starts in the input, for the error.
pub(super) fn read_up_to(
    input: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
) -> Result<usize, ArchiveError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(ArchiveError::Read {
                    offset: offset + got as u64,
                    source: e,
                })
            }
        }
    }
    Ok(got)
}

fn pad(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

impl<R: Read> TarReader<R> {
    /// Reads the rest of the input after the end-of-archive marker (GNU tar pads to 10 KiB
    /// records), so that a decoder sees the whole stream and can check its trailer.
    pub(crate) fn drain(&mut self) -> Result<(), ArchiveError> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ArchiveError::Read {
                        offset: self.pos,
                        source: e,
                    })
                }
            }
        }
    }

    pub(crate) fn read_exact_data(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), ArchiveError> {
        if (buf.len() as u64) > self.remaining {
            return Err(ArchiveError::Corrupt {
                offset: self.pos,
                fault: Fault::PastMemberData(what),
            });
        }
        self.read_exact_at(buf, what)?;
        self.remaining -= buf.len() as u64;
        Ok(())
    }

    pub(crate) fn raw_block(&mut self, what: &'static str) -> Result<[u8; 512], ArchiveError> {
        let mut b = [0u8; 512];
        self.read_exact_at(&mut b, what)?;
        Ok(b)
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.remaining
    }
}
