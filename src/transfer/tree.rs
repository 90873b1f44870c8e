//! Where an image built from a tree goes: a directory staging, or for a raw image a raw
//! staging with a scratch directory for the tree, turned into a disk at commit. import-tar,
//! import-fs, bootstrap and pull-tar build their trees here.

use std::path::{Path, PathBuf};

use super::TransferError;
use crate::image::{self, DiskFs};
use crate::store::{ImageKind, ImageName, LockPurpose, Staging, Store, TreeScratch};

/// A raw disk to build from the tree: its root file system and size (`None`: from the tree).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskSpec {
    pub(crate) fs: DiskFs,
    pub(crate) size: Option<u64>,
}

/// A new image being built from a tree; dropped uncommitted, it leaves nothing.
pub(crate) struct TreeTarget {
    staging: Staging,
    scratch: Option<TreeScratch>,
    disk: Option<DiskSpec>,
    mount_base: PathBuf,
}

impl TreeTarget {
    /// Takes `name`'s lock for `purpose` and stages a directory, or with `disk` a raw image.
    pub(crate) fn create(
        store: &Store,
        name: &ImageName,
        purpose: LockPurpose,
        force: bool,
        disk: Option<DiskSpec>,
    ) -> Result<TreeTarget, TransferError> {
        let kind = match disk {
            Some(_) => ImageKind::Raw,
            None => ImageKind::Directory,
        };
        let staging = store.create(name, purpose, kind, force)?;
        let scratch = match disk {
            Some(_) => Some(staging.tree_scratch()?),
            None => None,
        };
        Ok(TreeTarget {
            staging,
            scratch,
            disk,
            mount_base: store.state_dir().join("raw-mounts"),
        })
    }

    /// Where to build the tree.
    pub(crate) fn tree(&self) -> &Path {
        self.scratch
            .as_ref()
            .map_or(self.staging.path(), |s| s.path())
    }

    pub(crate) fn is_raw(&self) -> bool {
        self.disk.is_some()
    }

    /// Builds the disk from `source` (default: [`TreeTarget::tree`]) when raw, then commits.
    pub(crate) fn commit(
        self,
        source: Option<&Path>,
        read_only: bool,
    ) -> Result<(), TransferError> {
        if let Some(DiskSpec { fs, size }) = self.disk {
            let tree = source.unwrap_or(self.tree());
            let size = size.unwrap_or_else(|| image::default_size(tree, fs));
            let path = self.staging.path();
            let disk = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| TransferError::Fs {
                    op: "open",
                    path: path.to_path_buf(),
                    source,
                })?;
            image::build_disk(tree, &disk, path, size, fs, &self.mount_base).map_err(|source| {
                TransferError::BuildDisk {
                    fs: fs.name(),
                    size,
                    name: self.staging.name().to_string(),
                    source,
                }
            })?;
        }
        drop(self.scratch);
        self.staging
            .commit(read_only)
            .map_err(TransferError::Commit)
    }
}
