//! The image store: the only module that knows its layout. It owns image names, image kinds
//! (directory, btrfs subvolume, raw file), staging under hidden names and the atomic commit,
//! per-name locks, read-only flags, usage, and full-fidelity tree copies. It does not parse
//! archives, download anything or run images; those fill a [`Staging`] it hands out.
//!
//! Layout (`layout.rs` is the one place that spells file names): `STORE/NAME` is a directory
//! or subvolume image, `STORE/NAME.raw` a raw image. `STORE/.#rmach-NAME.TAG` is an image
//! being built or removed; it exists only while its creator holds the lock of NAME, so one
//! whose name is not locked is stale. Locks (`lock.rs`) are rmach's own plus systemd's, so
//! systemd-nspawn and machinectl see rmach's machines and rmach sees theirs.

mod copy;
mod error;
mod image;
mod layout;
mod lock;
mod name;
mod staging;

pub use copy::copy_tree;
pub use error::StoreError;
/// An os-release read with every path resolved inside `root` (raw images: their mounted root).
pub use image::os_release;
/// Bytes allocated under a tree, hard links counted once (sizing a disk for it).
pub use image::usage as tree_usage;
pub use image::{Image, ImageInfo, ImageKind, ImageState, OsRelease};
pub use lock::{LockHolder, LockPurpose, NameLock};
pub use name::{name_from_path, ImageName};
pub(crate) use staging::{Staging, TreeScratch};

use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use error::IoContext;
use image::{remove_image_path, set_read_only_path};
use layout::{Entry, Layout};
use staging::cstr;

use crate::sys::btrfs;

pub(crate) type Result<T> = std::result::Result<T, StoreError>;

/// An opened store: its root and the directory for locks.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    layout: Layout,
    state_dir: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating it first (mode 0700, as machinectl does) when
    /// missing: for library callers and the verbs that create images.
    pub fn open(root: &Path, state_dir: &Path) -> Result<Store> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .at(root)?;
        Store::open_existing(root, state_dir)
    }

    /// Opens the existing store at `root`; a missing one is an error naming the path (a typo
    /// in `--store` must not look like an empty store). Creates the lock directory.
    pub(crate) fn open_existing(root: &Path, state_dir: &Path) -> Result<Store> {
        match std::fs::metadata(root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(StoreError::NoStore {
                    path: root.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoStore {
                    path: root.to_path_buf(),
                })
            }
            Err(e) => return Err(StoreError::io(root, e)),
        }
        let locks = state_dir.join("locks");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&locks)
            .at(&locks)?;
        Ok(Store {
            root: root.to_path_buf(),
            layout: Layout::new(root),
            state_dir: state_dir.to_path_buf(),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `NAME.nspawn`, the image's systemd-nspawn settings file.
    pub(crate) fn nspawn_settings_path(&self, name: &ImageName) -> PathBuf {
        self.layout.nspawn_settings_path(name)
    }

    /// Where to write a file for image `name` before renaming it into place (`what` names
    /// it); `clean` removes one left behind.
    pub(crate) fn temp_path(&self, name: &ImageName, what: &str) -> PathBuf {
        self.layout.temp_path(name, what)
    }

    /// Takes the locks of `name` for `purpose`, failing at once when another process (rmach,
    /// systemd-nspawn, machinectl) holds them. Held until the returned lock is dropped; a
    /// machine supervisor holds a `Run` or `Boot` lock for as long as the machine runs.
    pub fn lock(&self, name: &ImageName, purpose: LockPurpose) -> Result<NameLock> {
        self.lock_with(name, purpose, false)
    }

    /// Like [`Store::lock`], with systemd's locks taken shared: for a machine that does not
    /// write to the image (`--read-only`, `--ephemeral`, a read-only image), as
    /// `systemd-nspawn --read-only` takes them. rmach's own lock stays exclusive.
    pub(crate) fn lock_read_only(
        &self,
        name: &ImageName,
        purpose: LockPurpose,
    ) -> Result<NameLock> {
        self.lock_with(name, purpose, true)
    }

    fn lock_with(&self, name: &ImageName, purpose: LockPurpose, shared: bool) -> Result<NameLock> {
        let image = self.find(name);
        NameLock::acquire(
            &self.state_dir,
            &self.layout,
            name,
            purpose,
            image.as_ref().map(|i| i.path.as_path()),
            shared,
        )
    }

    /// Who holds the locks of `name` (an image name or a hidden entry's owner), if anyone.
    pub(crate) fn holder(&self, name: &str) -> Option<LockHolder> {
        let image = ImageName::parse(name).ok().and_then(|n| self.find(&n));
        lock::holder(
            &self.state_dir,
            &self.layout,
            name,
            image.as_ref().map(|i| i.path.as_path()),
        )
    }

    /// Whether the store is on btrfs, where images are subvolumes.
    pub(crate) fn on_btrfs(&self) -> bool {
        File::open(&self.root).is_ok_and(btrfs::is_btrfs)
    }

    /// Finds the image called `name`.
    pub(crate) fn image(&self, name: &ImageName) -> Result<Image> {
        self.find(name).ok_or_else(|| StoreError::NotFound {
            name: name.to_string(),
            store: self.root.clone(),
        })
    }

    fn find(&self, name: &ImageName) -> Option<Image> {
        let dir = self.layout.image_path(name, ImageKind::Directory);
        if let Ok(meta) = std::fs::symlink_metadata(&dir) {
            if meta.is_dir() {
                return Some(self.image_at(name.as_str(), dir));
            }
        }
        let raw = self.layout.image_path(name, ImageKind::Raw);
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
    pub(crate) fn images(&self, all: bool) -> Result<Vec<Image>> {
        let mut images = Vec::new();
        for entry in std::fs::read_dir(&self.root).at(&self.root)? {
            let entry = entry.at(&self.root)?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let raw = match Layout::entry(&file_name) {
                Entry::Lock => continue,
                Entry::Image { name, raw } if ImageName::parse(&name).is_ok() => {
                    if raw && file_type.is_file() {
                        images.push(Image {
                            name,
                            kind: ImageKind::Raw,
                            path: entry.path(),
                        });
                    } else if !raw && file_type.is_dir() {
                        images.push(self.image_at(&name, entry.path()));
                    }
                    continue;
                }
                Entry::Image { .. } => continue,
                Entry::Staging { .. } | Entry::Hidden if !all => continue,
                Entry::Staging { .. } | Entry::Hidden => Layout::names_raw(&file_name),
            };
            // Hidden entries are listed under their file name.
            if file_type.is_dir() {
                images.push(self.image_at(&file_name, entry.path()));
            } else if raw && file_type.is_file() {
                images.push(Image {
                    name: file_name,
                    kind: ImageKind::Raw,
                    path: entry.path(),
                });
            }
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Everything known about an image; `with_usage` walks the whole tree.
    pub(crate) fn info(&self, image: &Image, with_usage: bool) -> Result<ImageInfo> {
        let staging_owner = match Layout::entry(&image.name) {
            Entry::Staging { owner } => Some(owner),
            _ => None,
        };
        let lock = match (&staging_owner, image.is_hidden()) {
            (Some(owner), _) => self.holder(owner),
            (None, true) => None,
            (None, false) => self.holder(&image.name),
        };
        let state = if staging_owner.is_some() {
            ImageState::Staging
        } else if lock.as_ref().is_some_and(|l| l.purpose.is_running()) {
            ImageState::Running
        } else {
            ImageState::Stopped
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
    pub(crate) fn create(
        &self,
        name: &ImageName,
        purpose: LockPurpose,
        kind: ImageKind,
        force: bool,
    ) -> Result<Staging> {
        let staging = self.begin(name, purpose, kind, force, true)?;
        self.make(staging, kind)
    }

    /// Creates the empty staging directory (a subvolume on btrfs) or raw file that
    /// [`Store::begin`] named.
    fn make(&self, staging: Staging, kind: ImageKind) -> Result<Staging> {
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
                    let (root, c) = self.entry_at(&staging.path)?;
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

    /// Lock, checks and a staging path not yet created. `can_force`: the verb has `--force`.
    fn begin(
        &self,
        name: &ImageName,
        purpose: LockPurpose,
        kind: ImageKind,
        force: bool,
        can_force: bool,
    ) -> Result<Staging> {
        let lock = self.lock(name, purpose)?;
        self.remove_stale_staging(Some(name.as_str()), false);
        let kind_on_disk = if kind == ImageKind::Directory && self.on_btrfs() {
            ImageKind::Subvolume
        } else {
            kind
        };
        let target = self.layout.image_path(name, kind);
        if let Some(existing) = self.find(name) {
            if !force {
                return Err(StoreError::Exists {
                    name: name.to_string(),
                    store: self.root.clone(),
                    can_force,
                });
            }
            if existing.read_only()? {
                return Err(StoreError::ReadOnly {
                    name: name.to_string(),
                });
            }
            if existing.path != target {
                // A replacement of another kind (raw for a directory): the old one goes first.
                self.discard(&existing)?;
            }
        }
        Ok(Staging {
            _lock: lock,
            name: name.clone(),
            kind: kind_on_disk,
            store: self.root.clone(),
            path: self.layout.staging_path(name, kind, staging::rand_tag()),
            target,
            force,
            committed: false,
        })
    }

    /// The store's directory and the name of `entry` in it, for the btrfs ioctls that
    /// create a subvolume or snapshot by name below a directory.
    fn entry_at(&self, entry: &Path) -> Result<(File, CString)> {
        let root = File::open(&self.root).at(&self.root)?;
        let file_name = entry.file_name().unwrap_or_default();
        let c = CString::new(file_name.as_encoded_bytes())
            .map_err(|e| StoreError::io(entry, std::io::Error::other(e)))?;
        Ok((root, c))
    }

    /// Moves an image out of its name at once, then deletes it; a crash in between leaves a
    /// stale staging entry that `clean` removes.
    fn discard(&self, image: &Image) -> Result<()> {
        let name = ImageName::parse(&image.name)?;
        let hidden = self
            .layout
            .staging_path(&name, image.kind, staging::rand_tag());
        std::fs::rename(&image.path, &hidden).at(&image.path)?;
        remove_image_path(&hidden)
    }

    /// Removes an image. A read-only image is refused.
    pub(crate) fn remove(&self, name: &ImageName) -> Result<()> {
        let _lock = self.lock(name, LockPurpose::Remove)?;
        let image = self.image(name)?;
        if image.read_only()? {
            return Err(StoreError::ReadOnly {
                name: name.to_string(),
            });
        }
        self.discard(&image)
    }

    /// Renames an image; it keeps its read-only flag.
    pub(crate) fn rename(&self, old: &ImageName, new: &ImageName) -> Result<()> {
        let _old_lock = self.lock(old, LockPurpose::Rename)?;
        let _new_lock = self.lock(new, LockPurpose::Rename)?;
        let image = self.image(old)?;
        if self.find(new).is_some() {
            return Err(StoreError::Exists {
                name: new.to_string(),
                store: self.root.clone(),
                can_force: false,
            });
        }
        let target = self.layout.image_path(new, image.kind);
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
    pub(crate) fn clone_image(
        &self,
        source: &ImageName,
        destination: &ImageName,
        read_only: bool,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<()> {
        let _source_lock = self.lock(source, LockPurpose::Clone)?;
        let image = self.image(source)?;
        let kind = if image.kind == ImageKind::Raw {
            ImageKind::Raw
        } else {
            ImageKind::Directory
        };
        if image.kind == ImageKind::Subvolume {
            let mut staging = self.begin(
                destination,
                LockPurpose::Create,
                ImageKind::Subvolume,
                false,
                false,
            )?;
            let src = File::open(&image.path).at(&image.path)?;
            let (root, c) = self.entry_at(&staging.path)?;
            btrfs::snapshot(&src, &root, &c, false).at(&staging.path)?;
            staging.kind = ImageKind::Subvolume;
            // A snapshot of a read-only subvolume is writable; the source's own flag is not copied.
            return staging.commit(read_only);
        }
        // No --force for clone: an existing image is refused.
        let staging = self.begin(destination, LockPurpose::Create, kind, false, false)?;
        let staging = self.make(staging, kind)?;
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
    pub(crate) fn is_read_only(&self, name: &ImageName) -> Result<bool> {
        self.image(name)?.read_only()
    }

    /// Sets or clears an image's read-only flag.
    pub(crate) fn set_read_only(&self, name: &ImageName, read_only: bool) -> Result<()> {
        let _lock = self.lock(name, LockPurpose::Modify)?;
        let image = self.image(name)?;
        set_read_only_path(&image.path, image.kind, read_only)
    }

    /// Removes what interrupted operations left behind (staging entries whose name is not
    /// locked); with `all`, every other hidden entry too. Returns what was removed.
    /// Lock files nobody holds (left by killed processes) go too, unreported: in the store, in
    /// the state directory, and nspawn's global ones of this store's images.
    pub(crate) fn clean(&self, all: bool) -> Result<Vec<PathBuf>> {
        let removed = self.remove_stale_staging(None, all);
        let store_locks = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| Layout::entry(&e.file_name().to_string_lossy()) == Entry::Lock);
        let rmach_locks = std::fs::read_dir(self.state_dir.join("locks"))
            .into_iter()
            .flatten()
            .flatten();
        for entry in store_locks.chain(rmach_locks) {
            lock::remove_if_free(&entry.path());
        }
        // nspawn's global locks of this store's images, left by a killed rmach or nspawn.
        for image in self.images(true)? {
            if let Some(path) = lock::global_lock_path(&image.path) {
                lock::remove_if_free(&path);
            }
        }
        Ok(removed)
    }

    fn remove_stale_staging(&self, only: Option<&str>, all: bool) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return removed;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let stale = match Layout::entry(&file_name) {
                Entry::Staging { owner } => {
                    only.is_none_or(|o| o == owner)
                        && (only.is_some() || self.holder(&owner).is_none())
                }
                Entry::Hidden => all && only.is_none(),
                Entry::Image { .. } | Entry::Lock => false,
            };
            // rmach only ever leaves directories and regular files: anything else named like
            // them (a symlink, a FIFO, a device) is not followed, not chmodded, not removed.
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => self.image_at(&file_name, entry.path()).kind,
                Ok(t) if t.is_file() => ImageKind::Raw,
                _ => continue,
            };
            if stale {
                let path = entry.path();
                let _ = set_read_only_path(&path, kind, false);
                if remove_image_path(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }
}
