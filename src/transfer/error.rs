//! The transfer module's one error type.

use std::path::PathBuf;

use crate::archive::ArchiveError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(ArchiveError),
    #[error("the store {} is full", store.display())]
    StoreFull {
        store: PathBuf,
        #[source]
        source: ArchiveError,
    },
    #[error("its SHA-256 is {got} but {want} was expected")]
    Digest { got: String, want: String },
    #[error("image {name} is a raw disk image; export it with export-raw")]
    NotATree { name: String },
    #[error("{} already exists; use --force to replace it", path.display())]
    OutputExists { path: PathBuf },
    #[error("cannot {op} {}", path.display())]
    Fs {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TransferError {
    /// An archive error, told apart as "the store is full" when the disk ran out.
    pub(crate) fn archive(e: ArchiveError, store: &std::path::Path) -> TransferError {
        if e.is_no_space() {
            TransferError::StoreFull {
                store: store.to_path_buf(),
                source: e,
            }
        } else {
            TransferError::Archive(e)
        }
    }
}
