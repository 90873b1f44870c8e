//! The last step of a reproducible bootstrap (SOURCE_DATE_EPOCH or `--reproducible`), after
//! the hooks: what varies from run to run goes — logs with time stamps, caches keyed by inode
//! or time, backups dpkg and debconf keep of their databases — and every file time later than
//! the epoch is clamped to it, as mmdebstrap does. The databases rmach writes itself are in a
//! stable order already (status sorted, available and triggers in the plan's order).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use super::{io_err, BootstrapError, Result};

/// Files removed: they hold times or inode numbers of this run, or are caches rebuilt on use.
const VARYING: &[&str] = &[
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/cache/ldconfig/aux-cache",
    "var/lib/dbus/machine-id",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
];

/// Removes what varies and clamps file times under `target` to `epoch`.
pub(crate) fn finish(target: &Path, epoch: i64) -> Result<()> {
    for rel in VARYING {
        let path = target.join(rel);
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    clamp(target, epoch)
}

/// Sets the modification (and access) time of every entry newer than `epoch` to `epoch`,
/// without following symlinks. Directories take the epoch whatever their time: several
/// packages ship the same directory with different times, and which one the parallel
/// extraction applied last varies from run to run.
fn clamp(dir: &Path, epoch: i64) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if meta.is_dir() {
            clamp(&path, epoch)?;
        } else if meta.mtime() >= epoch {
            set_time(&path, epoch)?;
        }
    }
    set_time(dir, epoch)
}

fn set_time(path: &Path, epoch: i64) -> Result<()> {
    let at = Timespec {
        tv_sec: epoch,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: at,
            last_modification: at,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| BootstrapError::Io {
        path: path.into(),
        source: e.into(),
    })
}
