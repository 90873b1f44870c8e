//! The safe extractor: restores a tar stream under a root directory with full metadata and
//! guarantees that nothing outside the root is created, modified, chmodded or linked to,
//! whatever the archive says. Paths with `..` or a leading `/` are refused outright; every
//! other path is resolved inside the root (see [`super::inroot`]); in-root directory symlinks
//! are followed like `tar --keep-directory-symlink` (merged /usr: `./bin/x` with `bin -> usr/bin`).
//!
//! Order per member: create (after removing a non-directory in the way) → owner → mode →
//! xattrs and ACLs (security.capability last: chown clears it) → times. Directory metadata is
//! applied at the end, deepest first, so that restrictive modes, default ACLs and mtimes are not
//! disturbed by the directory's contents being created.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use super::acl;
use super::deferred::{Deferred, DrainError};
use super::error::{shown, Fault, Refusal};
use super::reader::{Kind, Member, TarReader};
use super::writers::{self, FileJob, Restore, WriterPool};
use super::ArchiveError;
use crate::fs::Metadata;
use crate::fs::{self as inroot, Root};

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Apply the archive's numeric owners (needs root). Off: files belong to the extractor.
    pub(crate) chown: bool,
    /// Restore extended attributes (SCHILY.xattr.*).
    pub(crate) xattrs: bool,
    /// Restore POSIX ACLs given as text (SCHILY.acl.access/default).
    pub(crate) acls: bool,
    /// Collect every member's path (relative, without "./") in [`ExtractStats::paths`].
    pub(crate) record_paths: bool,
    /// Give the root directory the metadata of the archive's `./` entry. Off for unpacking
    /// packages into an existing tree, where `/` is not the package's to change (as with dpkg).
    pub(crate) root_metadata: bool,
    /// Members written under another path (relative, without "./", as in [`ExtractStats::paths`],
    /// which still records the archive's path): dpkg's `NAME.dpkg-new` for a new conffile.
    pub(crate) divert: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Writer threads for the data and metadata of small files (see [`super::writers`]); 0
    /// writes everything on the reading thread (for callers that already extract in parallel).
    pub(crate) writers: usize,
    /// Start each file's writeback as soon as its data is written, so that the disk writes
    /// while the rest is extracted and a `syncfs` after the extraction has less to wait for.
    pub(crate) writeback: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            chown: true,
            xattrs: true,
            acls: true,
            record_paths: false,
            root_metadata: true,
            divert: std::collections::HashMap::new(),
            writers: 0,
            writeback: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct ExtractStats {
    pub(crate) members: u64,
    pub(crate) files: u64,
    pub(crate) dirs: u64,
    pub(crate) symlinks: u64,
    pub(crate) hardlinks: u64,
    pub(crate) specials: u64,
    /// Bytes of file data written.
    pub(crate) bytes: u64,
    /// Uncompressed archive bytes read.
    pub(crate) archive_bytes: u64,
    pub(crate) paths: Vec<Vec<u8>>,
    /// Non-fatal problems (an xattr the filesystem does not support), at most 100.
    pub(crate) warnings: Vec<String>,
}

/// Extracts `reader` (an uncompressed tar stream) under the directory `root`.
pub fn extract(
    reader: impl Read,
    root: &Path,
    opts: &ExtractOptions,
    progress: Option<&dyn Fn(u64)>,
) -> Result<ExtractStats, ArchiveError> {
    let fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ArchiveError::fs("open the extraction root", root, e))?;
    extract_at(reader, fd, opts, progress)
}

/// Like [`extract`], with the root given as an open directory.
fn extract_at(
    reader: impl Read,
    root_fd: OwnedFd,
    opts: &ExtractOptions,
    progress: Option<&dyn Fn(u64)>,
) -> Result<ExtractStats, ArchiveError> {
    let mut x = Extractor {
        root: Root::new(root_fd),
        opts,
        stats: ExtractStats::default(),
        buf: vec![0u8; 1 << 20],
        dirs: Deferred::new(),
        pool: match opts.writers {
            0 => None,
            n => Some(WriterPool::new(n, opts.writeback)?),
        },
    };
    let mut tar = TarReader::new(BufReader::with_capacity(256 << 10, reader));
    while let Some(m) = tar.next_member()? {
        x.member(&mut tar, m)?;
        if let Some(p) = progress {
            p(tar.position());
        }
    }
    tar.drain()?;
    if let Some(pool) = x.pool.take() {
        for w in pool.finish()? {
            x.warn(w);
        }
    }
    x.finish_dirs()?;
    x.stats.archive_bytes = tar.position();
    Ok(x.stats)
}

struct Extractor<'a> {
    root: Root,
    opts: &'a ExtractOptions,
    stats: ExtractStats,
    buf: Vec<u8>,
    dirs: Deferred,
    pool: Option<WriterPool>,
}

fn refused(m: &Member, refusal: Refusal) -> ArchiveError {
    ArchiveError::Unsafe {
        member: String::from_utf8_lossy(&m.path).into_owned(),
        offset: m.offset,
        refusal,
    }
}

/// Splits a member path into components, refusing what could mean "outside".
fn components<'p>(
    path: &'p [u8],
    m: &Member,
    part: &'static str,
) -> Result<Vec<&'p [u8]>, ArchiveError> {
    let refuse = |refusal: Refusal| refused(m, refusal);
    if path.is_empty() {
        return Err(refuse(Refusal::Empty { part }));
    }
    if path.starts_with(b"/") {
        return Err(refuse(Refusal::Absolute { part }));
    }
    if path.contains(&0) {
        return Err(refuse(Refusal::Nul { part }));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refuse(Refusal::DotDot { part })),
            _ => out.push(c),
        }
    }
    Ok(out)
}

impl Extractor<'_> {
    fn warn(&mut self, msg: String) {
        if self.stats.warnings.len() < 100 {
            self.stats.warnings.push(msg);
        }
    }

    fn member<R: Read>(&mut self, tar: &mut TarReader<R>, m: Member) -> Result<(), ArchiveError> {
        self.stats.members += 1;
        let mut path = m.path.clone();
        let mut comps = components(&path, &m, "path")?;
        let mut rel = inroot::join(&comps);
        if self.opts.record_paths {
            self.stats.paths.push(rel.clone());
        }
        if let Some(to) = self.opts.divert.get(&rel) {
            path = to.clone();
            comps = components(&path, &m, "diverted path")?;
            rel = inroot::join(&comps);
        }
        if comps.is_empty() {
            if m.kind != Kind::Dir {
                return Err(refused(&m, Refusal::RootNotDir));
            }
            if self.opts.root_metadata {
                self.defer_dir(&rel, &m)?;
            }
            return Ok(());
        }
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        match m.kind {
            Kind::Dir => {
                self.stats.dirs += 1;
                let parent = self
                    .root
                    .parent(&comps, true)
                    .and_then(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 0))
                    .map_err(|e| fs_err("create the parent of", &rel, e))?;
                let mode = Mode::from_raw_mode(0o700);
                let made = match rustix::fs::mkdirat(&parent, name, mode) {
                    Err(Errno::EXIST) if inroot::is_dir(parent.as_fd(), name) => Ok(()),
                    // A symlink to a directory inside the root stays, as with tar's
                    // --keep-directory-symlink and dpkg: .deb data lists ./bin/ while the
                    // root has bin -> usr/bin. Its target's metadata is left alone.
                    Err(Errno::EXIST) if self.root.open_dir(&rel, OFlags::PATH).is_ok() => Ok(()),
                    Err(Errno::EXIST) => inroot::remove_existing(parent.as_fd(), name)
                        .and_then(|_| rustix::fs::mkdirat(&parent, name, mode)),
                    other => other,
                };
                made.map_err(|e| fs_err("create directory", &rel, e))?;
                self.root.invalidate();
                self.defer_dir(&rel, &m)?;
            }
            Kind::File => {
                self.stats.files += 1;
                self.file(tar, &comps, &rel, &m)?;
            }
            Kind::Symlink => {
                self.stats.symlinks += 1;
                let parent = self
                    .root
                    .parent(&comps, true)
                    .map_err(|e| fs_err("create the parent of", &rel, e))?;
                let target = OsStr::from_bytes(&m.link);
                let made = match rustix::fs::symlinkat(target, parent, name) {
                    Err(Errno::EXIST) => inroot::remove_existing(parent, name)
                        .and_then(|_| rustix::fs::symlinkat(target, parent, name)),
                    other => other,
                };
                made.map_err(|e| fs_err("create symlink", &rel, e))?;
                let parent = rustix::io::fcntl_dupfd_cloexec(parent, 0)
                    .map_err(|e| fs_err("open the parent of", &rel, e))?;
                self.root.invalidate();
                self.meta_at(parent.as_fd(), name, &rel, &m)?;
            }
            Kind::HardLink => {
                self.stats.hardlinks += 1;
                self.hardlink(&comps, &rel, &m)?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                self.stats.specials += 1;
                let ft = match m.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(m.dev.0, m.dev.1);
                let parent = self
                    .root
                    .parent(&comps, true)
                    .map_err(|e| fs_err("create the parent of", &rel, e))?;
                let mode = Mode::from_raw_mode(0o600);
                let made = match rustix::fs::mknodat(parent, name, ft, mode, dev) {
                    Err(Errno::EXIST) => inroot::remove_existing(parent, name)
                        .and_then(|_| rustix::fs::mknodat(parent, name, ft, mode, dev)),
                    other => other,
                };
                made.map_err(|e| fs_err("create device node or FIFO", &rel, e))?;
                let parent = rustix::io::fcntl_dupfd_cloexec(parent, 0)
                    .map_err(|e| fs_err("open the parent of", &rel, e))?;
                self.root.invalidate();
                self.meta_at(parent.as_fd(), name, &rel, &m)?;
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        comps: &[&[u8]],
        rel: &[u8],
        m: &Member,
    ) -> Result<(), ArchiveError> {
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        let parent = self
            .root
            .parent(comps, true)
            .map_err(|e| fs_err("create the parent of", rel, e))?;
        let (fd, replaced) = match rustix::fs::openat(parent, name, flags, mode) {
            Err(Errno::EXIST) => {
                let r = inroot::remove_existing(parent, name)
                    .and_then(|_| rustix::fs::openat(parent, name, flags, mode));
                (r, true)
            }
            other => (other, false),
        };
        let fd = fd.map_err(|e| fs_err("create file", rel, e))?;
        if replaced {
            self.root.invalidate();
        }
        let mut file = File::from(fd);
        if m.sparse.is_none() && m.size <= writers::POOLED_MAX && self.pool.is_some() {
            let mut data = vec![0u8; m.size as usize];
            tar.read_exact_data(&mut data, "a file's data")?;
            self.stats.bytes += m.size;
            let restore = self.restore_of(rel, m)?;
            if let Some(pool) = &mut self.pool {
                for w in pool.submit(FileJob {
                    file,
                    data,
                    restore,
                })? {
                    self.warn(w);
                }
            }
            return Ok(());
        }
        let io = |e: std::io::Error| fs_err("write", rel, e);
        match &m.sparse {
            None => {
                let mut left = m.size;
                while left > 0 {
                    let n = tar.read_data(&mut self.buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(io)?;
                    left -= n as u64;
                }
            }
            Some(map) => {
                for &(off, len) in map {
                    file.seek(SeekFrom::Start(off)).map_err(io)?;
                    let mut left = len;
                    while left > 0 {
                        let k = (left as usize).min(self.buf.len());
                        tar.read_exact_data(&mut self.buf[..k], "a sparse segment")?;
                        file.write_all(&self.buf[..k]).map_err(io)?;
                        left -= k as u64;
                    }
                }
                file.set_len(m.size).map_err(io)?;
            }
        }
        self.stats.bytes += m.size;
        if self.opts.writeback {
            // A hint: where it fails, the sync does the writing.
            let _ = crate::sys::writeback::start(&file, 0, 0);
        }
        self.meta_fd(file.as_fd(), rel, m)
    }

    fn hardlink(&mut self, comps: &[&[u8]], rel: &[u8], m: &Member) -> Result<(), ArchiveError> {
        let tcomps = components(&m.link, m, "hard-link target")?;
        if tcomps.is_empty() {
            return Err(refused(m, Refusal::LinkToRoot));
        }
        if tcomps == comps {
            return Ok(());
        }
        let trel = inroot::join(&tcomps);
        let tparent = self
            .root
            .parent(&tcomps, false)
            .and_then(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 0))
            .map_err(|e| fs_err("find the hard-link target", &trel, e))?;
        let tname = OsStr::from_bytes(tcomps[tcomps.len() - 1]);
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        let parent = self
            .root
            .parent(comps, true)
            .map_err(|e| fs_err("create the parent of", rel, e))?;
        // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to.
        let made = match rustix::fs::linkat(&tparent, tname, parent, name, AtFlags::empty()) {
            Err(Errno::EXIST) => inroot::remove_existing(parent, name)
                .and_then(|_| rustix::fs::linkat(&tparent, tname, parent, name, AtFlags::empty())),
            other => other,
        };
        self.root.invalidate();
        made.map_err(|e| {
            fs_err(
                "hard-link",
                rel,
                std::io::Error::other(format!("to {}: {e}", shown(&trel))),
            )
        })
    }

    /// The xattrs to set, in order: ACLs from text (unless the archive also carries them as
    /// raw xattrs), the others, security.capability last.
    fn xattr_list(&mut self, m: &Member) -> Result<super::pax::Records, ArchiveError> {
        let mut list = Vec::new();
        if self.opts.acls {
            for (text, key) in [
                (&m.acl_access, "system.posix_acl_access"),
                (&m.acl_default, "system.posix_acl_default"),
            ] {
                let Some(text) = text else { continue };
                if m.xattrs.iter().any(|(n, _)| n == key.as_bytes()) && self.opts.xattrs {
                    continue;
                }
                let bin = acl::text_to_xattr(text, &acl::host_lookup).map_err(|what| {
                    ArchiveError::Malformed {
                        offset: m.offset,
                        what,
                    }
                })?;
                // GNU tar stores an ACL that only mirrors the mode bits; setting it is a no-op.
                if bin.len() > 4 + 3 * 8 || key.ends_with("default") {
                    list.push((key.as_bytes().to_vec(), bin));
                }
            }
        }
        if self.opts.xattrs {
            let cap = b"security.capability".as_slice();
            list.extend(m.xattrs.iter().filter(|(n, _)| n != cap).cloned());
            list.extend(m.xattrs.iter().filter(|(n, _)| n == cap).cloned());
        }
        Ok(list)
    }

    /// What to restore on member `m` at `rel`: ids checked, xattrs in order.
    fn restore_of(&mut self, rel: &[u8], m: &Member) -> Result<Restore, ArchiveError> {
        Ok(Restore {
            meta: Metadata {
                owner: if self.opts.chown { Some(ids(m)?) } else { None },
                // A symlink has no mode of its own (and chmodat would follow it).
                mode: (m.kind != Kind::Symlink).then_some(m.mode),
                xattrs: self.xattr_list(m)?,
                mtime: m.mtime,
                atime: None,
            },
            rel: rel.to_vec(),
            member: m.path.clone(),
            offset: m.offset,
        })
    }

    fn meta_fd(&mut self, fd: BorrowedFd<'_>, rel: &[u8], m: &Member) -> Result<(), ArchiveError> {
        let restore = self.restore_of(rel, m)?;
        let mut warnings = Vec::new();
        let done = restore.on_fd(fd, &mut warnings);
        for w in warnings {
            self.warn(w);
        }
        done
    }

    /// Metadata for symlinks, devices and FIFOs, by name, never following the name.
    fn meta_at(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &[u8],
        m: &Member,
    ) -> Result<(), ArchiveError> {
        let restore = self.restore_of(rel, m)?;
        let mut warnings = Vec::new();
        let done = restore.at(parent, name, &mut warnings);
        for w in warnings {
            self.warn(w);
        }
        done
    }

    fn defer_dir(&mut self, rel: &[u8], m: &Member) -> Result<(), ArchiveError> {
        self.dirs
            .push(self.root.fd(), rel, m)
            .map_err(|e| fs_err("record the metadata of directory", rel, e))
    }

    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        let dirs = std::mem::replace(&mut self.dirs, Deferred::new());
        // Deepest first; a directory listed twice gets its entries in archive order, so the
        // later one's owner, mode and times win.
        let done = dirs.drain(|rel, m| {
            let fd = match self.root.open_dir(&rel, OFlags::RDONLY | OFlags::NOFOLLOW) {
                Ok(fd) => fd,
                // Replaced by a later member (a symlink or file): its metadata no longer applies.
                Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT) => return Ok(()),
                Err(e) => return Err(fs_err("open directory", &rel, e)),
            };
            self.meta_fd(fd.as_fd(), &rel, &m)
        });
        match done {
            Ok(()) => Ok(()),
            Err(DrainError::Apply(e)) => Err(e),
            Err(DrainError::Io(e)) => Err(fs_err(
                "read back the deferred directory metadata under",
                b"",
                e,
            )),
        }
    }
}

/// A failure on member `rel` (its path in the tree), named as the archive names it.
fn fs_err(op: &'static str, rel: &[u8], e: impl Into<std::io::Error>) -> ArchiveError {
    let member = if rel.is_empty() {
        "the root directory".to_string()
    } else {
        format!("member {}", shown(rel))
    };
    ArchiveError::Member {
        op,
        member,
        source: e.into(),
    }
}

/// The owner to set; `None` for an id of 4294967295 (-1), which chown takes as "leave as is",
/// as GNU tar does when an archive carries it.
fn ids(m: &Member) -> Result<(Option<Uid>, Option<Gid>), ArchiveError> {
    let bad = || ArchiveError::Corrupt {
        offset: m.offset,
        fault: Fault::OwnerOutOfRange {
            uid: m.uid,
            gid: m.gid,
        },
    };
    let uid = u32::try_from(m.uid).map_err(|_| bad())?;
    let gid = u32::try_from(m.gid).map_err(|_| bad())?;
    Ok((
        (uid != u32::MAX).then(|| Uid::from_raw(uid)),
        (gid != u32::MAX).then(|| Gid::from_raw(gid)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{write_tree, WriteOptions};

    /// What bootstrap relies on for .deb data: no chown, the list of paths, and files written
    /// into an existing tree whose bin is a symlink to usr/bin.
    #[test]
    fn deb_style_extraction_into_an_existing_root() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/ls"), b"ls").unwrap();
        let mut tar = Vec::new();
        write_tree(&src, &mut tar, &WriteOptions::default(), &mut |_| {}, None).unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::fs::write(root.join("usr/bin/ls"), b"old").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
        let opts = ExtractOptions {
            chown: false,
            record_paths: true,
            root_metadata: false,
            ..ExtractOptions::default()
        };
        let stats = extract(&tar[..], &root, &opts, None).unwrap();
        assert_eq!(
            stats.paths,
            [b"".to_vec(), b"bin".to_vec(), b"bin/ls".to_vec()]
        );
        assert_eq!(std::fs::read(root.join("usr/bin/ls")).unwrap(), b"ls");
        assert!(root
            .join("bin")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!((stats.files, stats.dirs, stats.bytes), (1, 1, 2));
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o711, "the root keeps its own metadata");
    }
}
