//! import-tar's orchestration: a stream in, an image committed to the store or nothing.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;

use super::{layout, TransferError};
use crate::archive::{self, Compression, Decoder, ExtractOptions};
use crate::store::{ImageKind, ImageName, LockPurpose, Store};

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub name: ImageName,
    /// Replace an existing image of that name.
    pub force: bool,
    pub read_only: bool,
    /// Refuse the input unless every byte of it hashes to this.
    pub sha256: Option<[u8; 32]>,
}

#[derive(Debug)]
pub struct Imported {
    pub compression: Compression,
    pub members: u64,
    /// The single top-level directory whose contents became the image root.
    pub lifted: Option<OsString>,
    /// Non-fatal problems, each naming the archive member.
    pub warnings: Vec<String>,
}

/// Imports the tar stream `input` (compression detected by content) as a new image. The image
/// is built under a hidden name and committed only when the archive was read to its end, the
/// compressed stream's checks passed and the digest matched; on any error nothing is left.
/// `on_detect` learns the compression as soon as it is known.
pub fn import_tar(
    store: &Store,
    input: impl Read + Send + 'static,
    req: &ImportRequest,
    on_detect: &mut dyn FnMut(Compression),
) -> Result<Imported, TransferError> {
    let staging = store.create(
        &req.name,
        LockPurpose::Import,
        ImageKind::Directory,
        req.force,
    )?;
    let imported = extract_tar(staging.path(), store.root(), input, req.sha256, on_detect)?;
    staging.commit(req.read_only)?;
    Ok(imported)
}

/// The work of [`import_tar`] into a directory the caller staged (a raw image's scratch tree,
/// say) and commits: decode, extract, check the digest, lift a single top directory. `store`
/// is named when the disk fills.
pub fn extract_tar(
    tree: &Path,
    store: &Path,
    input: impl Read + Send + 'static,
    sha256: Option<[u8; 32]>,
    on_detect: &mut dyn FnMut(Compression),
) -> Result<Imported, TransferError> {
    let mut decoder = Decoder::spawn(input, sha256.is_some()).map_err(TransferError::Archive)?;
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
    // After a failure the decoder thread may be blocked reading a stalled pipe: let it go
    // rather than wait for it.
    let digest = match &extracted {
        Ok(_) => decoder.finish(),
        Err(_) => {
            drop(decoder);
            Ok(None)
        }
    };
    let stats = extracted.map_err(|e| TransferError::archive(e, store))?;
    let digest = digest.map_err(TransferError::Archive)?;
    if let (Some(want), Some(got)) = (sha256, digest) {
        if want != got {
            return Err(TransferError::Digest {
                got: hex::encode(got),
                want: hex::encode(want),
            });
        }
    }
    let lifted = layout::strip_single_top_dir(tree)?;
    Ok(Imported {
        compression,
        members: stats.members,
        lifted,
        warnings: stats.warnings,
    })
}
