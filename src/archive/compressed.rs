//! A tree out as a compressed tar stream, with the reading of the tree and the compression
//! overlapped: the whole of export-tar below the store.

use std::io::Write;
use std::path::Path;

use super::{write_tree, ArchiveError, Compression, Encoder, ThreadedWriter, WriteOptions};

/// How to compress.
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    pub(crate) format: Compression,
    /// The compressor's level; `None` takes the tool's default.
    pub(crate) level: Option<i32>,
    /// Compression threads; 0 means all cores.
    pub(crate) threads: u32,
}

/// Writes the tree under `root` to `out` compressed as `packing` says, and hands `out` back
/// (flushed) with the number of members written.
pub fn write_compressed_tree<W: Write + Send + 'static>(
    root: &Path,
    out: W,
    packing: Packing,
    warn: &mut dyn FnMut(String),
    progress: Option<&dyn Fn(u64)>,
) -> Result<(W, u64), ArchiveError> {
    let write_err = |source| ArchiveError::Write { source };
    let buffered = std::io::BufWriter::with_capacity(1 << 20, out);
    let encoder = Encoder::new(buffered, packing.format, packing.level, packing.threads)?;
    // The tree is read on this thread and compressed on another, as `tar | zstd` does.
    let mut threaded = ThreadedWriter::new(encoder).map_err(write_err)?;
    let stats = write_tree(
        root,
        &mut threaded,
        &WriteOptions::default(),
        warn,
        progress,
    )?;
    let encoder = threaded.finish().map_err(write_err)?;
    let buffered = encoder.finish()?;
    let mut out = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    out.flush().map_err(write_err)?;
    Ok((out, stats.members))
}
