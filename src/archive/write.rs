//! Writes a directory tree as a pax tar stream that GNU tar restores faithfully
//! (`tar --xattrs --xattrs-include='*' --acls -xpf`): numeric owners, modes with
//! setuid/setgid/sticky, sub-second mtimes, hard links stored once (by device and inode),
//! symlinks, devices, FIFOs, every xattr with binary values, POSIX ACLs as SCHILY.acl.* text,
//! sparse files as GNU PAX sparse 1.0, files over 8 GiB, long and non-UTF-8 names. Sockets are
//! skipped with a warning. Memory stays bounded: one data buffer and one open fd per level.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::{acl, pax, sparse, ArchiveError};
use crate::fs::proc_path;

#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    pub(crate) xattrs: bool,
    pub(crate) acls: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            xattrs: true,
            acls: true,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct WriteStats {
    pub(crate) members: u64,
    /// File data bytes read from the tree.
    pub(crate) bytes: u64,
    pub(crate) skipped: u64,
}

use super::header::{fill, split_name, OCTAL_ID_MAX, OCTAL_SIZE_MAX};

/// Writes the tree under `root` (as "./...") to `out`, ending with the end-of-archive marker.
/// `warn` hears about what was skipped or changed while being read; `progress` gets the
/// number of file bytes written so far.
pub(crate) fn write_tree<W: Write>(
    root: &Path,
    out: &mut W,
    opts: &WriteOptions,
    warn: &mut dyn FnMut(String),
    progress: Option<&dyn Fn(u64)>,
) -> Result<WriteStats, ArchiveError> {
    let fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::fs("open", root, e))?;
    let mut w = TreeWriter {
        out,
        opts,
        warn,
        progress,
        root: root.to_path_buf(),
        stats: WriteStats::default(),
        links: HashMap::new(),
        buf: vec![0u8; 1 << 20],
        xnames: Vec::new(),
        xval: Vec::new(),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| ArchiveError::fs("stat", root, e))?;
    let xattrs = w.xattrs_fd(fd.as_fd(), b"./")?;
    w.header(b"./", b'5', &st, 0, b"", xattrs)?;
    w.walk(fd, b"./".to_vec())?;
    w.out
        .write_all(&[0u8; 1024])
        .map_err(|source| ArchiveError::Write { source })?;
    Ok(w.stats)
}

struct TreeWriter<'a, W: Write> {
    out: &'a mut W,
    opts: &'a WriteOptions,
    warn: &'a mut dyn FnMut(String),
    progress: Option<&'a dyn Fn(u64)>,
    root: PathBuf,
    stats: WriteStats,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    xnames: Vec<u8>,
    xval: Vec<u8>,
}

use super::pax::Records;

#[derive(Clone, Copy)]
enum XattrSource<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

impl<W: Write> TreeWriter<'_, W> {
    fn path(&self, rel: &[u8]) -> PathBuf {
        self.root
            .join(OsStr::from_bytes(rel.strip_prefix(b"./").unwrap_or(rel)))
    }

    fn write(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        self.out
            .write_all(data)
            .map_err(|source| ArchiveError::Write { source })
    }

    fn walk(&mut self, dir: OwnedFd, prefix: Vec<u8>) -> Result<(), ArchiveError> {
        let mut names: Vec<OsString> = Vec::new();
        let mut d = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| ArchiveError::fs("read directory", self.path(&prefix), e))?;
        while let Some(ent) = d.read() {
            let ent = ent.map_err(|e| ArchiveError::fs("read directory", self.path(&prefix), e))?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        drop(d);
        names.sort();
        for name in names {
            let mut rel = prefix.clone();
            rel.extend_from_slice(name.as_bytes());
            let st = match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => {
                    let msg = format!(
                        "{}: vanished while being archived",
                        self.path(&rel).display()
                    );
                    (self.warn)(msg);
                    continue;
                }
                Err(e) => return Err(ArchiveError::fs("stat", self.path(&rel), e)),
            };
            self.entry(dir.as_fd(), &name, rel, &st)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        mut rel: Vec<u8>,
        st: &Stat,
    ) -> Result<(), ArchiveError> {
        let ft = FileType::from_raw_mode(st.st_mode);
        let err = |op, e: rustix::io::Errno, me: &Self| ArchiveError::fs(op, me.path(&rel), e);
        match ft {
            FileType::Directory => {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| err("open directory", e, self))?;
                rel.push(b'/');
                let x = self.xattrs_fd(fd.as_fd(), &rel)?;
                self.header(&rel, b'5', st, 0, b"", x)?;
                self.walk(fd, rel)
            }
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        return self.header(&rel, b'1', st, 0, &first, Vec::new());
                    }
                    self.links.insert(key, rel.clone());
                }
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
                let fd = rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty())
                    .or_else(|_| rustix::fs::openat(dir, name, flags, Mode::empty()))
                    .map_err(|e| err("open", e, self))?;
                self.file(fd, rel, st)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| err("read symlink", e, self))?;
                let x = self.xattrs_path(dir, name, &rel)?;
                self.header(&rel, b'2', st, 0, target.as_bytes(), x)
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let typ = match ft {
                    FileType::CharacterDevice => b'3',
                    FileType::BlockDevice => b'4',
                    _ => b'6',
                };
                let x = self.xattrs_path(dir, name, &rel)?;
                self.header(&rel, typ, st, 0, b"", x)
            }
            _ => {
                self.stats.skipped += 1;
                let msg = format!("{}: socket not archived", self.path(&rel).display());
                (self.warn)(msg);
                Ok(())
            }
        }
    }

    fn file(&mut self, fd: OwnedFd, rel: Vec<u8>, st: &Stat) -> Result<(), ArchiveError> {
        let size = st.st_size as u64;
        let mut x = self.xattrs_fd(fd.as_fd(), &rel)?;
        let map = if (st.st_blocks as u64) * 512 < size {
            sparse::data_map(&fd, size)
                .map_err(|e| ArchiveError::fs("find the holes of", self.path(&rel), e))?
        } else {
            None
        };
        let mut file = std::fs::File::from(fd);
        let Some(mut map) = map else {
            self.header(&rel, b'0', st, size, b"", x)?;
            return self.copy(&mut file, 0, size, &rel);
        };
        if map.last().is_none_or(|&(o, l)| o + l < size) {
            map.push((size, 0)); // GNU tar marks a trailing hole this way
        }
        let block = sparse::pax_1_map(&map);
        let stored = block.len() as u64 + map.iter().map(|s| s.1).sum::<u64>();
        x.push((b"GNU.sparse.major".to_vec(), b"1".to_vec()));
        x.push((b"GNU.sparse.minor".to_vec(), b"0".to_vec()));
        x.push((b"GNU.sparse.name".to_vec(), rel.clone()));
        x.push((
            b"GNU.sparse.realsize".to_vec(),
            size.to_string().into_bytes(),
        ));
        let base = rel.rsplit(|&b| b == b'/').next().unwrap_or(&rel);
        let mut fake = b"./GNUSparseFile.0/".to_vec();
        fake.extend_from_slice(&base[..base.len().min(80)]);
        self.header_named(&fake, None, b'0', st, stored, b"", x)?;
        self.write(&block)?;
        for (off, len) in map {
            self.copy(&mut file, off, len, &rel)?;
        }
        Ok(())
    }

    /// Copies `len` bytes from `off`; a file that shrank meanwhile is padded with zeros (the
    /// header already promised the length) and reported.
    fn copy(
        &mut self,
        file: &mut std::fs::File,
        off: u64,
        len: u64,
        rel: &[u8],
    ) -> Result<(), ArchiveError> {
        use std::io::{Seek, SeekFrom};
        if off != 0 {
            file.seek(SeekFrom::Start(off))
                .map_err(|e| ArchiveError::fs("seek", self.path(rel), e))?;
        }
        let mut left = len;
        while left > 0 {
            let k = (left as usize).min(self.buf.len());
            let n = match file.read(&mut self.buf[..k]) {
                Ok(0) => {
                    let msg = format!(
                        "{}: file shrank while being archived; padded with zeros",
                        self.path(rel).display()
                    );
                    (self.warn)(msg);
                    self.buf[..k].fill(0);
                    k
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::fs("read", self.path(rel), e)),
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(|source| ArchiveError::Write { source })?;
            left -= n as u64;
        }
        self.stats.bytes += len;
        if let Some(p) = self.progress {
            p(self.stats.bytes);
        }
        let pad = (512 - len % 512) % 512;
        self.write(&[0u8; 512][..pad as usize])
    }

    fn xattrs_fd(&mut self, fd: BorrowedFd<'_>, rel: &[u8]) -> Result<Records, ArchiveError> {
        if !self.opts.xattrs && !self.opts.acls {
            return Ok(Vec::new());
        }
        self.read_xattrs(XattrSource::Fd(fd), rel)
    }

    fn xattrs_path(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
    ) -> Result<Records, ArchiveError> {
        if !self.opts.xattrs {
            return Ok(Vec::new());
        }
        self.read_xattrs(XattrSource::Path(&proc_path(dir, name)), rel)
    }

    /// Lists and reads every xattr into the two reused 64 KiB buffers (the kernel's limit for
    /// a list and for one value), so a tree of small files costs no allocation per file.
    fn read_xattrs(&mut self, src: XattrSource<'_>, rel: &[u8]) -> Result<Records, ArchiveError> {
        let mut names = std::mem::take(&mut self.xnames);
        let mut val = std::mem::take(&mut self.xval);
        names.resize(64 << 10, 0);
        val.resize(64 << 10, 0);
        let listed = match src {
            XattrSource::Fd(fd) => rustix::fs::flistxattr(fd, &mut names[..]),
            XattrSource::Path(p) => rustix::fs::llistxattr(p, &mut names[..]),
        };
        let n = match listed {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => 0,
            Err(e) => return Err(ArchiveError::fs("list the xattrs of", self.path(rel), e)),
        };
        let mut out = Vec::new();
        for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let got = match src {
                XattrSource::Fd(fd) => {
                    rustix::fs::fgetxattr(fd, OsStr::from_bytes(name), &mut val[..])
                }
                XattrSource::Path(p) => {
                    rustix::fs::lgetxattr(p, OsStr::from_bytes(name), &mut val[..])
                }
            };
            match got {
                Ok(len) => out.push((name.to_vec(), val[..len].to_vec())),
                Err(rustix::io::Errno::NODATA) => continue,
                Err(e) => return Err(ArchiveError::fs("read the xattrs of", self.path(rel), e)),
            }
        }
        self.xnames = names;
        self.xval = val;
        Ok(self.records(out))
    }

    /// Xattrs to PAX records: ACLs also as GNU tar's text, as GNU tar itself writes them.
    fn records(&self, mut xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Records {
        xattrs.sort();
        let mut out = Vec::new();
        for (name, val) in xattrs {
            let acl_key: Option<&[u8]> = match name.as_slice() {
                b"system.posix_acl_access" => Some(b"SCHILY.acl.access"),
                b"system.posix_acl_default" => Some(b"SCHILY.acl.default"),
                _ => None,
            };
            if let (Some(key), true) = (acl_key, self.opts.acls) {
                if let Some(text) = acl::xattr_to_text(&val) {
                    out.push((key.to_vec(), text));
                }
            }
            if self.opts.xattrs {
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend(pax::encode_xattr_name(&name));
                out.push((key, val));
            }
        }
        out
    }

    fn header(
        &mut self,
        rel: &[u8],
        typ: u8,
        st: &Stat,
        size: u64,
        link: &[u8],
        x: Records,
    ) -> Result<(), ArchiveError> {
        self.header_named(rel, Some(rel), typ, st, size, link, x)
    }

    /// Writes a PAX header when needed, then the ustar header. `pax_path` None: `rel` is a
    /// placeholder name that must not become a PAX path (sparse 1.0 carries the real one).
    #[allow(clippy::too_many_arguments)]
    fn header_named(
        &mut self,
        rel: &[u8],
        pax_path: Option<&[u8]>,
        typ: u8,
        st: &Stat,
        size: u64,
        link: &[u8],
        mut x: Records,
    ) -> Result<(), ArchiveError> {
        self.stats.members += 1;
        let mut h = [0u8; 512];
        let mut rec = Vec::new();
        let (name_ok, prefix_split) = split_name(rel);
        if let (Some(_), false) = (pax_path, name_ok) {
            rec.push((b"path".to_vec(), rel.to_vec()));
        }
        if !link.is_empty() && (link.len() > 100 || !link.is_ascii()) {
            rec.push((b"linkpath".to_vec(), link.to_vec()));
        }
        // No "hdrcharset=BINARY" for non-UTF-8 names: GNU tar 1.34 warns about it and takes
        // the raw bytes without it.
        if size > OCTAL_SIZE_MAX {
            rec.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        let (uid, gid) = (st.st_uid as u64, st.st_gid as u64);
        if uid > OCTAL_ID_MAX {
            rec.push((b"uid".to_vec(), uid.to_string().into_bytes()));
        }
        if gid > OCTAL_ID_MAX {
            rec.push((b"gid".to_vec(), gid.to_string().into_bytes()));
        }
        let (secs, nsec) = (st.st_mtime, st.st_mtime_nsec as u32);
        if nsec != 0 || secs < 0 || secs as u64 > OCTAL_SIZE_MAX {
            rec.push((b"mtime".to_vec(), pax::format_time(secs, nsec).into_bytes()));
        }
        rec.append(&mut x);
        if !rec.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &rec {
                pax::push(&mut body, k, v);
            }
            let base = rel
                .trim_ascii_end()
                .rsplit(|&b| b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b".");
            let mut xname = b"./PaxHeaders/".to_vec();
            xname.extend(
                base.iter()
                    .take(80)
                    .map(|&b| if b.is_ascii_graphic() { b } else { b'_' }),
            );
            let mut xh = [0u8; 512];
            fill(
                &mut xh,
                &xname,
                &split_name(&xname).1,
                b'x',
                0o644,
                0,
                0,
                body.len() as u64,
                secs.max(0),
                b"",
                (0, 0),
            );
            self.write(&xh)?;
            let pad = (512 - body.len() % 512) % 512;
            body.resize(body.len() + pad, 0);
            self.write(&body)?;
        }
        let dev = if typ == b'3' || typ == b'4' {
            let r = st.st_rdev;
            (rustix::fs::major(r), rustix::fs::minor(r))
        } else {
            (0, 0)
        };
        let mode = st.st_mode & 0o7777;
        fill(
            &mut h,
            rel,
            &prefix_split,
            typ,
            mode,
            uid.min(OCTAL_ID_MAX),
            gid.min(OCTAL_ID_MAX),
            size,
            secs.clamp(0, OCTAL_SIZE_MAX as i64),
            link,
            dev,
        );
        self.write(&h)
    }
}
