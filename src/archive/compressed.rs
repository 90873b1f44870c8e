//! A tree out as a compressed tar stream, with the reading of the tree and the compression
//! overlapped: the whole of export-tar below the store.

use std::io::Write;
use std::path::Path;

use super::{write_tree, ArchiveError, Compression, Encoder, ThreadedWriter, WriteOptions};

/// Writes smaller than this are gathered before they reach an encoder with its own workers;
/// larger ones (file data is read 1 MiB at a time) go through without a copy.
const STAGED: usize = 256 << 10;

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
    let opts = WriteOptions::default();
    let (encoder, stats) = if encoder.has_own_workers() {
        // zstd's workers already compress beside this thread: it reads the tree and copies
        // straight into their job buffers (a hand-off thread in between cost 6% more CPU,
        // docs/benchmarks.md). Small writes (headers, small files) are gathered first, so
        // zstd is not entered once per header.
        let mut staged = std::io::BufWriter::with_capacity(STAGED, encoder);
        let stats = write_tree(root, &mut staged, &opts, warn, progress)?;
        let encoder = staged.into_inner().map_err(|e| write_err(e.into_error()))?;
        (encoder, stats)
    } else {
        // The tree is read on this thread and compressed on another, as `tar | zstd` does.
        let mut threaded = ThreadedWriter::new(encoder).map_err(write_err)?;
        let stats = write_tree(root, &mut threaded, &opts, warn, progress)?;
        (threaded.finish().map_err(write_err)?, stats)
    };
    let buffered = encoder.finish()?;
    let mut out = buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    out.flush().map_err(write_err)?;
    Ok((out, stats.members))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn export(root: &Path, format: Compression, threads: u32) -> Vec<u8> {
        let packing = Packing {
            format,
            level: None,
            threads,
        };
        let (out, members) =
            write_compressed_tree(root, Vec::new(), packing, &mut |w| panic!("{w}"), None).unwrap();
        assert_eq!(members, 4);
        out
    }

    #[test]
    fn zstd_with_and_without_workers_carries_the_plain_stream() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than zstd's jobs and than the staging buffer, and not all one byte.
        let big: Vec<u8> = (0..9_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect();
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("small"), b"small file").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let plain = export(dir.path(), Compression::None, 1);
        for threads in [1, 2] {
            let packed = export(dir.path(), Compression::Zstd, threads);
            let mut unpacked = Vec::new();
            zstd::stream::read::Decoder::new(&packed[..])
                .unwrap()
                .read_to_end(&mut unpacked)
                .unwrap();
            assert!(unpacked == plain, "zstd with {threads} threads");
        }
    }
}
