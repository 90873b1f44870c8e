//! Full-fidelity tree copies for import-fs and clone: owners, modes (setuid, setgid,
//! sticky), nanosecond times, every xattr (POSIX ACLs and `security.capability` included),
//! hard links, symlinks, device nodes, FIFOs, sockets and sparse files, with file data
//! reflinked where the file system can. Written by hand because no crate copies all of
//! this: `fs_extra` and friends lose owners, xattrs, hard links and holes.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Mode, OFlags, SeekFrom, Stat, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;
use rustix::process::Gid;

use super::StoreError;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyStats {
    pub entries: u64,
    pub bytes: u64,
}

/// The xattr that must be set last: chown and chmod clear it, and a later xattr write must
/// not be refused because of it.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Copies the tree at `source` into the existing, empty directory `destination`, which takes
/// the source's own metadata too. `progress` is called with the bytes copied so far.
pub fn copy_tree(
    source: &Path,
    destination: &Path,
    progress: Option<&dyn Fn(u64)>,
) -> Result<CopyStats, StoreError> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let src = rfs::open(source, dir_flags, Mode::empty()).map_err(|e| StoreError::io(source, e))?;
    let dst = rfs::open(destination, dir_flags | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| StoreError::io(destination, e))?;
    let st = rfs::fstat(&src).map_err(|e| StoreError::io(source, e))?;
    let mut copier = Copier {
        source: source.to_path_buf(),
        destination: destination.to_path_buf(),
        dst_root: dst
            .try_clone()
            .map_err(|e| StoreError::io(destination, e))?,
        links: HashMap::new(),
        stats: CopyStats::default(),
        progress,
        names: vec![0; 64 * 1024],
        value: vec![0; 64 * 1024],
    };
    copier.copy_dir(&src, &dst, Path::new(""))?;
    copier.apply_fd_metadata(&src, &dst, &st, Path::new(""))?;
    Ok(copier.stats)
}

/// Copies one file's data (holes kept, reflinked where possible) and metadata; for raw images.
pub fn copy_file(
    source: &Path,
    destination: &Path,
    progress: Option<&dyn Fn(u64)>,
) -> Result<CopyStats, StoreError> {
    let src = rfs::open(source, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| StoreError::io(source, e))?;
    let dst = rfs::open(
        destination,
        OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| StoreError::io(destination, e))?;
    let st = rfs::fstat(&src).map_err(|e| StoreError::io(source, e))?;
    copy_data(&src, &dst, st.st_size as u64).map_err(|e| StoreError::io(destination, e))?;
    if let Some(progress) = progress {
        progress(st.st_size as u64);
    }
    let parent = destination.parent().unwrap_or(Path::new("/"));
    let mut copier = Copier {
        source: source.to_path_buf(),
        destination: parent.to_path_buf(),
        dst_root: dst
            .try_clone()
            .map_err(|e| StoreError::io(destination, e))?,
        links: HashMap::new(),
        stats: CopyStats::default(),
        progress: None,
        names: vec![0; 64 * 1024],
        value: vec![0; 64 * 1024],
    };
    copier.apply_fd_metadata(&src, &dst, &st, Path::new(""))?;
    Ok(CopyStats {
        entries: 1,
        bytes: st.st_size as u64,
    })
}

struct Copier<'a> {
    source: PathBuf,
    destination: PathBuf,
    dst_root: OwnedFd,
    /// First copy of each multiply-linked inode, by (device, inode), relative to the root.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
    progress: Option<&'a dyn Fn(u64)>,
    names: Vec<u8>,
    value: Vec<u8>,
}

impl Copier<'_> {
    fn copy_dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> Result<(), StoreError> {
        let mut dir = Dir::read_from(src).map_err(|e| self.src_err(rel, e))?;
        for entry in dir.by_ref() {
            let entry = entry.map_err(|e| self.src_err(rel, e))?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let child = rel.join(OsStr::from_bytes(name.to_bytes()));
            self.copy_entry(src, dst, name, &child)?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        name: &CStr,
        rel: &Path,
    ) -> Result<(), StoreError> {
        let st = rfs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.src_err(rel, e))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        self.stats.entries += 1;
        if file_type != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                return rfs::linkat(
                    &self.dst_root,
                    first.as_path(),
                    dst_dir,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| self.dst_err(rel, e));
            }
            self.links.insert(key, rel.to_path_buf());
        }
        match file_type {
            FileType::Directory => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let src = rfs::openat(src_dir, name, flags, Mode::empty())
                    .map_err(|e| self.src_err(rel, e))?;
                rfs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| self.dst_err(rel, e))?;
                let dst = rfs::openat(dst_dir, name, flags, Mode::empty())
                    .map_err(|e| self.dst_err(rel, e))?;
                self.copy_dir(&src, &dst, rel)?;
                // After the contents, so a read-only directory could be filled and its times stay.
                self.apply_fd_metadata(&src, &dst, &st, rel)
            }
            FileType::RegularFile => {
                let src = rfs::openat(
                    src_dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.src_err(rel, e))?;
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let dst = rfs::openat(dst_dir, name, flags, Mode::from_raw_mode(0o600))
                    .map_err(|e| self.dst_err(rel, e))?;
                copy_data(&src, &dst, st.st_size as u64).map_err(|e| self.dst_err(rel, e))?;
                self.stats.bytes += st.st_size as u64;
                if let Some(progress) = self.progress {
                    progress(self.stats.bytes);
                }
                self.apply_fd_metadata(&src, &dst, &st, rel)
            }
            FileType::Symlink => {
                let target =
                    rfs::readlinkat(src_dir, name, Vec::new()).map_err(|e| self.src_err(rel, e))?;
                rfs::symlinkat(target.as_c_str(), dst_dir, name)
                    .map_err(|e| self.dst_err(rel, e))?;
                self.apply_path_metadata(dst_dir, name, &st, rel, false)
            }
            _ => {
                // Char and block devices, FIFOs and sockets: recreated, never opened.
                let perm = Mode::from_raw_mode(st.st_mode & 0o777);
                rfs::mknodat(dst_dir, name, file_type, perm, st.st_rdev)
                    .map_err(|e| self.dst_err(rel, e))?;
                self.apply_path_metadata(dst_dir, name, &st, rel, true)
            }
        }
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs, then times.
    fn apply_fd_metadata(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        st: &Stat,
        rel: &Path,
    ) -> Result<(), StoreError> {
        rfs::fchown(dst, Some(uid(st)), Some(gid(st))).map_err(|e| self.dst_err(rel, e))?;
        rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| self.dst_err(rel, e))?;
        let n = list_or_empty(rfs::flistxattr(src, &mut self.names[..]))
            .map_err(|e| self.src_err(rel, e))?;
        let names = self.names[..n].to_vec();
        for key in ordered_xattr_names(&names) {
            let len =
                rfs::fgetxattr(src, &key, &mut self.value[..]).map_err(|e| self.src_err(rel, e))?;
            rfs::fsetxattr(dst, &key, &self.value[..len], rfs::XattrFlags::empty())
                .map_err(|e| self.dst_err(rel, e))?;
        }
        rfs::futimens(dst, &timestamps(st)).map_err(|e| self.dst_err(rel, e))
    }

    /// The same for entries that cannot be opened safely: symlinks, devices, FIFOs, sockets.
    fn apply_path_metadata(
        &mut self,
        dst_dir: &OwnedFd,
        name: &CStr,
        st: &Stat,
        rel: &Path,
        chmod: bool,
    ) -> Result<(), StoreError> {
        rfs::chownat(
            dst_dir,
            name,
            Some(uid(st)),
            Some(gid(st)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.dst_err(rel, e))?;
        if chmod {
            rfs::chmodat(
                dst_dir,
                name,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| self.dst_err(rel, e))?;
        }
        let src_path = self.source.join(rel);
        let dst_path = self.destination.join(rel);
        let n = list_or_empty(rfs::llistxattr(&src_path, &mut self.names[..]))
            .map_err(|e| self.src_err(rel, e))?;
        let names = self.names[..n].to_vec();
        for key in ordered_xattr_names(&names) {
            let len = rfs::lgetxattr(&src_path, &key, &mut self.value[..])
                .map_err(|e| self.src_err(rel, e))?;
            rfs::lsetxattr(
                &dst_path,
                &key,
                &self.value[..len],
                rfs::XattrFlags::empty(),
            )
            .map_err(|e| self.dst_err(rel, e))?;
        }
        rfs::utimensat(dst_dir, name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.dst_err(rel, e))
    }

    fn src_err(&self, rel: &Path, e: Errno) -> StoreError {
        StoreError::io(self.source.join(rel), e)
    }

    fn dst_err(&self, rel: &Path, e: Errno) -> StoreError {
        StoreError::io(self.destination.join(rel), e)
    }
}

/// File systems without xattr support list nothing rather than fail the copy.
fn list_or_empty(result: rustix::io::Result<usize>) -> rustix::io::Result<usize> {
    match result {
        Err(Errno::NOTSUP) => Ok(0),
        other => other,
    }
}

/// The NUL-separated names of an xattr list, with `security.capability` last.
fn ordered_xattr_names(list: &[u8]) -> Vec<CString> {
    let mut names: Vec<CString> = list
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| CString::new(n).ok())
        .collect();
    names.sort_by_key(|n| n.as_bytes() == CAPABILITY_XATTR);
    names
}

fn uid(st: &Stat) -> Uid {
    Uid::from_raw(st.st_uid)
}

fn gid(st: &Stat) -> Gid {
    Gid::from_raw(st.st_gid)
}

fn timestamps(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Copies `size` bytes from `src` to `dst`: a reflink when the file system shares extents,
/// else only the data regions (holes stay holes) with copy_file_range, falling back to
/// read/write across file systems that refuse it.
fn copy_data(src: impl AsFd, dst: impl AsFd, size: u64) -> rustix::io::Result<()> {
    if size == 0 || rfs::ioctl_ficlone(&dst, &src).is_ok() {
        return Ok(());
    }
    let mut offset = 0u64;
    while offset < size {
        let data = match rfs::seek(&src, SeekFrom::Data(offset)) {
            Ok(data) => data,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) => offset,
            Err(e) => return Err(e),
        };
        let hole = rfs::seek(&src, SeekFrom::Hole(data))
            .unwrap_or(size)
            .min(size);
        copy_range(&src, &dst, data, hole - data)?;
        offset = hole;
    }
    rfs::ftruncate(&dst, size)?;
    Ok(())
}

fn copy_range(src: impl AsFd, dst: impl AsFd, start: u64, len: u64) -> rustix::io::Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    let end = start + len;
    while off_in < end {
        let chunk = (end - off_in).min(1 << 30) as usize;
        match rfs::copy_file_range(&src, Some(&mut off_in), &dst, Some(&mut off_out), chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return copy_range_by_read(&src, &dst, off_in, end - off_in);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_by_read(
    src: impl AsFd,
    dst: impl AsFd,
    start: u64,
    len: u64,
) -> rustix::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let want = ((end - offset) as usize).min(buf.len());
        let n = rustix::io::pread(&src, &mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            written += rustix::io::pwrite(&dst, &buf[written..n], offset + written as u64)?;
        }
        offset += n as u64;
    }
    Ok(())
}
