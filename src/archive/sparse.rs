//! Sparse files: reading the old GNU header map and the GNU PAX 1.0 in-data map, checking a
//! map against the data it describes, and finding a file's data segments with
//! SEEK_DATA/SEEK_HOLE for writing.

use std::io::Read;
use std::os::fd::AsFd;

use super::error::Fault;
use super::header::num;
use super::reader::TarReader;
use super::ArchiveError;

/// The most segments a sparse map may list: the map is held in memory (16 bytes a segment)
/// while the member is written, so this bounds the extractor's memory. A real file with more
/// than a million holes is unheard of; a map claiming more is refused, not truncated.
pub(crate) const MAX_SEGMENTS: usize = 1 << 20;

pub(crate) fn too_many(offset: u64) -> ArchiveError {
    ArchiveError::Corrupt {
        offset,
        fault: Fault::TooManySegments { max: MAX_SEGMENTS },
    }
}

/// Reads the map of an old GNU sparse member ('S'): four entries in the header, then
/// extension blocks of 21 while the "isextended" flag is set. Returns the map and real size.
pub(crate) fn read_old_gnu<R: Read>(
    r: &mut TarReader<R>,
    header: &[u8; 512],
    offset: u64,
) -> Result<(Vec<(u64, u64)>, u64), ArchiveError> {
    let mut map = Vec::new();
    push_entries(&header[386..482], &mut map, offset)?;
    let real = num(&header[483..495], offset, "sparse real size")?;
    let mut extended = header[482] != 0;
    while extended {
        if map.len() > MAX_SEGMENTS {
            return Err(too_many(offset));
        }
        let block = r.raw_block("a sparse map extension")?;
        push_entries(&block[..504], &mut map, offset)?;
        extended = block[504] != 0;
    }
    Ok((map, real))
}

fn push_entries(area: &[u8], map: &mut Vec<(u64, u64)>, offset: u64) -> Result<(), ArchiveError> {
    for e in area.chunks_exact(24) {
        if e.iter().all(|&b| b == 0) {
            break;
        }
        map.push((
            num(&e[..12], offset, "sparse offset")?,
            num(&e[12..], offset, "sparse length")?,
        ));
    }
    Ok(())
}

/// Reads the GNU PAX 1.0 map at the start of the member's data: decimal numbers, one per
/// line (count, then offset/length pairs), padded to a whole block.
pub(crate) fn read_pax_1_map<R: Read>(
    r: &mut TarReader<R>,
    offset: u64,
) -> Result<Vec<(u64, u64)>, ArchiveError> {
    let corrupt = |what: &'static str| ArchiveError::Corrupt {
        offset,
        fault: Fault::SparseMap(what),
    };
    let mut numbers: Vec<u64> = Vec::new();
    let mut want: Option<u64> = None;
    let mut cur: Option<u64> = None;
    loop {
        let mut block = [0u8; 512];
        r.read_exact_data(&mut block, "the sparse map")?;
        for &b in &block {
            match b {
                b'0'..=b'9' => {
                    let v = cur
                        .unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|v| v.checked_add((b - b'0') as u64));
                    cur = Some(v.ok_or_else(|| corrupt("a number overflows"))?);
                }
                b'\n' => {
                    let v = cur.take().ok_or_else(|| corrupt("an empty line"))?;
                    match want {
                        None => {
                            // Each segment takes at least four bytes of map text ("0\n0\n").
                            if v.saturating_mul(4) > r.remaining() + 512 {
                                return Err(corrupt(
                                    "it lists more segments than the member holds",
                                ));
                            }
                            if v > MAX_SEGMENTS as u64 {
                                return Err(too_many(offset));
                            }
                            want = Some(v * 2);
                        }
                        Some(_) => numbers.push(v),
                    }
                    if want == Some(numbers.len() as u64) {
                        // The rest of this block is padding.
                        return Ok(numbers.chunks(2).map(|c| (c[0], c[1])).collect());
                    }
                }
                _ => return Err(corrupt("it holds a byte that is not a digit or newline")),
            }
        }
    }
}

/// A map must be ordered, within the file, and account exactly for the stored data.
pub(crate) fn check_map(
    map: &[(u64, u64)],
    size: u64,
    stored: u64,
    offset: u64,
) -> Result<(), ArchiveError> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in map {
        let seg_end = off.checked_add(len).filter(|&e| off >= end && e <= size);
        let Some(seg_end) = seg_end else {
            return Err(ArchiveError::Corrupt {
                offset,
                fault: Fault::SparseOrder,
            });
        };
        end = seg_end;
        total = total.saturating_add(len);
    }
    if total != stored {
        return Err(ArchiveError::Corrupt {
            offset,
            fault: Fault::SparseTotal {
                described: total,
                stored,
            },
        });
    }
    Ok(())
}

/// The data segments of an open file, or `None` when it has no holes worth recording.
pub(crate) fn data_map(fd: impl AsFd, size: u64) -> std::io::Result<Option<Vec<(u64, u64)>>> {
    use rustix::fs::{seek, SeekFrom};
    let fd = fd.as_fd();
    let mut map = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = seek(fd, SeekFrom::Hole(data))?.min(size);
        map.push((data, hole - data));
        pos = hole;
    }
    seek(fd, SeekFrom::Start(0))?;
    let dense = map.len() == 1 && map[0] == (0, size);
    Ok(if dense { None } else { Some(map) })
}

/// The GNU PAX 1.0 map block(s) that precede a sparse member's data.
pub(crate) fn pax_1_map(map: &[(u64, u64)]) -> Vec<u8> {
    let mut out = format!("{}\n", map.len()).into_bytes();
    for (off, len) in map {
        out.extend_from_slice(format!("{off}\n{len}\n").as_bytes());
    }
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}
