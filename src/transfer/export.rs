//! export-tar's and export-raw's orchestration: an image out as a (compressed) tar stream or
//! a disk image, into a file that appears only when complete ([`TempOutput`]), or into any
//! writer.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{TempOutput, TransferError};
use crate::archive;
use crate::image::{self, ExportFormat};
use crate::store::{ImageKind, ImageName, LockPurpose, Store};

#[derive(Debug)]
pub(crate) struct Exported {
    pub(crate) members: u64,
}

/// Where the output goes: a file (written beside it and renamed when complete) or a stream.
pub(crate) enum ExportTarget<'a> {
    File { path: &'a Path, force: bool },
    Stream(Box<dyn Write + Send>),
}

/// Writes an image's tree as a tar archive compressed as `packing` says. The caller holds the
/// image (its lock, or a frozen running machine) and gives the tree to read: the image's
/// directory, a snapshot, or a raw image's mounted root.
pub(crate) fn export_tar(
    tree: &Path,
    packing: archive::Packing,
    target: ExportTarget<'_>,
    warn: &mut dyn FnMut(String),
    progress: Option<&dyn Fn(u64)>,
) -> Result<Exported, TransferError> {
    let (mut temp, writer): (Option<TempOutput>, Box<dyn Write + Send>) = match target {
        ExportTarget::File { path, force } => {
            let t = TempOutput::create(path, force)?;
            let w = t.file().try_clone().map_err(|e| t.fs_err("write", e))?;
            // Written back while the export runs, so the commit's fsync waits for the tail only.
            (Some(t), Box::new(archive::WritebackFile::new(w)))
        }
        ExportTarget::Stream(w) => (None, w),
    };
    let (_, members) = archive::write_compressed_tree(tree, writer, packing, warn, progress)
        .map_err(TransferError::Archive)?;
    if let Some(t) = &mut temp {
        t.commit()?;
    }
    Ok(Exported { members })
}

/// Writes raw image `name` in `format`. Its lock is held throughout, so a running machine or
/// another operation on it makes the export fail at once instead of tearing.
pub(crate) fn export_raw(
    store: &Store,
    name: &ImageName,
    target: ExportTarget<'_>,
    format: ExportFormat,
) -> Result<(), TransferError> {
    let _lock = store.lock(name, LockPurpose::Export)?;
    let image = store.image(name)?;
    if image.kind() != ImageKind::Raw {
        return Err(TransferError::NotRaw {
            name: name.to_string(),
        });
    }
    let source = File::open(image.path()).map_err(|source| TransferError::Fs {
        op: "open",
        path: image.path().to_path_buf(),
        source,
    })?;
    match target {
        ExportTarget::File { path, force } => {
            let mut out = TempOutput::create(path, force)?;
            image::export_raw(&source, image::Target::File(out.file()), format, 0)?;
            out.commit()
        }
        ExportTarget::Stream(w) => {
            image::export_raw(&source, image::Target::Stream(w), format, 0)?;
            Ok(())
        }
    }
}
