//! The qcow2 header (docs/interop/qcow2.txt in QEMU), checked field by field against the file's
//! real length before anything it points at is read.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::image::ImageError;

pub(crate) const MAGIC: &[u8; 4] = b"QFI\xfb";

/// QEMU's own limits: an L1 table of at most 32 MiB and a refcount table of at most 8 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

const EXT_END: u32 = 0;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterCompression {
    Deflate,
    Zstd,
}

#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) cluster_bits: u32,
    pub(crate) virtual_size: u64,
    pub(crate) l1_size: u64,
    pub(crate) l1_offset: u64,
    pub(crate) reftable_offset: u64,
    pub(crate) reftable_clusters: u64,
    /// Bytes of cluster 0 the header and its extensions use.
    pub(crate) header_bytes: u64,
    pub(crate) compression: ClusterCompression,
    /// The file's length: every offset is checked against it.
    pub(crate) file_len: u64,
}

impl Header {
    pub(crate) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table.
    pub(crate) fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// Reads exactly `buf.len()` bytes at `offset`, calling a short read a truncated image.
pub(crate) fn read_exact_at(
    file: &File,
    buf: &mut [u8],
    offset: u64,
    what: &str,
) -> Result<(), ImageError> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ImageError::invalid(format!("{what} is cut off: the file is truncated"), offset)
        } else {
            ImageError::Read { offset, source: e }
        }
    })
}

pub(crate) fn parse(file: &File) -> Result<Header, ImageError> {
    let file_len = crate::image::sparse::file_size(file)?;
    let mut b = [0u8; 112];
    let got = file.read_at(&mut b, 0).map_err(|e| ImageError::Read {
        offset: 0,
        source: e,
    })?;
    if got < 72 {
        return Err(ImageError::invalid(
            "the header is cut off: the file is truncated",
            0,
        ));
    }
    if &b[..4] != MAGIC {
        return Err(ImageError::invalid("no qcow2 magic", 0));
    }
    let version = be32(&b, 4);
    if version != 2 && version != 3 {
        return Err(ImageError::Qcow2Refused {
            what: format!("version {version}"),
            hint: "only versions 2 and 3 exist",
        });
    }
    let backing_offset = be64(&b, 8);
    let backing_len = be32(&b, 16) as u64;
    let cluster_bits = be32(&b, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(ImageError::invalid(
            format!("cluster_bits {cluster_bits} is not 9 to 21"),
            20,
        ));
    }
    let cluster_size = 1u64 << cluster_bits;
    if backing_offset != 0 {
        let mut name = vec![0u8; backing_len.min(1023) as usize];
        let _ = file.read_at(&mut name, backing_offset);
        return Err(ImageError::Qcow2Refused {
            what: format!("it has a backing file {:?}", String::from_utf8_lossy(&name)),
            hint: "flatten it first: qemu-img convert -O qcow2 IN OUT",
        });
    }
    let virtual_size = be64(&b, 24);
    let crypt = be32(&b, 32);
    if crypt != 0 {
        return Err(ImageError::Qcow2Refused {
            what: format!("it is encrypted (method {crypt})"),
            hint: "decrypt it first with qemu-img convert",
        });
    }
    let l1_size = be32(&b, 36) as u64;
    let l1_offset = be64(&b, 40);
    let reftable_offset = be64(&b, 48);
    let reftable_clusters = be32(&b, 56) as u64;
    let (mut header_bytes, mut compression) = (72u64, ClusterCompression::Deflate);
    if version == 3 {
        if got < 104 {
            return Err(ImageError::invalid("the version 3 header is cut off", 72));
        }
        let incompatible = be64(&b, 72);
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        if incompatible & !known != 0 {
            return Err(ImageError::Qcow2Refused {
                what: format!("unknown incompatible features {:#x}", incompatible & !known),
                hint: "a newer qemu-img can convert it to a plain qcow2 or raw",
            });
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(ImageError::Qcow2Refused {
                what: "it is marked corrupt".into(),
                hint: "repair it first: qemu-img check -r all",
            });
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(ImageError::Qcow2Refused {
                what: "its data is in an external data file".into(),
                hint: "convert it first: qemu-img convert -O qcow2 IN OUT",
            });
        }
        if incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(ImageError::Qcow2Refused {
                what: "it uses extended L2 entries (subclusters)".into(),
                hint: "convert it first: qemu-img convert -O qcow2 IN OUT",
            });
        }
        let refcount_order = be32(&b, 96);
        if refcount_order > 6 {
            return Err(ImageError::invalid(
                format!("refcount_order {refcount_order} is over 6"),
                96,
            ));
        }
        header_bytes = be32(&b, 100) as u64;
        if header_bytes < 104
            || header_bytes > cluster_size
            || header_bytes > file_len
            || header_bytes % 8 != 0
        {
            return Err(ImageError::invalid(
                format!("the header says it is {header_bytes} bytes long"),
                100,
            ));
        }
        if header_bytes > 104 {
            compression = match b[104] {
                0 => ClusterCompression::Deflate,
                1 if incompatible & INCOMPAT_COMPRESSION != 0 => ClusterCompression::Zstd,
                t => {
                    return Err(ImageError::invalid(
                        format!("unknown compression type {t}"),
                        104,
                    ))
                }
            };
        } else if incompatible & INCOMPAT_COMPRESSION != 0 {
            return Err(ImageError::invalid(
                "the compression type bit is set without a type",
                72,
            ));
        }
    }
    let mut header = Header {
        version,
        cluster_bits,
        virtual_size,
        l1_size,
        l1_offset,
        reftable_offset,
        reftable_clusters,
        header_bytes,
        compression,
        file_len,
    };
    header.header_bytes = check_extensions(file, &header)?;
    check_tables(&header)?;
    Ok(header)
}

/// Walks the header extensions (all inside cluster 0) and refuses the ones that make an image
/// depend on something outside it; returns where they end.
fn check_extensions(file: &File, h: &Header) -> Result<u64, ImageError> {
    let end = h.cluster_size().min(h.file_len);
    let mut at = h.header_bytes;
    let mut b = [0u8; 8];
    while at + 8 <= end {
        read_exact_at(file, &mut b, at, "a header extension")?;
        let (kind, len) = (be32(&b, 0), be32(&b, 4) as u64);
        if kind == EXT_END {
            return Ok(at + 8);
        }
        if kind == EXT_CRYPTO {
            return Err(ImageError::Qcow2Refused {
                what: "it has an encryption header".into(),
                hint: "decrypt it first with qemu-img convert",
            });
        }
        if kind == EXT_DATA_FILE {
            return Err(ImageError::Qcow2Refused {
                what: "it names an external data file".into(),
                hint: "convert it first: qemu-img convert -O qcow2 IN OUT",
            });
        }
        at = at + 8 + len.div_ceil(8) * 8;
    }
    if at > end {
        return Err(ImageError::invalid(
            "a header extension runs past the first cluster",
            at,
        ));
    }
    Ok(at)
}

fn check_tables(h: &Header) -> Result<(), ImageError> {
    let cs = h.cluster_size();
    let l1_bytes = h.l1_size * 8;
    if l1_bytes > MAX_L1_BYTES {
        return Err(ImageError::invalid(
            format!("the L1 table of {} entries is too large", h.l1_size),
            36,
        ));
    }
    let covered = h.l1_size.saturating_mul(h.l2_entries()).saturating_mul(cs);
    if h.virtual_size > covered {
        return Err(ImageError::invalid(
            format!(
                "the virtual size {} is more than its L1 table of {} entries maps",
                h.virtual_size, h.l1_size
            ),
            24,
        ));
    }
    let needed = h.virtual_size.div_ceil(h.l2_entries() * cs);
    if h.l1_size < needed {
        return Err(ImageError::invalid(
            "the L1 table is too small for the virtual size",
            36,
        ));
    }
    check_region(h, h.l1_offset, l1_bytes, "the L1 table", 40)?;
    let reftable_bytes = h.reftable_clusters * cs;
    if reftable_bytes > MAX_REFTABLE_BYTES {
        return Err(ImageError::invalid("the refcount table is too large", 56));
    }
    check_region(
        h,
        h.reftable_offset,
        reftable_bytes,
        "the refcount table",
        48,
    )
}

/// A table must start on a cluster boundary, after cluster 0, and end inside the file.
pub(crate) fn check_region(
    h: &Header,
    offset: u64,
    len: u64,
    what: &str,
    field: u64,
) -> Result<(), ImageError> {
    if len == 0 {
        return Ok(());
    }
    if offset % h.cluster_size() != 0 || offset == 0 {
        return Err(ImageError::invalid(
            format!("{what} at {offset} is not cluster-aligned"),
            field,
        ));
    }
    if offset.checked_add(len).is_none_or(|end| end > h.file_len) {
        return Err(ImageError::invalid(
            format!(
                "{what} at {offset} ({len} bytes) lies past the end of the file ({} bytes)",
                h.file_len
            ),
            field,
        ));
    }
    Ok(())
}
