//! qcow2 to raw. A qcow2 file is attacker-controlled input full of offsets, so this is a
//! reader of our own rather than a crate: the published ones either read lazily through a
//! cache with no bound tied to the file's size, or trust the header's sizes. Here every table is
//! checked against the file's length before it is read, every host cluster is owned by at most
//! one thing (header, L1, refcount table or block, L2 table, data), so refcount loops and
//! overlapping clusters are refused, and all memory is bounded by the file's size: an L1 table
//! at most as large as the file, one bookkeeping byte per host cluster, one job per allocated
//! guest cluster. Refcounts are checked for placement but not used: the L1/L2 tables alone
//! say what the guest sees. Internal snapshots are ignored (only the active L1 is read).
//!
//! It does not write qcow2: that is [`write`].

mod header;
mod map;
pub(crate) mod write;

use std::fs::File;

use rayon::prelude::*;

pub(crate) use header::MAGIC;
use header::{ClusterCompression, Header};
use map::Job;

use super::sparse::fill;
use super::ImageError;

/// Whether `magic` starts a qcow2 file.
pub(crate) fn is_qcow2(magic: &[u8]) -> bool {
    magic.starts_with(MAGIC)
}

/// What a conversion found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Qcow2Info {
    pub(crate) version: u32,
    pub(crate) virtual_size: u64,
}

/// Converts the qcow2 file `input` into raw bytes written to `output` (which must be empty),
/// leaving holes where the guest reads zeros. Everything is validated before anything is
/// written.
pub(crate) fn convert(input: &File, output: &File) -> Result<Qcow2Info, ImageError> {
    let h = header::parse(input)?;
    let jobs = map::plan(input, &h)?;
    output
        .set_len(h.virtual_size)
        .map_err(|e| ImageError::io("the new image", e))?;
    let cs = h.cluster_size() as usize;
    // Clusters are independent: decompress and write them on every core, one buffer pair per
    // worker. Writes land at distinct offsets, so their order does not matter.
    jobs.par_iter().try_for_each_init(
        || (vec![0u8; cs], Vec::new()),
        |(out, packed), job| convert_one(input, output, &h, job, out, packed),
    )?;
    Ok(Qcow2Info {
        version: h.version,
        virtual_size: h.virtual_size,
    })
}

fn convert_one(
    input: &File,
    output: &File,
    h: &Header,
    job: &Job,
    out: &mut [u8],
    packed: &mut Vec<u8>,
) -> Result<(), ImageError> {
    let len = (h.virtual_size - job.guest).min(h.cluster_size()) as usize;
    let out = &mut out[..];
    if job.compressed_len == 0 {
        header::read_exact_at(input, &mut out[..len], job.host, "a data cluster")?;
    } else {
        packed.resize(job.compressed_len as usize, 0);
        header::read_exact_at(input, packed, job.host, "a compressed cluster")?;
        decompress(h.compression, packed, out).map_err(|e| ImageError::Qcow2Cluster {
            offset: job.host,
            source: e,
        })?;
    }
    // Zero blocks stay holes: the image keeps the sparseness the guest never wrote.
    super::sparse::write_sparse_at(output, &out[..len], job.guest)
        .map_err(|e| ImageError::io("the new image", e))
}

/// Decompresses one cluster: raw deflate (QEMU's zlib type, window bits -12) or a zstd frame;
/// the output must fill the cluster exactly.
fn decompress(kind: ClusterCompression, packed: &[u8], out: &mut [u8]) -> std::io::Result<()> {
    let filled = match kind {
        ClusterCompression::Deflate => {
            let mut d = flate2::read::DeflateDecoder::new(packed);
            fill(&mut d, out)?
        }
        ClusterCompression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(packed)?.single_frame();
            fill(&mut d, out)?
        }
    };
    if filled != out.len() {
        return Err(std::io::Error::other(format!(
            "{filled} bytes instead of {}",
            out.len()
        )));
    }
    Ok(())
}
