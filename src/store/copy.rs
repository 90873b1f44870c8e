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
    self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, SeekFrom, Stat, Uid,
};
use rustix::io::Errno;
use rustix::process::Gid;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::StoreError;
use crate::fs::Metadata;

/// The xattr that must be set last: chown and chmod clear it, and a later xattr write must
/// not be refused because of it.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Copies the tree at `source` into the existing, empty directory `destination`, which takes
/// the source's own metadata too. `progress` is called with the bytes copied so far.
///
/// Directories are copied in parallel: creating and filling files is mostly kernel time, and
/// spreading it over the cores is what lets a copy keep pace with `cp -a` despite the final
/// `syncfs` the store's commit does. Work that must see the whole tree waits for the walk:
/// second links of multiply-linked inodes, then directory metadata, deepest first.
pub fn copy_tree(
    source: &Path,
    destination: &Path,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<(), StoreError> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let src = rfs::open(source, dir_flags, Mode::empty()).map_err(|e| StoreError::io(source, e))?;
    let dst = rfs::open(destination, dir_flags | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| StoreError::io(destination, e))?;
    let root_stat = rfs::fstat(&src).map_err(|e| StoreError::io(source, e))?;
    let copier = Copier {
        source: source.to_path_buf(),
        destination: destination.to_path_buf(),
        src_root: src,
        dst_root: dst,
        links: Mutex::new(HashMap::new()),
        later_links: Mutex::new(Vec::new()),
        dirs: Mutex::new(Vec::new()),
        bytes: AtomicU64::new(0),
        error: Mutex::new(None),
        progress,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(crate::parallel::io_workers())
        .build()
        .map_err(|e| StoreError::io(destination, std::io::Error::other(e)))?;
    pool.scope(|scope| copier.spawn_dir(scope, PathBuf::new()));
    if let Some(err) = copier
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(err);
    }
    let mut buffers = Buffers::new();
    let later_links =
        std::mem::take(&mut *copier.later_links.lock().unwrap_or_else(|e| e.into_inner()));
    for (first, rel) in later_links {
        rfs::linkat(
            &copier.dst_root,
            first.as_path(),
            &copier.dst_root,
            rel.as_path(),
            AtFlags::empty(),
        )
        .map_err(|e| copier.dst_err(&rel, e))?;
    }
    let mut dirs = std::mem::take(&mut *copier.dirs.lock().unwrap_or_else(|e| e.into_inner()));
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    dirs.push((PathBuf::new(), root_stat));
    for (rel, st) in dirs {
        let (src, dst) = copier.open_dirs(&rel)?;
        copier.apply_fd_metadata(&mut buffers, &src, &dst, &st, &rel)?;
    }
    Ok(())
}

/// Copies one file's data (holes kept, reflinked where possible) and metadata; for raw images.
pub(crate) fn copy_file(
    source: &Path,
    destination: &Path,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<(), StoreError> {
    let src = rfs::open(source, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| StoreError::io(source, e))?;
    let dst_flags = OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let dst = rfs::open(destination, dst_flags, Mode::empty())
        .map_err(|e| StoreError::io(destination, e))?;
    let st = rfs::fstat(&src).map_err(|e| StoreError::io(source, e))?;
    copy_data(&src, &dst, st.st_size as u64).map_err(|e| StoreError::io(destination, e))?;
    if let Some(progress) = progress {
        progress(st.st_size as u64);
    }
    let parent = destination.parent().unwrap_or(Path::new("/"));
    let copier = Copier {
        source: source.to_path_buf(),
        destination: parent.to_path_buf(),
        src_root: src.try_clone().map_err(|e| StoreError::io(source, e))?,
        dst_root: dst
            .try_clone()
            .map_err(|e| StoreError::io(destination, e))?,
        links: Mutex::new(HashMap::new()),
        later_links: Mutex::new(Vec::new()),
        dirs: Mutex::new(Vec::new()),
        bytes: AtomicU64::new(st.st_size as u64),
        error: Mutex::new(None),
        progress: None,
    };
    copier.apply_fd_metadata(&mut Buffers::new(), &src, &dst, &st, Path::new(""))
}

/// Scratch space for xattr names and values, one per task.
struct Buffers {
    names: Vec<u8>,
    value: Vec<u8>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            names: vec![0; 64 * 1024],
            value: vec![0; 64 * 1024],
        }
    }
}

struct Copier<'a> {
    source: PathBuf,
    destination: PathBuf,
    src_root: OwnedFd,
    dst_root: OwnedFd,
    /// First copy of each multiply-linked inode, by (device, inode), relative to the root.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// Further links, made once the walk is over and every first copy exists: (first, link).
    later_links: Mutex<Vec<(PathBuf, PathBuf)>>,
    /// Every directory below the root with its source metadata, applied after the walk.
    dirs: Mutex<Vec<(PathBuf, Stat)>>,
    /// Bytes copied so far, for `progress`.
    bytes: AtomicU64,
    /// The first error; once set, no further directory is started.
    error: Mutex<Option<StoreError>>,
    progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<'a> Copier<'a> {
    fn spawn_dir<'s>(&'s self, scope: &rayon::Scope<'s>, rel: PathBuf) {
        let failed = self.error.lock().map(|e| e.is_some()).unwrap_or(true);
        if failed {
            return;
        }
        if let Err(err) = self.copy_dir(scope, &rel) {
            let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(err);
        }
    }

    /// Opens a directory below both roots without following any symlink, so a source changed
    /// under the copy cannot redirect it.
    fn open_dirs(&self, rel: &Path) -> Result<(OwnedFd, OwnedFd), StoreError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let path: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let src = rfs::openat2(&self.src_root, path, flags, Mode::empty(), resolve)
            .map_err(|e| self.src_err(rel, e))?;
        let dst = rfs::openat2(&self.dst_root, path, flags, Mode::empty(), resolve)
            .map_err(|e| self.dst_err(rel, e))?;
        Ok((src, dst))
    }

    fn copy_dir<'s>(&'s self, scope: &rayon::Scope<'s>, rel: &Path) -> Result<(), StoreError> {
        let (src, dst) = self.open_dirs(rel)?;
        let mut buffers = Buffers::new();
        let mut dir = Dir::read_from(&src).map_err(|e| self.src_err(rel, e))?;
        for entry in dir.by_ref() {
            let entry = entry.map_err(|e| self.src_err(rel, e))?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let child = rel.join(OsStr::from_bytes(name.to_bytes()));
            if let Some(st) = self.copy_entry(&mut buffers, &src, &dst, name, &child)? {
                self.dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((child.clone(), st));
                scope.spawn(move |scope| self.spawn_dir(scope, child));
            }
        }
        Ok(())
    }

    /// Copies one entry; for a directory, creates it and returns its metadata for later.
    fn copy_entry(
        &self,
        buffers: &mut Buffers,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        name: &CStr,
        rel: &Path,
    ) -> Result<Option<Stat>, StoreError> {
        let st = rfs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.src_err(rel, e))?;
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type != FileType::Directory && st.st_nlink > 1 {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(first) = links.get(&(st.st_dev, st.st_ino)) {
                let later = (first.clone(), rel.to_path_buf());
                self.later_links
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(later);
                return Ok(None);
            }
            links.insert((st.st_dev, st.st_ino), rel.to_path_buf());
        }
        match file_type {
            FileType::Directory => {
                rfs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| self.dst_err(rel, e))?;
                Ok(Some(st))
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
                let total =
                    self.bytes.fetch_add(st.st_size as u64, Ordering::Relaxed) + st.st_size as u64;
                if let Some(progress) = self.progress {
                    progress(total);
                }
                self.apply_fd_metadata(buffers, &src, &dst, &st, rel)?;
                Ok(None)
            }
            FileType::Symlink => {
                let target =
                    rfs::readlinkat(src_dir, name, Vec::new()).map_err(|e| self.src_err(rel, e))?;
                rfs::symlinkat(target.as_c_str(), dst_dir, name)
                    .map_err(|e| self.dst_err(rel, e))?;
                self.apply_path_metadata(buffers, dst_dir, name, &st, rel, false)?;
                Ok(None)
            }
            _ => {
                // Char and block devices, FIFOs and sockets: recreated, never opened.
                let perm = Mode::from_raw_mode(st.st_mode & 0o777);
                rfs::mknodat(dst_dir, name, file_type, perm, st.st_rdev)
                    .map_err(|e| self.dst_err(rel, e))?;
                self.apply_path_metadata(buffers, dst_dir, name, &st, rel, true)?;
                Ok(None)
            }
        }
    }

    /// The source's metadata with its xattrs (capabilities last), read with `list`/`get`.
    fn metadata_of(
        &self,
        buffers: &mut Buffers,
        st: &Stat,
        rel: &Path,
        mode: bool,
        list: &dyn Fn(&mut [u8]) -> rustix::io::Result<usize>,
        get: &dyn Fn(&CStr, &mut [u8]) -> rustix::io::Result<usize>,
    ) -> Result<Metadata, StoreError> {
        let n = list_or_empty(list(&mut buffers.names[..])).map_err(|e| self.src_err(rel, e))?;
        let mut xattrs = Vec::new();
        for key in ordered_xattr_names(&buffers.names[..n]) {
            let len = get(&key, &mut buffers.value[..]).map_err(|e| self.src_err(rel, e))?;
            xattrs.push((key.into_bytes(), buffers.value[..len].to_vec()));
        }
        Ok(Metadata {
            owner: Some((Some(uid(st)), Some(gid(st)))),
            mode: mode.then_some(st.st_mode & 0o7777),
            xattrs,
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            atime: Some((st.st_atime, st.st_atime_nsec as u32)),
        })
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs, then times (see [`Metadata`]).
    fn apply_fd_metadata(
        &self,
        buffers: &mut Buffers,
        src: &OwnedFd,
        dst: &OwnedFd,
        st: &Stat,
        rel: &Path,
    ) -> Result<(), StoreError> {
        let meta = self.metadata_of(
            buffers,
            st,
            rel,
            true,
            &|names| rfs::flistxattr(src, names),
            &|key, value| rfs::fgetxattr(src, key, value),
        )?;
        meta.restore_fd(dst.as_fd(), &mut |_, _| false)
            .map_err(|e| self.dst_err(rel, e.source))
    }

    /// The same for entries that cannot be opened safely: symlinks, devices, FIFOs, sockets.
    fn apply_path_metadata(
        &self,
        buffers: &mut Buffers,
        dst_dir: &OwnedFd,
        name: &CStr,
        st: &Stat,
        rel: &Path,
        chmod: bool,
    ) -> Result<(), StoreError> {
        let src_path = self.source.join(rel);
        let meta = self.metadata_of(
            buffers,
            st,
            rel,
            chmod,
            &|names| rfs::llistxattr(&src_path, names),
            &|key, value| rfs::lgetxattr(&src_path, key, value),
        )?;
        let name = OsStr::from_bytes(name.to_bytes());
        meta.restore_at(dst_dir.as_fd(), name, &mut |_, _| false)
            .map_err(|e| self.dst_err(rel, e.source))
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

/// Copies `size` bytes from `src` to `dst`: a reflink when the file system shares extents,
/// else only the data regions (holes stay holes) with copy_file_range, falling back to
/// read/write across file systems that refuse it.
fn copy_data(src: impl AsFd, dst: impl AsFd, size: u64) -> rustix::io::Result<()> {
    if size == 0 || rfs::ioctl_ficlone(&dst, &src).is_ok() {
        return Ok(());
    }
    let mut offset = 0u64;
    let mut written_to = 0u64;
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
        written_to = hole;
    }
    // A trailing hole has no data to write; setting the size makes it.
    if written_to < size {
        rfs::ftruncate(&dst, size)?;
    }
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
