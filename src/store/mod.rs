//! The image store: the only module that knows its layout. It owns image names, image kinds
//! (directory, btrfs subvolume, raw file), staging under hidden names and the atomic commit,
//! per-name locks, read-only flags, usage, and full-fidelity tree copies. It does not parse
//! archives, download anything or run images; those fill a [`Staging`] it hands out.
//!
//! Layout: `STORE/NAME` is a directory or subvolume image, `STORE/NAME.raw` a raw image.
//! `STORE/.#rmach-NAME.TAG` is an image being built or removed; it exists only while its
//! creator holds the lock of NAME in `STATE/locks/`, so one whose name is not locked is stale.

mod copy;
mod error;
mod image;
mod lock;
mod name;
mod staging;

pub use copy::{copy_tree, CopyStats};
pub use error::StoreError;
/// An os-release read with every path resolved inside `root` (raw images: their mounted root).
pub use image::os_release;
/// Bytes allocated under a tree, hard links counted once (sizing a disk for it).
pub use image::usage as tree_usage;
pub use image::{Image, ImageInfo, ImageKind, OsRelease};
pub use lock::{LockHolder, NameLock};
pub use name::{name_from_path, ImageName};
pub use staging::{Staging, TreeScratch};

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};

use error::IoContext;
use image::{remove_image_path, set_read_only_path};
use staging::{cstr, staging_owner, staging_path, STAGING_PREFIX};

use crate::sys::btrfs;

pub type Result<T> = std::result::Result<T, StoreError>;

/// The lock verbs that mean an image is running.
const RUNNING_VERBS: &[&str] = &["run", "booted"];

/// An opened store: its root and the directory for locks.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    state_dir: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating it (mode 0700, as machinectl does) and the lock
    /// directory when missing.
    pub fn open(root: &Path, state_dir: &Path) -> Result<Store> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .at(root)?;
        let locks = state_dir.join("locks");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&locks)
            .at(&locks)?;
        Ok(Store {
            root: root.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Takes the lock of `name` for `verb` ("exported", "run", ...), failing at once when
    /// another process holds it.
    pub fn lock(&self, name: &ImageName, verb: &str) -> Result<NameLock> {
        NameLock::acquire(&self.state_dir, name, verb)
    }

    /// Whether the store is on btrfs, where images are subvolumes.
    pub fn on_btrfs(&self) -> bool {
        File::open(&self.root).is_ok_and(btrfs::is_btrfs)
    }

    /// Finds the image called `name`.
    pub fn image(&self, name: &ImageName) -> Result<Image> {
        self.find(name).ok_or_else(|| StoreError::NotFound {
            name: name.to_string(),
            store: self.root.clone(),
        })
    }

    fn find(&self, name: &ImageName) -> Option<Image> {
        let dir = self.root.join(name.as_str());
        if let Ok(meta) = std::fs::symlink_metadata(&dir) {
            if meta.is_dir() {
                return Some(self.image_at(name.as_str(), dir));
            }
        }
        let raw = self.root.join(format!("{name}.raw"));
        match std::fs::symlink_metadata(&raw) {
            Ok(meta) if meta.is_file() => Some(Image {
                name: name.to_string(),
                kind: ImageKind::Raw,
                path: raw,
            }),
            _ => None,
        }
    }

    fn image_at(&self, name: &str, path: PathBuf) -> Image {
        let file_name = path.file_name().unwrap_or_default();
        let subvolume = File::open(&self.root).is_ok_and(|root| {
            CString::new(file_name.as_encoded_bytes()).is_ok_and(|c| btrfs::is_subvolume(&root, &c))
        });
        Image {
            name: name.to_string(),
            kind: if subvolume {
                ImageKind::Subvolume
            } else {
                ImageKind::Directory
            },
            path,
        }
    }

    /// Every image, sorted by name; with `all`, hidden entries and unfinished operations too.
    pub fn images(&self, all: bool) -> Result<Vec<Image>> {
        let mut images = Vec::new();
        for entry in std::fs::read_dir(&self.root).at(&self.root)? {
            let entry = entry.at(&self.root)?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let hidden = file_name.starts_with('.');
            if hidden && !all {
                continue;
            }
            if file_type.is_dir() {
                if hidden || ImageName::parse(&file_name).is_ok() {
                    images.push(self.image_at(&file_name, entry.path()));
                }
            } else if file_type.is_file() {
                if let Some(stem) = file_name.strip_suffix(".raw") {
                    if hidden || ImageName::parse(stem).is_ok() {
                        let name = if hidden { &file_name } else { stem };
                        images.push(Image {
                            name: name.to_string(),
                            kind: ImageKind::Raw,
                            path: entry.path(),
                        });
                    }
                }
            }
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Everything known about an image; `with_usage` walks the whole tree.
    pub fn info(&self, image: &Image, with_usage: bool) -> Result<ImageInfo> {
        let lock = if image.is_hidden() {
            staging_owner(&image.name).and_then(|owner| lock::holder(&self.state_dir, owner))
        } else {
            lock::holder(&self.state_dir, &image.name)
        };
        let state = if image.name.starts_with(STAGING_PREFIX) {
            "staging"
        } else if lock
            .as_ref()
            .is_some_and(|l| RUNNING_VERBS.contains(&l.verb.as_str()))
        {
            "running"
        } else {
            "stopped"
        };
        let (created, modified) = image::times(&image.path);
        Ok(ImageInfo {
            name: image.name.clone(),
            kind: image.kind,
            path: image.path.clone(),
            read_only: image.read_only().unwrap_or(false),
            usage: if with_usage {
                image::usage(&image.path)
            } else {
                0
            },
            created,
            modified,
            state,
            lock,
            os_release: if image.kind.is_tree() {
                image::os_release(&image.path)
            } else {
                None
            },
        })
    }

    /// Starts building image `name`: takes its lock, refuses an existing image unless
    /// `force`, removes stale leftovers, and creates an empty staging directory (a subvolume
    /// on btrfs) or, for `Raw`, an empty staging file.
    pub fn create(
        &self,
        name: &ImageName,
        verb: &str,
        kind: ImageKind,
        force: bool,
    ) -> Result<Staging> {
        let staging = self.begin(name, verb, kind, force)?;
        match kind {
            ImageKind::Raw => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&staging.path)
                    .at(&staging.path)?;
            }
            ImageKind::Directory | ImageKind::Subvolume => {
                if self.on_btrfs() {
                    let root = File::open(&self.root).at(&self.root)?;
                    let file_name = staging.path.file_name().unwrap_or_default();
                    let c = CString::new(file_name.as_encoded_bytes())
                        .map_err(|e| StoreError::io(&staging.path, std::io::Error::other(e)))?;
                    btrfs::create_subvolume(&root, &c).at(&staging.path)?;
                } else {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&staging.path)
                        .at(&staging.path)?;
                }
            }
        }
        Ok(staging)
    }

    /// Lock, checks and a staging path not yet created.
    fn begin(&self, name: &ImageName, verb: &str, kind: ImageKind, force: bool) -> Result<Staging> {
        let lock = self.lock(name, verb)?;
        self.remove_stale_staging(Some(name.as_str()), false);
        let kind_on_disk = if kind == ImageKind::Directory && self.on_btrfs() {
            ImageKind::Subvolume
        } else {
            kind
        };
        let target = match kind {
            ImageKind::Raw => self.root.join(format!("{name}.raw")),
            _ => self.root.join(name.as_str()),
        };
        if let Some(existing) = self.find(name) {
            if !force {
                return Err(StoreError::Exists {
                    name: name.to_string(),
                    store: self.root.clone(),
                });
            }
            if existing.read_only()? {
                return Err(StoreError::ReadOnly {
                    name: name.to_string(),
                });
            }
            if existing.path != target {
                // A replacement of another kind (raw for a directory): the old one goes first.
                self.discard(&existing.path)?;
            }
        }
        let suffix = if kind == ImageKind::Raw { ".raw" } else { "" };
        Ok(Staging {
            _lock: lock,
            name: name.clone(),
            kind: kind_on_disk,
            store: self.root.clone(),
            path: staging_path(&self.root, name, suffix),
            target,
            force,
            committed: false,
        })
    }

    /// Moves an image out of its name at once, then deletes it; a crash in between leaves a
    /// stale staging entry that `clean` removes.
    fn discard(&self, path: &Path) -> Result<()> {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let (name, suffix) = match file_name.strip_suffix(".raw") {
            Some(stem) => (stem.to_string(), ".raw"),
            None => (file_name.to_string(), ""),
        };
        let name = ImageName::parse(&name)?;
        let hidden = staging_path(&self.root, &name, suffix);
        std::fs::rename(path, &hidden).at(path)?;
        remove_image_path(&hidden)
    }

    /// Removes an image. A read-only image is refused.
    pub fn remove(&self, name: &ImageName) -> Result<()> {
        let _lock = self.lock(name, "removed")?;
        let image = self.image(name)?;
        if image.read_only()? {
            return Err(StoreError::ReadOnly {
                name: name.to_string(),
            });
        }
        self.discard(&image.path)
    }

    /// Renames an image; it keeps its read-only flag.
    pub fn rename(&self, old: &ImageName, new: &ImageName) -> Result<()> {
        let _old_lock = self.lock(old, "renamed")?;
        let _new_lock = self.lock(new, "renamed")?;
        let image = self.image(old)?;
        if self.find(new).is_some() {
            return Err(StoreError::Exists {
                name: new.to_string(),
                store: self.root.clone(),
            });
        }
        let target = match image.kind {
            ImageKind::Raw => self.root.join(format!("{new}.raw")),
            _ => self.root.join(new.as_str()),
        };
        // An immutable directory cannot be renamed; lift the flag for the rename only.
        let immutable = image.kind == ImageKind::Directory && image.read_only()?;
        if immutable {
            set_read_only_path(&image.path, image.kind, false)?;
        }
        let renamed = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &cstr(&image.path)?,
            rustix::fs::CWD,
            &cstr(&target)?,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        let now_at = if renamed.is_ok() {
            &target
        } else {
            &image.path
        };
        if immutable {
            set_read_only_path(now_at, image.kind, true)?;
        }
        renamed.at(&target)
    }

    /// Copies image `source` to a new image `destination`: a btrfs snapshot when both are
    /// subvolumes, else a full-fidelity copy that reflinks file data where the file system can.
    pub fn clone_image(
        &self,
        source: &ImageName,
        destination: &ImageName,
        read_only: bool,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<()> {
        let _source_lock = self.lock(source, "cloned")?;
        let image = self.image(source)?;
        let kind = if image.kind == ImageKind::Raw {
            ImageKind::Raw
        } else {
            ImageKind::Directory
        };
        if image.kind == ImageKind::Subvolume {
            let mut staging = self.begin(destination, "created", ImageKind::Subvolume, false)?;
            let src = File::open(&image.path).at(&image.path)?;
            let root = File::open(&self.root).at(&self.root)?;
            let file_name = staging.path.file_name().unwrap_or_default();
            let c = CString::new(file_name.as_encoded_bytes())
                .map_err(|e| StoreError::io(&staging.path, std::io::Error::other(e)))?;
            btrfs::snapshot(&src, &root, &c, false).at(&staging.path)?;
            staging.kind = ImageKind::Subvolume;
            // A snapshot of a read-only subvolume is writable; the source's own flag is not copied.
            return staging.commit(read_only);
        }
        let staging = self.create(destination, "created", kind, false)?;
        if kind == ImageKind::Raw {
            copy::copy_file(&image.path, &staging.path, progress)?;
            // The copy took the source's mode; its read-only state is chosen below instead.
            set_read_only_path(&staging.path, ImageKind::Raw, false)?;
        } else {
            copy_tree(&image.path, &staging.path, progress)?;
        }
        staging.commit(read_only)
    }

    /// Whether an image is read-only.
    pub fn is_read_only(&self, name: &ImageName) -> Result<bool> {
        self.image(name)?.read_only()
    }

    /// Sets or clears an image's read-only flag.
    pub fn set_read_only(&self, name: &ImageName, read_only: bool) -> Result<()> {
        let _lock = self.lock(name, "modified")?;
        let image = self.image(name)?;
        set_read_only_path(&image.path, image.kind, read_only)
    }

    /// Removes what interrupted operations left behind (staging entries whose name is not
    /// locked); with `all`, every other hidden entry too. Returns what was removed.
    pub fn clean(&self, all: bool) -> Result<Vec<PathBuf>> {
        Ok(self.remove_stale_staging(None, all))
    }

    fn remove_stale_staging(&self, only: Option<&str>, all: bool) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return removed;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let stale = match staging_owner(&file_name) {
                Some(owner) => {
                    only.is_none_or(|o| o == owner)
                        && (only.is_some() || lock::holder(&self.state_dir, owner).is_none())
                }
                None => all && only.is_none() && file_name.starts_with('.'),
            };
            let is_image_like = entry
                .file_type()
                .is_ok_and(|t| t.is_dir() || t.is_file() || t.is_symlink() || t.is_fifo());
            if stale && is_image_like {
                let path = entry.path();
                let kind = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    self.image_at(&file_name, path.clone()).kind
                } else {
                    ImageKind::Raw
                };
                let _ = set_read_only_path(&path, kind, false);
                if remove_image_path(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }
}
