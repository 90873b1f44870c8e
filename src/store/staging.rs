//! Building an image under a hidden name and committing it atomically.

use std::ffi::CString;
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{renameat_with, RenameFlags, CWD};

use super::error::IoContext;
use super::image::{remove_image_path, set_read_only_path};
use super::{ImageKind, ImageName, NameLock, StoreError};

/// An image being built: `path()` is a directory (or, for raw images, a file) under a hidden
/// name. `commit` renames it into place; dropping it uncommitted removes it.
#[derive(Debug)]
pub(crate) struct Staging {
    /// Held until the staging is committed or dropped.
    pub(crate) _lock: NameLock,
    pub(crate) name: ImageName,
    pub(crate) kind: ImageKind,
    pub(crate) store: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) force: bool,
    pub(crate) committed: bool,
}

/// A tag that keeps concurrent staging entries of one name apart.
pub(crate) fn rand_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

impl Staging {
    /// Where to build the image.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn name(&self) -> &ImageName {
        &self.name
    }

    /// Flushes the image to disk and renames it into place, replacing the old image when the
    /// staging was created with `force`. After a crash the store holds either the old image or
    /// the new one under the real name, never a partial one.
    pub(crate) fn commit(mut self, read_only: bool) -> Result<(), StoreError> {
        let top = File::open(&self.path).at(&self.path)?;
        if self.kind == ImageKind::Raw {
            // One file: its own fsync, not a flush of everything else on the file system.
            top.sync_all().at(&self.path)?;
        } else {
            rustix::fs::syncfs(&top).at(&self.path)?;
        }
        drop(top);
        let new = cstr(&self.path)?;
        let target = cstr(&self.target)?;
        match renameat_with(CWD, &new, CWD, &target, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) if self.force => {
                renameat_with(CWD, &new, CWD, &target, RenameFlags::EXCHANGE).at(&self.target)?;
                // The old image now sits under the hidden staging name; if removing it is cut
                // short, `clean` finishes the job.
                set_read_only_path(&self.path, self.kind, false)?;
                remove_image_path(&self.path)?;
            }
            Err(rustix::io::Errno::EXIST) => {
                return Err(StoreError::Exists {
                    name: self.name.to_string(),
                    store: self.store.clone(),
                    can_force: true,
                })
            }
            Err(e) => return Err(StoreError::io(&self.target, e)),
        }
        self.committed = true;
        // After the rename: an immutable directory cannot be renamed.
        if read_only {
            set_read_only_path(&self.target, self.kind, true)?;
        }
        let store_dir = File::open(&self.store).at(&self.store)?;
        rustix::fs::fsync(&store_dir).at(&self.store)?;
        Ok(())
    }
}

/// A directory beside a raw image being built, for the tree that goes into the image. It has
/// the same name's hidden staging prefix, so the staging's lock covers it and `clean` removes
/// it after a crash; it is removed when dropped.
#[derive(Debug)]
pub(crate) struct TreeScratch {
    path: PathBuf,
}

impl TreeScratch {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TreeScratch {
    fn drop(&mut self) {
        let _ = set_read_only_path(&self.path, ImageKind::Directory, false);
        let _ = remove_image_path(&self.path);
    }
}

impl Staging {
    /// Creates a [`TreeScratch`] for this staging.
    pub(crate) fn tree_scratch(&self) -> Result<TreeScratch, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = super::layout::Layout::new(&self.store).staging_path(
            &self.name,
            ImageKind::Directory,
            rand_tag(),
        );
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .at(&path)?;
        Ok(TreeScratch { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = set_read_only_path(&self.path, self.kind, false);
            let _ = remove_image_path(&self.path);
        }
    }
}

pub(crate) fn cstr(path: &Path) -> Result<CString, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| StoreError::io(path, std::io::Error::other(e)))
}
