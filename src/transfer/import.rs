//! import-tar's and import-raw's orchestration, which pull-tar and pull-raw share: a stream
//! in, an image committed to the store or nothing. The digest is taken while the input
//! streams; a full store is told apart from a broken input.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{layout, DiskSpec, TransferError, TreeTarget};
use crate::archive::{self, Compression, Decoder, ExtractOptions};
use crate::image::{self, ImportReport, Source};
use crate::store::{copy_tree, ImageKind, ImageName, LockPurpose, Staging, Store};

/// What to import and how.
#[derive(Debug, Clone)]
pub(crate) struct ImportRequest {
    pub(crate) name: ImageName,
    /// Replace an existing image of that name.
    pub(crate) force: bool,
    pub(crate) read_only: bool,
    /// Refuse the input unless every byte of it hashes to this.
    pub(crate) sha256: Option<[u8; 32]>,
}

#[derive(Debug)]
pub(crate) struct Imported {
    pub(crate) compression: Compression,
    pub(crate) members: u64,
    /// The single top-level directory whose contents became the image root.
    pub(crate) lifted: Option<OsString>,
    /// Non-fatal problems, each naming the archive member.
    pub(crate) warnings: Vec<String>,
    /// The SHA-256 of every byte of the input, when it was asked for.
    pub(crate) sha256: Option<[u8; 32]>,
}

/// Imports the tar stream `input` (compression detected by content) as a new image: a
/// directory, or with `disk` a raw disk built from the extracted tree. The image is built
/// under a hidden name and committed only when the archive was read to its end, the
/// compressed stream's checks passed and the digest matched; on any error nothing is left.
/// `on_detect` learns the compression as soon as it is known.
pub(crate) fn import_tar(
    store: &Store,
    input: impl Read + Send + 'static,
    req: &ImportRequest,
    disk: Option<DiskSpec>,
    on_detect: &mut dyn FnMut(Compression),
) -> Result<Imported, TransferError> {
    let target = TreeTarget::create(store, &req.name, LockPurpose::Import, req.force, disk)?;
    let imported = extract_tar(
        target.tree(),
        store.root(),
        input,
        req.sha256.is_some(),
        on_detect,
    )?;
    check_sha256(req.sha256, imported.sha256)?;
    target.commit(None, req.read_only)?;
    Ok(imported)
}

/// The work of [`import_tar`] into a tree the caller staged and commits (a pull checks the
/// digest against a list first): decode, extract, hash every byte when `sha256`, lift a
/// single top directory. `store` is named when the disk fills.
pub(crate) fn extract_tar(
    tree: &Path,
    store: &Path,
    input: impl Read + Send + 'static,
    sha256: bool,
    on_detect: &mut dyn FnMut(Compression),
) -> Result<Imported, TransferError> {
    let mut decoder = Decoder::spawn(input, sha256).map_err(TransferError::Archive)?;
    on_detect(decoder.compression());
    let compression = decoder.compression();
    // Two writers: with the decoder and the reading thread, enough to keep the file system
    // busy while the next members are decoded and parsed (more only add contention).
    let opts = ExtractOptions {
        writers: 2,
        writeback: true,
        ..ExtractOptions::default()
    };
    let extracted = archive::extract(&mut decoder, tree, &opts, None);
    let stats = match extracted {
        Ok(stats) => stats,
        Err(e) => {
            // The decoder thread may be blocked reading a stalled pipe: let it go rather
            // than wait for it.
            drop(decoder);
            return Err(TransferError::archive(e, store));
        }
    };
    if sha256 {
        // Read what follows the archive's end too: the digest covers the whole input.
        std::io::copy(&mut decoder, &mut std::io::sink()).map_err(|source| {
            TransferError::Archive(archive::ArchiveError::Read { offset: 0, source })
        })?;
    }
    let digest = decoder.finish().map_err(TransferError::Archive)?;
    let lifted = layout::strip_single_top_dir(tree)?;
    Ok(Imported {
        compression,
        members: stats.members,
        lifted,
        warnings: stats.warnings,
        sha256: digest,
    })
}

/// The input's digest against the one asked for.
pub(crate) fn check_sha256(
    want: Option<[u8; 32]>,
    got: Option<[u8; 32]>,
) -> Result<(), TransferError> {
    match (want, got) {
        (Some(want), Some(got)) if want != got => Err(TransferError::Digest {
            got: hex::encode(got),
            want: hex::encode(want),
        }),
        _ => Ok(()),
    }
}

/// Imports the disk image `source` (raw or qcow2, any compression) as the raw image
/// `req.name`, committed only when converted whole and its digest matched.
pub(crate) fn import_raw(
    store: &Store,
    source: Source,
    req: &ImportRequest,
) -> Result<ImportReport, TransferError> {
    let staging = store.create(&req.name, LockPurpose::Import, ImageKind::Raw, req.force)?;
    let report = write_raw(&staging, store, source, req.sha256.is_some())?;
    check_sha256(req.sha256, report.sha256)?;
    staging
        .commit(req.read_only)
        .map_err(TransferError::Commit)?;
    Ok(report)
}

/// The work of [`import_raw`] into a raw staging the caller commits: convert `source` into
/// it and flush it, hashing the input when `sha256`.
pub(crate) fn write_raw(
    staging: &Staging,
    store: &Store,
    source: Source,
    sha256: bool,
) -> Result<ImportReport, TransferError> {
    let path = staging.path();
    let fs_err = |op, source| TransferError::Fs {
        op,
        path: path.to_path_buf(),
        source,
    };
    let dest = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| fs_err("open", e))?;
    let report = image::import_raw(source, &dest, store.root(), sha256).map_err(|e| {
        if e.is_no_space() {
            TransferError::StoreFull {
                store: store.root().to_path_buf(),
                source: Box::new(e),
            }
        } else {
            TransferError::Image(e)
        }
    })?;
    dest.sync_all().map_err(|e| fs_err("write", e))?;
    Ok(report)
}

/// import-fs: the directory `dir` copied (file data reflinked where the file system can) into
/// a new image, or with `disk` built straight into a raw disk with no copy first; committed
/// only when complete. A full store is said as such.
pub(crate) fn import_fs(
    store: &Store,
    dir: &Path,
    req: &ImportRequest,
    disk: Option<DiskSpec>,
    progress: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<(), TransferError> {
    let target = TreeTarget::create(store, &req.name, LockPurpose::Import, req.force, disk)?;
    let full = |e: TransferError| e.or_store_full(store.root());
    if target.is_raw() {
        return target.commit(Some(dir), req.read_only).map_err(full);
    }
    copy_tree(dir, target.tree(), progress).map_err(|e| full(TransferError::Copy(e)))?;
    target.commit(None, req.read_only).map_err(full)
}
