//! Live backups: exporting a machine's image while it runs. Its processes are frozen
//! (`cgroup.freeze`) so the tree is read as one moment of the machine's life. Where the store
//! can, the freeze lasts only as long as taking a copy of that moment does, and the copy is
//! exported and removed: a btrfs snapshot of a subvolume image, else a reflink copy (every
//! file cloned with FICLONE, on xfs with reflink or btrfs directories). Elsewhere the machine
//! stays frozen for the whole export. [`LiveExport::how`] says which. Thawing happens on drop,
//! also when the export fails.

use std::path::{Path, PathBuf};

use super::cgroup::MachineCgroup;
use super::record::{self, Record};
use super::{IoAt, Result};
use crate::store::{ImageName, LockPurpose, NameLock, Store, StoreError};

/// A running machine held still (or snapshotted) for an export.
pub(crate) struct LiveExport {
    cgroup: MachineCgroup,
    frozen: bool,
    /// While frozen, Ctrl-C (whose handler exits without running this value's drop) thaws it.
    thaw_on_interrupt: Option<crate::sys::interrupt::ThawOnInterrupt>,
    /// The btrfs snapshot or reflink copy exported instead of the image.
    snapshot: Option<PathBuf>,
    /// One sentence on what was done, for `-v`.
    pub(crate) how: String,
}

/// What an export holds: the image's lock, or (for a running machine) a live export.
pub(crate) enum Hold {
    /// The image stays locked as long as the export runs (the lock is held for its drop).
    Locked {
        _lock: NameLock,
    },
    Live(LiveExport),
}

impl Hold {
    /// The tree to export instead of `image` (the snapshot, when there is one).
    pub(crate) fn source<'a>(&'a self, image: &'a Path) -> &'a Path {
        match self {
            Hold::Live(LiveExport {
                snapshot: Some(s), ..
            }) => s,
            _ => image,
        }
    }

    pub(crate) fn how(&self) -> Option<&str> {
        match self {
            Hold::Live(l) => Some(&l.how),
            Hold::Locked { .. } => None,
        }
    }
}

/// Takes the image's lock for `purpose`; when a started machine runs from it, freezes the machine
/// (and snapshots where the store can) instead. Any other holder is refused as usual.
pub(crate) fn lock_or_freeze(
    store: &Store,
    name: &ImageName,
    purpose: LockPurpose,
) -> Result<Hold> {
    match store.lock(name, purpose) {
        Ok(lock) => Ok(Hold::Locked { _lock: lock }),
        Err(busy @ StoreError::Busy { .. }) => match record::load(store.state_dir(), name.as_str())
        {
            Some(rec) => Ok(Hold::Live(freeze(store, &rec)?)),
            None => Err(busy.into()),
        },
        Err(e) => Err(e.into()),
    }
}

fn freeze(store: &Store, rec: &Record) -> Result<LiveExport> {
    let mut live = LiveExport {
        cgroup: rec.machine_cgroup(),
        frozen: false,
        thaw_on_interrupt: None,
        snapshot: None,
        how: String::new(),
    };
    let started = std::time::Instant::now();
    let freeze_file = live.cgroup.freeze_file();
    live.thaw_on_interrupt =
        Some(crate::sys::interrupt::thaw_on_interrupt(&freeze_file).at(&freeze_file)?);
    live.cgroup.freeze(true)?;
    live.frozen = true;
    let image = store.image(&ImageName::parse(&rec.name)?)?;
    let copy = store
        .root()
        .join(format!(".#export-{}-{}", rec.name, std::process::id()));
    let what = if image.kind() == crate::store::ImageKind::Subvolume {
        snapshot(image.path(), &copy)?;
        live.snapshot = Some(copy);
        "a btrfs snapshot"
    } else if reflinks(store.root()) {
        // Every file a clone of the image's (FICLONE): its data is shared, not copied, so the
        // copy costs metadata only; removed with the rest of the copy on drop.
        std::fs::create_dir(&copy).at(&copy)?;
        live.snapshot = Some(copy.clone());
        crate::store::copy_tree(image.path(), &copy, None)?;
        "a reflink copy"
    } else {
        live.how = format!(
            "{} is running: frozen for the whole export (its store can neither snapshot nor reflink)",
            rec.name
        );
        return Ok(live);
    };
    live.cgroup.freeze(false)?;
    live.frozen = false;
    live.thaw_on_interrupt = None;
    live.how = format!(
        "{} is running: frozen for {} ms to take {what}, which is exported",
        rec.name,
        started.elapsed().as_millis()
    );
    Ok(live)
}

/// Whether files in `dir`'s file system can share their data (FICLONE: xfs with reflink,
/// btrfs): tried on two scratch files there, removed again.
fn reflinks(dir: &Path) -> bool {
    let probe = |end: &str| dir.join(format!(".#reflink-probe-{}-{end}", std::process::id()));
    let (a, b) = (probe("a"), probe("b"));
    let cloned = std::fs::write(&a, b"x")
        .and_then(|_| Ok((std::fs::File::open(&a)?, std::fs::File::create(&b)?)))
        .is_ok_and(|(a, b)| rustix::fs::ioctl_ficlone(&b, &a).is_ok());
    let _ = std::fs::remove_file(a);
    let _ = std::fs::remove_file(b);
    cloned
}

fn snapshot(source: &Path, target: &Path) -> Result<()> {
    let src = std::fs::File::open(source).at(source)?;
    let parent = target.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::File::open(parent).at(parent)?;
    let leaf = target.file_name().unwrap_or_default();
    let leaf = std::ffi::CString::new(leaf.as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        .at(target)?;
    crate::sys::btrfs::snapshot(&src, &dir, &leaf, true)
        .map_err(std::io::Error::from)
        .at(target)
}

impl Drop for LiveExport {
    fn drop(&mut self) {
        if self.frozen {
            let _ = self.cgroup.freeze(false);
        }
        if let Some(s) = self.snapshot.take() {
            if let Ok(f) = std::fs::File::open(&s) {
                let _ = crate::sys::btrfs::set_subvolume_read_only(&f, false);
            }
            let _ = std::fs::remove_dir_all(&s);
        }
    }
}
