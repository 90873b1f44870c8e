//! The guest-to-host map of a qcow2 file, read from the active L1 and its L2 tables and
//! checked in full before any data is converted: alignment, bounds, reserved bits, and that no
//! host cluster serves two purposes.

use std::collections::HashSet;
use std::fs::File;

use super::header::{check_region, read_exact_at, Header};
use crate::image::ImageError;

const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// One guest cluster with data: where it is in the file and, when compressed, how many bytes
/// to read there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    pub(crate) guest: u64,
    pub(crate) host: u64,
    pub(crate) compressed_len: u64,
}

/// What each host cluster is used for.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Use {
    Free,
    Metadata,
    Data,
    Compressed,
}

struct Owners {
    uses: Vec<Use>,
    cluster_bits: u32,
}

impl Owners {
    fn claim(&mut self, offset: u64, len: u64, what: Use, name: &str) -> Result<(), ImageError> {
        let first = offset >> self.cluster_bits;
        let last = (offset + len.max(1) - 1) >> self.cluster_bits;
        for c in first..=last {
            let slot = self.uses.get_mut(c as usize).ok_or_else(|| {
                ImageError::invalid(format!("{name} lies past the end of the file"), offset)
            })?;
            match (*slot, what) {
                (Use::Free, _) => *slot = what,
                (Use::Compressed, Use::Compressed) => {}
                _ => {
                    return Err(ImageError::invalid(
                        format!(
                            "{name} overlaps another table or cluster at host cluster {}",
                            c << self.cluster_bits
                        ),
                        offset,
                    ))
                }
            }
        }
        Ok(())
    }
}

fn be64(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())
}

/// Reads and checks the whole map; returns the clusters to convert in guest order.
pub(super) fn plan(file: &File, h: &Header) -> Result<Vec<Job>, ImageError> {
    let cs = h.cluster_size();
    let mut owners = Owners {
        uses: vec![Use::Free; h.file_len.div_ceil(cs) as usize],
        cluster_bits: h.cluster_bits,
    };
    owners.claim(0, h.header_bytes, Use::Metadata, "the header")?;
    owners.claim(h.l1_offset, h.l1_size * 8, Use::Metadata, "the L1 table")?;
    check_refcounts(file, h, &mut owners)?;

    let mut l1 = vec![0u8; (h.l1_size * 8) as usize];
    read_exact_at(file, &mut l1, h.l1_offset, "the L1 table")?;
    let mut l2 = vec![0u8; cs as usize];
    let mut jobs = Vec::new();
    let mut compressed_starts = HashSet::new();
    let guest_clusters = h.virtual_size.div_ceil(cs);
    for i in 0..h.l1_size as usize {
        let entry = be64(&l1, i);
        let at = h.l1_offset + i as u64 * 8;
        if entry & L1_RESERVED != 0 {
            return Err(ImageError::invalid("an L1 entry has reserved bits set", at));
        }
        let table = entry & OFFSET_MASK;
        if table == 0 {
            continue;
        }
        let first_guest_cluster = i as u64 * h.l2_entries();
        if first_guest_cluster >= guest_clusters {
            return Err(ImageError::invalid(
                "an L1 entry maps past the virtual size",
                at,
            ));
        }
        check_region(h, table, cs, "an L2 table", at)?;
        owners.claim(table, cs, Use::Metadata, "an L2 table")?;
        read_exact_at(file, &mut l2, table, "an L2 table")?;
        let count = h.l2_entries().min(guest_clusters - first_guest_cluster);
        for j in 0..h.l2_entries() as usize {
            let entry = be64(&l2, j);
            let at = table + j as u64 * 8;
            if j as u64 >= count {
                if entry & !COPIED != 0 {
                    return Err(ImageError::invalid(
                        "an L2 entry maps past the virtual size",
                        at,
                    ));
                }
                continue;
            }
            let guest = (first_guest_cluster + j as u64) * cs;
            if let Some(job) = l2_entry(h, entry, guest, at, &mut owners, &mut compressed_starts)? {
                jobs.push(job);
            }
        }
    }
    Ok(jobs)
}

fn l2_entry(
    h: &Header,
    entry: u64,
    guest: u64,
    at: u64,
    owners: &mut Owners,
    compressed_starts: &mut HashSet<u64>,
) -> Result<Option<Job>, ImageError> {
    let cs = h.cluster_size();
    if entry & COMPRESSED != 0 {
        // Offset in the low bits, then the count of further 512-byte sectors up to bit 61.
        let x = 62 - (h.cluster_bits - 8);
        let host = entry & ((1u64 << x) - 1);
        let sectors = ((entry & !(COPIED | COMPRESSED)) >> x) + 1;
        if entry & COPIED != 0 {
            return Err(ImageError::invalid(
                "a compressed L2 entry has the copied bit",
                at,
            ));
        }
        if host < h.header_bytes || host >= h.file_len {
            return Err(ImageError::invalid(
                format!("a compressed cluster at {host} lies outside the file"),
                at,
            ));
        }
        let len = (sectors * 512 - (host & 511)).min(h.file_len - host);
        if !compressed_starts.insert(host) {
            return Err(ImageError::invalid(
                format!("two guest clusters share the compressed cluster at {host}"),
                at,
            ));
        }
        owners.claim(
            host,
            len,
            super::map::Use::Compressed,
            "a compressed cluster",
        )?;
        return Ok(Some(Job {
            guest,
            host,
            compressed_len: len,
        }));
    }
    if entry & L2_RESERVED != 0 {
        return Err(ImageError::invalid("an L2 entry has reserved bits set", at));
    }
    let host = entry & OFFSET_MASK;
    let zero = h.version >= 3 && entry & ZERO != 0;
    if host == 0 {
        return Ok(None);
    }
    if host % cs != 0 {
        return Err(ImageError::invalid(
            format!("a data cluster at {host} is not cluster-aligned"),
            at,
        ));
    }
    let len = (h.virtual_size - guest).min(cs);
    if host.checked_add(len).is_none_or(|end| end > h.file_len) {
        return Err(ImageError::invalid(
            format!("a data cluster at {host} lies past the end of the file"),
            at,
        ));
    }
    owners.claim(host, len, Use::Data, "a data cluster")?;
    Ok((!zero).then_some(Job {
        guest,
        host,
        compressed_len: 0,
    }))
}

/// The refcount table and blocks: in the file, aligned, and each in a cluster of its own (a
/// block pointing at the table, the header or another block is a loop).
fn check_refcounts(file: &File, h: &Header, owners: &mut Owners) -> Result<(), ImageError> {
    let cs = h.cluster_size();
    let bytes = h.reftable_clusters * cs;
    if bytes == 0 {
        return Err(ImageError::invalid("there is no refcount table", 56));
    }
    owners.claim(
        h.reftable_offset,
        bytes,
        Use::Metadata,
        "the refcount table",
    )?;
    let mut table = vec![0u8; bytes as usize];
    read_exact_at(file, &mut table, h.reftable_offset, "the refcount table")?;
    for i in 0..(bytes / 8) as usize {
        let block = be64(&table, i);
        let at = h.reftable_offset + i as u64 * 8;
        if block & 0x1ff != 0 {
            return Err(ImageError::invalid(
                "a refcount table entry has reserved bits set",
                at,
            ));
        }
        if block == 0 {
            continue;
        }
        check_region(h, block, cs, "a refcount block", at)?;
        owners.claim(block, cs, Use::Metadata, "a refcount block")?;
    }
    Ok(())
}
