//! Writing a GPT with one partition (UEFI spec 2.10 §5.3): a protective MBR, the primary header
//! and entry array at the front, their backups at the end, CRC32s over both.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::ImageError;

const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors the entry array takes: 128 entries of 128 bytes.
const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// The partition's first byte: 1 MiB, the alignment every partitioning tool uses.
pub(crate) const PARTITION_START: u64 = 1 << 20;

/// Bytes the table needs after the partition (backup array and header).
pub(crate) const TRAILER: u64 = (ARRAY_SECTORS + 1) * SECTOR;

/// A UUID string as the 16 bytes GPT stores (the first three fields little-endian).
fn guid_bytes(uuid: &str) -> [u8; 16] {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// A random version-4 UUID from the kernel.
fn random_guid() -> Result<[u8; 16], ImageError> {
    use std::io::Read;
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| ImageError::io("/dev/urandom", e))?;
    b[7] = (b[7] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b)
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// Writes a GPT to the `disk_size`-byte file `disk` with one partition of type `type_uuid`
/// named `name`, covering `PARTITION_START .. disk_size - TRAILER` rounded down to 1 MiB.
/// Returns the partition's byte range.
pub(crate) fn write_gpt(
    disk: &File,
    disk_size: u64,
    type_uuid: &str,
    name: &str,
) -> Result<(u64, u64), ImageError> {
    let io = |e| ImageError::io("the new disk image", e);
    let sectors = disk_size / SECTOR;
    let last_usable = sectors - ARRAY_SECTORS - 2;
    let end = ((last_usable + 1) * SECTOR) / PARTITION_START * PARTITION_START;
    let (first_lba, last_lba) = (PARTITION_START / SECTOR, end / SECTOR - 1);

    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0xee;
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    let mbr_len = (sectors - 1).min(u32::MAX as u64) as u32;
    mbr[446 + 12..446 + 16].copy_from_slice(&mbr_len.to_le_bytes());
    mbr[446 + 1..446 + 4].copy_from_slice(&[0, 2, 0]);
    mbr[446 + 5..446 + 8].copy_from_slice(&[0xff, 0xff, 0xff]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    disk.write_all_at(&mbr, 0).map_err(io)?;

    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    array[0..16].copy_from_slice(&guid_bytes(type_uuid));
    array[16..32].copy_from_slice(&random_guid()?);
    array[32..40].copy_from_slice(&first_lba.to_le_bytes());
    array[40..48].copy_from_slice(&last_lba.to_le_bytes());
    for (i, unit) in name.encode_utf16().take(36).enumerate() {
        array[56 + i * 2..58 + i * 2].copy_from_slice(&unit.to_le_bytes());
    }
    let array_crc = crc32(&array);
    let disk_guid = random_guid()?;
    let header = |this: u64, other: u64, array_lba: u64| {
        let mut h = [0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&this.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ARRAY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&array_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let backup_array = sectors - 1 - ARRAY_SECTORS;
    disk.write_all_at(&header(1, sectors - 1, 2), SECTOR)
        .map_err(io)?;
    disk.write_all_at(&array, 2 * SECTOR).map_err(io)?;
    disk.write_all_at(&array, backup_array * SECTOR)
        .map_err(io)?;
    disk.write_all_at(
        &header(sectors - 1, 1, backup_array),
        (sectors - 1) * SECTOR,
    )
    .map_err(io)?;
    Ok((PARTITION_START, end - PARTITION_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::partition::{dissect, Role};

    #[test]
    fn a_written_table_dissects_to_one_root_partition() {
        let file = tempfile::tempfile().unwrap();
        let size = 64u64 << 20;
        file.set_len(size).unwrap();
        let (offset, len) =
            write_gpt(&file, size, super::super::partition::ROOT_TYPE, "root").unwrap();
        assert_eq!(offset, PARTITION_START);
        assert!(offset + len <= size - TRAILER);
        // An ext4 superblock magic where the partition starts makes it mountable.
        file.write_all_at(&[0x53, 0xef], offset + 0x438).unwrap();
        let parts = dissect(&file, std::path::Path::new("test")).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].role, Role::Root);
        assert_eq!(
            (parts[0].offset, parts[0].size, parts[0].fs),
            (offset, len, "ext4")
        );
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        let b = guid_bytes("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(&b[..8], &[0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11]);
        assert_eq!(&b[8..], &[0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
    }
}
