//! The archive module's one error type.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the input is empty: give a tar archive (uncompressed, gzip, zstd, xz or bzip2)")]
    Empty,
    #[error("cannot read the archive at byte {offset} (corrupt or truncated input): {source}")]
    Read { offset: u64, source: io::Error },
    #[error("the archive is corrupt at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("the archive is truncated at byte {offset}: {reason}")]
    Truncated { offset: u64, reason: String },
    #[error("refusing archive member {member:?} at byte {offset}: {reason}")]
    Unsafe {
        member: String,
        offset: u64,
        reason: String,
    },
    #[error("cannot {op} {path:?}: {source}")]
    Fs {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write the archive: {source}")]
    Write { source: io::Error },
    #[error("the compression stream failed: {source}")]
    Codec { source: io::Error },
}

impl ArchiveError {
    pub(crate) fn fs(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<io::Error>,
    ) -> Self {
        ArchiveError::Fs {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// True when the failure came from a full disk or quota, so callers can say so plainly.
    pub fn is_no_space(&self) -> bool {
        let src = match self {
            ArchiveError::Fs { source, .. } | ArchiveError::Write { source } => source,
            _ => return false,
        };
        matches!(src.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}
