//! Applying image layers in order onto a directory. A layer is a tar stream (plain, gzip or
//! zstd: detected by content) unpacked by the safe extractor of [`crate::archive`]; its
//! whiteouts (`DIR/.wh.NAME`: NAME of the layers below is deleted) and opaque markers
//! (`DIR/.wh..wh..opq`: DIR's content from below is deleted) apply to the layers below only,
//! so they are collected in a first pass over the layer and carried out before its content is
//! unpacked; the marker files themselves are removed afterwards. The first layer has nothing
//! below it, which spares it the first pass. Deletions resolve inside the root (openat2
//! `RESOLVE_IN_ROOT`), so a hostile whiteout path cannot reach outside it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::Timespec;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use super::{io_err, OciError, Result};
use crate::archive::{self, ArchiveError, Decoder, ExtractOptions, ExtractStats, Kind, TarReader};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// One deletion a layer asks for, as path components relative to the root.
#[derive(Debug, PartialEq, Eq)]
enum Deletion {
    /// Remove DIR/NAME.
    Entry(Vec<Vec<u8>>),
    /// Remove the content of DIR.
    Opaque(Vec<Vec<u8>>),
}

/// The components of a member path, or None for a path that leaves the root.
fn components(path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c.to_vec()),
        }
    }
    Some(out)
}

fn deletion(path: &[u8]) -> Option<Deletion> {
    let mut comps = components(path)?;
    let last = comps.pop()?;
    if last == OPAQUE {
        return Some(Deletion::Opaque(comps));
    }
    let name = last.strip_prefix(WHITEOUT)?;
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    comps.push(name.to_vec());
    Some(Deletion::Entry(comps))
}

/// Applies the layer in `blob` onto `root`. `label` (the digest) names it in errors.
pub(crate) fn apply_layer(
    root: &Path,
    blob: &Path,
    label: &str,
    first: bool,
) -> Result<ExtractStats> {
    let layer_err = |source: ArchiveError| OciError::Layer {
        digest: label.into(),
        source,
    };
    let root_fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| io_err(root)(e.into()))?;
    let mut kept_times: Vec<(Vec<Vec<u8>>, Timestamps)> = Vec::new();
    if !first {
        let decoder =
            Decoder::spawn(File::open(blob).map_err(io_err(blob))?, false).map_err(layer_err)?;
        let mut tar = TarReader::new(std::io::BufReader::with_capacity(256 << 10, decoder));
        let mut deletions = Vec::new();
        let mut parents = HashSet::new();
        let mut own_dirs = HashSet::new();
        while let Some(m) = tar.next_member().map_err(layer_err)? {
            if let Some(d) = deletion(&m.path) {
                deletions.push((d, String::from_utf8_lossy(&m.path).into_owned()));
            }
            if let Some(comps) = components(&m.path) {
                if m.kind == Kind::Dir {
                    own_dirs.insert(comps.clone());
                }
                for i in 0..comps.len() {
                    parents.insert(comps[..i].to_vec());
                }
            }
        }
        // Directories of the layers below that this one changes without carrying them keep
        // their times, as umoci and the image's author saw them.
        kept_times = parents
            .into_iter()
            .filter(|p| !own_dirs.contains(p))
            .filter_map(|p| {
                let fd = open_dir_in(root_fd.as_fd(), &p).ok()?;
                let st = rustix::fs::fstat(&fd).ok()?;
                Some((p, times_of(&st)))
            })
            .collect();
        for (d, shown) in &deletions {
            delete(root_fd.as_fd(), d).map_err(|source| OciError::Whiteout {
                digest: label.into(),
                path: shown.clone(),
                source,
            })?;
        }
    }
    let mut decoder =
        Decoder::spawn(File::open(blob).map_err(io_err(blob))?, false).map_err(layer_err)?;
    let opts = ExtractOptions {
        record_paths: true,
        ..ExtractOptions::default()
    };
    let stats = archive::extract(&mut decoder, root, &opts, None).map_err(layer_err)?;
    std::io::copy(&mut decoder, &mut std::io::sink()).map_err(|source| {
        layer_err(ArchiveError::Read {
            offset: stats.archive_bytes,
            source,
        })
    })?;
    decoder.finish().map_err(layer_err)?;
    // The markers were unpacked as empty files; they are not part of the image.
    for path in &stats.paths {
        let Some(comps) = components(path) else {
            continue;
        };
        let is_marker = comps.last().is_some_and(|l| l.starts_with(WHITEOUT));
        if is_marker {
            let (name, dir) = comps.split_last().expect("not empty");
            // The directory's times were set from the layer; removing the marker keeps them.
            let result = open_dir_in(root_fd.as_fd(), dir).and_then(|d| {
                let st = rustix::fs::fstat(&d)?;
                rustix::fs::unlinkat(&d, OsStr::from_bytes(name), AtFlags::empty())?;
                rustix::fs::futimens(&d, &times_of(&st))
            });
            match result {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(OciError::Whiteout {
                        digest: label.into(),
                        path: String::from_utf8_lossy(path).into_owned(),
                        source: e.into(),
                    })
                }
            }
        }
    }
    for (dir, times) in &kept_times {
        if let Ok(fd) = open_dir_in(root_fd.as_fd(), dir) {
            rustix::fs::futimens(&fd, times).map_err(|e| OciError::Whiteout {
                digest: label.into(),
                path: String::from_utf8_lossy(&dir.join(&b'/')).into_owned(),
                source: e.into(),
            })?;
        }
    }
    Ok(stats)
}

fn times_of(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// A directory inside the root, resolved as if the root were `/`.
fn open_dir_in(root: BorrowedFd<'_>, comps: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
    let rel = if comps.is_empty() {
        b".".to_vec()
    } else {
        comps.join(&b'/')
    };
    rustix::fs::openat2(
        root,
        OsStr::from_bytes(&rel),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

fn delete(root: BorrowedFd<'_>, d: &Deletion) -> std::io::Result<()> {
    let result = match d {
        Deletion::Entry(comps) => {
            let (name, dir) = comps.split_last().expect("a whiteout names an entry");
            open_dir_in(root, dir).and_then(|fd| remove_all_at(fd.as_fd(), name))
        }
        Deletion::Opaque(comps) => open_dir_in(root, comps).and_then(clear_dir),
    };
    match result {
        // Deleting what the layers below do not have is a no-op.
        Ok(()) | Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir`, a whole tree if it is a directory, never following a symlink.
fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let name = OsStr::from_bytes(name);
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        clear_dir(sub)?;
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
    }
}

/// Removes everything inside the directory `fd`.
fn clear_dir(fd: OwnedFd) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    for name in names {
        remove_all_at(fd.as_fd(), &name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn recognises_whiteouts() {
        assert_eq!(
            deletion(b"./etc/.wh.motd"),
            Some(Deletion::Entry(v(&["etc", "motd"])))
        );
        assert_eq!(
            deletion(b"var/lib/.wh..wh..opq"),
            Some(Deletion::Opaque(v(&["var", "lib"])))
        );
        assert_eq!(deletion(b".wh..wh..opq"), Some(Deletion::Opaque(vec![])));
        assert_eq!(deletion(b"etc/motd"), None);
        assert_eq!(deletion(b"../.wh.x"), None);
        assert_eq!(deletion(b"a/.wh."), None);
        assert_eq!(deletion(b"a/.wh.."), None);
    }
}
