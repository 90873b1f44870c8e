use std::io;
use std::path::PathBuf;

/// Everything reading, converting, dissecting or mounting a raw image can refuse or fail at.
/// qcow2 variants carry the byte offset in the (decompressed) qcow2 file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("the input is empty")]
    Empty,
    #[error("the input is {what}, not a disk image; {hint}")]
    NotADisk {
        what: &'static str,
        hint: &'static str,
    },
    #[error("reading the input at byte {offset}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("decompressing the input")]
    Decompress {
        #[source]
        source: crate::archive::ArchiveError,
    },
    #[error("qcow2: {what} (at byte {offset}); the image is damaged or hostile")]
    Qcow2Invalid { what: String, offset: u64 },
    #[error("qcow2: {what}; rmach imports only self-contained qcow2 images ({hint})")]
    Qcow2Refused { what: String, hint: &'static str },
    #[error("qcow2: the compressed cluster at byte {offset} does not decompress to one cluster")]
    Qcow2Cluster {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what}")]
    Layout { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Mount {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed: {detail}")]
    Tool { tool: String, detail: String },
    #[error("copying the tree into the disk")]
    Copy {
        #[source]
        source: crate::store::StoreError,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> ImageError {
        ImageError::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>, offset: u64) -> ImageError {
        ImageError::Qcow2Invalid {
            what: what.into(),
            offset,
        }
    }

    /// Whether the failure was a full disk (the store's file system).
    pub(crate) fn is_no_space(&self) -> bool {
        use std::error::Error;
        let mut e: Option<&(dyn Error + 'static)> = Some(self);
        while let Some(err) = e {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                if io.raw_os_error() == Some(libc::ENOSPC) {
                    return true;
                }
            }
            e = err.source();
        }
        false
    }
}
