//! What is on a disk image: a bare file system, an MBR with one Linux partition, a GPT with one
//! Linux partition, or a GPT laid out per the Discoverable Partitions Specification (type
//! UUIDs say which partition is the root for this architecture, /usr, /home, /srv, /var,
//! /var/tmp, the ESP and XBOOTLDR). Tables are parsed here rather than by the kernel's partition
//! scan so the type UUIDs are known without udev, and each partition gets a loop device of its
//! own over its byte range.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::ImageError;

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Root,
    Usr,
    Home,
    Srv,
    Var,
    VarTmp,
    Esp,
    Xbootldr,
}

impl Role {
    /// Where it is mounted, relative to the root.
    pub(crate) fn mount_point(self) -> &'static str {
        match self {
            Role::Root => "",
            Role::Usr => "usr",
            Role::Home => "home",
            Role::Srv => "srv",
            Role::Var => "var",
            Role::VarTmp => "var/tmp",
            Role::Esp => "efi",
            Role::Xbootldr => "boot",
        }
    }
}

/// A file system to mount: its role, byte range in the image and type.
#[derive(Debug, Clone)]
pub(crate) struct Partition {
    pub(crate) role: Role,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) read_only: bool,
    pub(crate) fs: &'static str,
}

#[cfg(target_arch = "x86_64")]
const ROOT: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
#[cfg(target_arch = "x86_64")]
const USR: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
#[cfg(target_arch = "aarch64")]
const ROOT: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
#[cfg(target_arch = "aarch64")]
const USR: &str = "b0e01050-ee5f-4390-949a-9101b17104e9";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ROOT: &str = "unsupported-architecture";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const USR: &str = "unsupported-architecture";

/// The discoverable root partition type for this machine's architecture.
pub(crate) const ROOT_TYPE: &str = ROOT;
const LINUX_GENERIC: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const VERITY: &[&str] = &[
    "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", // root verity x86-64
    "77ff5f63-e7b6-4633-acf4-1565b864c0e6", // usr verity x86-64
    "df3300ce-d69f-4c92-978c-9bfb0f38d820", // root verity arm64
    "6e11a4e7-fbca-4ded-b9e9-e1a512bb664e", // usr verity arm64
    "41092b05-9fc8-4523-994f-2def0408b176", // root verity signature x86-64
    "e7bb33fb-06cf-4e81-8273-e543b413e2e2", // usr verity signature x86-64
];

fn role_of(type_uuid: &str) -> Option<Role> {
    Some(match type_uuid {
        t if t == ROOT => Role::Root,
        t if t == USR => Role::Usr,
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915" => Role::Home,
        "3b8f8425-20e0-4f3b-907f-1a25a76f98e8" => Role::Srv,
        "4d21b016-b534-45c2-a9fb-5c16e091fd2d" => Role::Var,
        "7ec6f557-3bc5-4aca-b293-16ef5df639d1" => Role::VarTmp,
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => Role::Esp,
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => Role::Xbootldr,
        _ => return None,
    })
}

/// Reads at most `len` bytes at `offset`; a short read near the end is not an error.
fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, ImageError> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::Read { offset, source: e }),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The file system starting at `offset`, by its superblock magic.
pub(crate) fn detect_fs(file: &File, offset: u64) -> Result<Option<&'static str>, ImageError> {
    let b = read_at(file, offset, 0x10048)?;
    let at = |i: usize, m: &[u8]| b.len() >= i + m.len() && &b[i..i + m.len()] == m;
    Ok(if at(0x438, &[0x53, 0xef]) {
        Some("ext4")
    } else if at(0x10040, b"_BHRfS_M") {
        Some("btrfs")
    } else if at(0, b"XFSB") {
        Some("xfs")
    } else if at(0, b"hsqs") {
        Some("squashfs")
    } else if at(1024, &[0xe2, 0xe1, 0xf5, 0xe0]) {
        Some("erofs")
    } else if at(0x52, b"FAT32   ") || at(0x36, b"FAT1") {
        Some("vfat")
    } else {
        None
    })
}

/// Finds the file systems of the image `file` (shown as `path` in errors).
pub(crate) fn dissect(file: &File, path: &Path) -> Result<Vec<Partition>, ImageError> {
    let layout = |what: String| ImageError::Layout {
        path: path.to_path_buf(),
        what,
    };
    let size = file.metadata().map_err(|e| ImageError::io(path, e))?.len();
    if let Some(fs) = detect_fs(file, 0)?.filter(|fs| *fs != "vfat") {
        return Ok(vec![Partition {
            role: Role::Root,
            offset: 0,
            size,
            read_only: false,
            fs,
        }]);
    }
    for sector in [512u64, 4096] {
        if read_at(file, sector, 8)? == b"EFI PART" {
            return gpt(file, sector, size, &layout);
        }
    }
    let mbr = read_at(file, 0, 512)?;
    if mbr.len() == 512 && mbr[510..512] == [0x55, 0xaa] {
        let linux: Vec<(u64, u64)> = (0..4)
            .map(|i| &mbr[446 + i * 16..462 + i * 16])
            .filter(|e| e[4] == 0x83)
            .map(|e| {
                let le = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]) as u64;
                (le(8) * 512, le(12) * 512)
            })
            .collect();
        if let [(offset, len)] = linux[..] {
            return Ok(vec![one(
                file,
                Role::Root,
                offset,
                len,
                false,
                size,
                &layout,
            )?]);
        }
        return Err(layout(format!(
            "an MBR disk needs exactly one Linux (0x83) partition to run; it has {}",
            linux.len()
        )));
    }
    Err(layout(
        "no file system (ext4, btrfs, xfs, squashfs, erofs), GPT or MBR partition table found"
            .into(),
    ))
}

fn one(
    file: &File,
    role: Role,
    offset: u64,
    len: u64,
    read_only: bool,
    size: u64,
    layout: &dyn Fn(String) -> ImageError,
) -> Result<Partition, ImageError> {
    if len == 0 || offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(layout(format!(
            "partition at byte {offset} ({len} bytes) lies past the end of the image"
        )));
    }
    let fs = detect_fs(file, offset)?.ok_or_else(|| {
        layout(format!(
            "partition at byte {offset} holds no file system rmach can mount"
        ))
    })?;
    Ok(Partition {
        role,
        offset,
        size: len,
        read_only,
        fs,
    })
}

fn guid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

fn gpt(
    file: &File,
    sector: u64,
    size: u64,
    layout: &dyn Fn(String) -> ImageError,
) -> Result<Vec<Partition>, ImageError> {
    let h = read_at(file, sector, 92)?;
    if h.len() < 92 {
        return Err(layout("the GPT header is cut off".into()));
    }
    let le32 = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    let le64 = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
    let (entries_at, count, entry_size) = (le64(72) * sector, le32(80), le32(84));
    if !(128..=4096).contains(&entry_size) || count > 4096 || entries_at >= size {
        return Err(layout(format!(
            "the GPT header is invalid ({count} entries of {entry_size} bytes at byte {entries_at})"
        )));
    }
    let table = read_at(file, entries_at, (count * entry_size) as usize)?;
    let mut found: Vec<(Role, u64, u64, bool)> = Vec::new();
    let mut generic = Vec::new();
    for e in table.chunks_exact(entry_size as usize) {
        let kind = guid(&e[0..16]);
        if kind == "00000000-0000-0000-0000-000000000000" {
            continue;
        }
        let first = u64::from_le_bytes(e[32..40].try_into().unwrap_or_default());
        let last = u64::from_le_bytes(e[40..48].try_into().unwrap_or_default());
        let attrs = u64::from_le_bytes(e[48..56].try_into().unwrap_or_default());
        if last < first {
            return Err(layout(format!(
                "a GPT entry ends before it starts ({first} > {last})"
            )));
        }
        let (offset, len) = (first * sector, (last - first + 1) * sector);
        if VERITY.contains(&kind.as_str()) {
            return Err(layout(
                "it has dm-verity partitions, which rmach does not verify yet; run it with systemd-nspawn --image".into(),
            ));
        }
        // Bit 63: do not mount automatically; bit 60: read-only.
        if attrs & (1 << 63) != 0 {
            continue;
        }
        match role_of(&kind) {
            Some(role) if !found.iter().any(|f| f.0 == role) => {
                found.push((role, offset, len, attrs & (1 << 60) != 0))
            }
            Some(_) => {}
            None if kind == LINUX_GENERIC => generic.push((offset, len, attrs & (1 << 60) != 0)),
            None => {}
        }
    }
    if !found.iter().any(|f| f.0 == Role::Root) {
        match generic[..] {
            [(offset, len, ro)] => found.insert(0, (Role::Root, offset, len, ro)),
            _ => {
                return Err(layout(format!(
                    "no root partition for this architecture (type {ROOT}) and {} generic Linux partitions instead of one",
                    generic.len()
                )))
            }
        }
    }
    // Parents before children: the root, then /var before /var/tmp.
    found.sort_by_key(|f| f.0.mount_point().len());
    found
        .into_iter()
        .map(|(role, offset, len, ro)| one(file, role, offset, len, ro, size, layout))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_mbr(types: &[u8]) -> File {
        let file = tempfile::tempfile().unwrap();
        file.set_len(8 << 20).unwrap();
        let mut mbr = [0u8; 512];
        for (i, t) in types.iter().enumerate() {
            let e = 446 + i * 16;
            mbr[e + 4] = *t;
            mbr[e + 8..e + 12].copy_from_slice(&(2048u32 * (i as u32 + 1)).to_le_bytes());
            mbr[e + 12..e + 16].copy_from_slice(&2048u32.to_le_bytes());
        }
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        file.write_all_at(&mbr, 0).unwrap();
        file
    }

    #[test]
    fn mbr_needs_exactly_one_linux_partition() {
        let file = disk_with_mbr(&[0x0c, 0x83]);
        file.write_all_at(b"hsqs", 2 * 1048576).unwrap();
        let parts = dissect(&file, Path::new("d")).unwrap();
        assert_eq!(
            (parts[0].offset, parts[0].size, parts[0].fs),
            (2 << 20, 1 << 20, "squashfs")
        );
        let two = disk_with_mbr(&[0x83, 0x83]);
        let err = dissect(&two, Path::new("d")).unwrap_err().to_string();
        assert!(err.contains("exactly one Linux"), "{err}");
    }

    #[test]
    fn bare_file_systems_are_recognised_and_garbage_is_not() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        let err = dissect(&file, Path::new("d")).unwrap_err().to_string();
        assert!(err.contains("no file system"), "{err}");
        file.write_all_at(b"_BHRfS_M", 0x10040).unwrap();
        assert_eq!(dissect(&file, Path::new("d")).unwrap()[0].fs, "btrfs");
    }
}
