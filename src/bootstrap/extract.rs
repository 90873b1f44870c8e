//! The one place a package's data tar is written into the target: the archive module's safe
//! extractor (paths resolved inside the root, full metadata, in-root directory symlinks
//! followed as `tar --keep-directory-symlink` does, so merged-/usr suites extract into place).

use std::io::Read;
use std::path::Path;

use crate::archive::{self, ExtractOptions};

use super::{BootstrapError, Result};

/// Extracts `tar` (an uncompressed tar stream) under `root`; returns the member paths when
/// `opts` records them.
pub fn extract(
    tar: Box<dyn Read + Send>,
    root: &Path,
    deb: &Path,
    opts: &ExtractOptions,
) -> Result<Vec<Vec<u8>>> {
    archive::extract(tar, root, opts, None)
        .map(|stats| stats.paths)
        .map_err(|e| BootstrapError::Extract {
            path: deb.into(),
            // The archive error and its causes (its Display leaves the cause to `source`).
            reason: std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": "),
        })
}
