//! raw to qcow2 (version 3, 64 KiB clusters, 16-bit refcounts, no compression), written front
//! to back so that it can go to a pipe: header, L1 table, refcount table and blocks, L2 tables,
//! then the data clusters in guest order. Clusters the guest reads as zeros are left out.

use std::fs::File;
use std::io::Write;

use crate::image::sparse::{data_ranges, file_size, read_full_at};
use crate::image::ImageError;

const CLUSTER_BITS: u32 = 16;
const CS: u64 = 1 << CLUSTER_BITS;
const L2_ENTRIES: u64 = CS / 8;
const REFCOUNTS_PER_BLOCK: u64 = CS / 2;
const COPIED: u64 = 1 << 63;

/// Writes the raw image `source` as qcow2 to `out`; returns the number of data clusters.
pub(crate) fn write_qcow2(source: &File, out: &mut impl Write) -> Result<u64, ImageError> {
    let size = file_size(source)?;
    let clusters = nonzero_clusters(source, size)?;
    let guest_clusters = size.div_ceil(CS);
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES);
    let l1_clusters = (l1_size * 8).div_ceil(CS).max(1);
    let mut l2_tables: Vec<u64> = clusters.iter().map(|c| c / L2_ENTRIES).collect();
    l2_tables.dedup();
    let fixed = 1 + l1_clusters + l2_tables.len() as u64 + clusters.len() as u64;
    // The refcount blocks count themselves and the table: grow until it fits.
    let (mut blocks, mut table) = (1u64, 1u64);
    loop {
        let total = fixed + blocks + table;
        let want_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let want_table = (want_blocks * 8).div_ceil(CS);
        if want_blocks <= blocks && want_table <= table {
            break;
        }
        blocks = want_blocks.max(blocks);
        table = want_table.max(table);
    }
    let l1_at = CS;
    let table_at = l1_at + l1_clusters * CS;
    let blocks_at = table_at + table * CS;
    let l2_at = blocks_at + blocks * CS;
    let data_at = l2_at + l2_tables.len() as u64 * CS;
    let total = data_at / CS + clusters.len() as u64;

    let io = |e| ImageError::io("the qcow2 output", e);
    let mut cluster = vec![0u8; CS as usize];
    header(&mut cluster, size, l1_size, l1_at, table_at, table);
    out.write_all(&cluster).map_err(io)?;
    // L1: each table that exists, in order.
    let mut l1 = vec![0u8; (l1_clusters * CS) as usize];
    for (i, t) in l2_tables.iter().enumerate() {
        let at = (*t * 8) as usize;
        l1[at..at + 8].copy_from_slice(&((l2_at + i as u64 * CS) | COPIED).to_be_bytes());
    }
    out.write_all(&l1).map_err(io)?;
    let mut reftable = vec![0u8; (table * CS) as usize];
    for b in 0..blocks {
        let at = (b * 8) as usize;
        reftable[at..at + 8].copy_from_slice(&(blocks_at + b * CS).to_be_bytes());
    }
    out.write_all(&reftable).map_err(io)?;
    for b in 0..blocks {
        cluster.fill(0);
        for i in 0..REFCOUNTS_PER_BLOCK {
            if b * REFCOUNTS_PER_BLOCK + i < total {
                cluster[(i * 2) as usize + 1] = 1;
            }
        }
        out.write_all(&cluster).map_err(io)?;
    }
    let mut next_data = data_at;
    let mut rest = clusters.as_slice();
    for t in &l2_tables {
        cluster.fill(0);
        while let Some((&c, tail)) = rest.split_first() {
            if c / L2_ENTRIES != *t {
                break;
            }
            let at = ((c % L2_ENTRIES) * 8) as usize;
            cluster[at..at + 8].copy_from_slice(&(next_data | COPIED).to_be_bytes());
            next_data += CS;
            rest = tail;
        }
        out.write_all(&cluster).map_err(io)?;
    }
    for &c in &clusters {
        cluster.fill(0);
        let len = (size - c * CS).min(CS) as usize;
        read_full_at(source, &mut cluster[..len], c * CS)?;
        out.write_all(&cluster).map_err(io)?;
    }
    Ok(clusters.len() as u64)
}

fn header(b: &mut [u8], size: u64, l1_size: u64, l1_at: u64, table_at: u64, table: u64) {
    b.fill(0);
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(0, super::MAGIC);
    put(4, &3u32.to_be_bytes());
    put(20, &CLUSTER_BITS.to_be_bytes());
    put(24, &size.to_be_bytes());
    put(36, &(l1_size as u32).to_be_bytes());
    put(40, &l1_at.to_be_bytes());
    put(48, &table_at.to_be_bytes());
    put(56, &(table as u32).to_be_bytes());
    put(96, &4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    put(100, &104u32.to_be_bytes()); // header_length; the extension area after it is all zero
}

/// Guest cluster numbers whose bytes are not all zero, found through SEEK_DATA so holes are
/// never read.
fn nonzero_clusters(source: &File, size: u64) -> Result<Vec<u64>, ImageError> {
    let mut clusters = Vec::new();
    let mut buf = vec![0u8; CS as usize];
    for (start, end) in data_ranges(source, size)? {
        let mut c = start / CS;
        while c * CS < end {
            let len = (size - c * CS).min(CS) as usize;
            read_full_at(source, &mut buf[..len], c * CS)?;
            if buf[..len].iter().any(|&b| b != 0) && clusters.last() != Some(&c) {
                clusters.push(c);
            }
            c += 1;
        }
    }
    Ok(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn written_qcow2_converts_back_to_the_same_bytes() {
        let raw = tempfile::tempfile().unwrap();
        let size = (3 << 20) + 777;
        raw.set_len(size).unwrap();
        raw.write_all_at(&[1u8; 5000], 70_000).unwrap();
        raw.write_all_at(&[2u8; 10], size - 10).unwrap();
        let qcow = tempfile::tempfile().unwrap();
        let mut out = std::io::BufWriter::new(qcow.try_clone().unwrap());
        assert_eq!(write_qcow2(&raw, &mut out).unwrap(), 2);
        drop(out);
        let back = tempfile::tempfile().unwrap();
        let info = super::super::convert(&qcow, &back).unwrap();
        assert_eq!(info.virtual_size, size);
        let (mut a, mut b) = (vec![0u8; size as usize], vec![0u8; size as usize]);
        raw.read_exact_at(&mut a, 0).unwrap();
        back.read_exact_at(&mut b, 0).unwrap();
        assert!(a == b);
    }
}
