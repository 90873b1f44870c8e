//! The transfer module's one error type. Each variant names the path or image; none repeats
//! its source's text (the CLI prints the chain of causes once).

use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::image::ImageError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    /// Taking the image's lock or staging it: said as the store says it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Committing the finished image.
    #[error(transparent)]
    Commit(StoreError),
    /// Copying a tree into the image.
    #[error(transparent)]
    Copy(StoreError),
    #[error(transparent)]
    Archive(ArchiveError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error("the store {} is full", store.display())]
    StoreFull {
        store: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("its SHA-256 is {got} but {want} was expected")]
    Digest { got: String, want: String },
    #[error("image {name} is a directory tree; export it with export-tar")]
    NotRaw { name: String },
    #[error("cannot build a {fs} disk of {size} bytes for {name}")]
    BuildDisk {
        fs: &'static str,
        size: u64,
        name: String,
        #[source]
        source: ImageError,
    },
    #[error("{} already exists; use --force to replace it", path.display())]
    OutputExists { path: PathBuf },
    #[error("cannot write to {}: it is not a file name", path.display())]
    NotAFileName { path: PathBuf },
    #[error("cannot {op} {}", path.display())]
    Fs {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TransferError {
    /// This error, said as "the store is full" when the disk ran out (ENOSPC, EDQUOT) under it.
    pub(crate) fn or_store_full(self, store: &std::path::Path) -> TransferError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&self);
        let mut full = false;
        while let Some(e) = cause {
            let errno = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error());
            full |= matches!(errno, Some(libc::ENOSPC) | Some(libc::EDQUOT));
            cause = e.source();
        }
        if full {
            TransferError::StoreFull {
                store: store.to_path_buf(),
                source: Box::new(self),
            }
        } else {
            self
        }
    }

    /// An archive error, told apart as "the store is full" when the disk ran out.
    pub(crate) fn archive(e: ArchiveError, store: &std::path::Path) -> TransferError {
        if e.is_no_space() {
            TransferError::StoreFull {
                store: store.to_path_buf(),
                source: Box::new(e),
            }
        } else {
            TransferError::Archive(e)
        }
    }
}
