//! Builders for the raw-image tests: file system images made with the standard tools from a
//! tree, disks laid out with sgdisk (GPT, discoverable type UUIDs) or sfdisk (MBR), hand-made
//! hostile qcow2 files, and the host checks (no loop device left on a file).

use std::path::Path;
use std::process::Command;

use super::sh;

pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
pub const HOME: &str = "933ac7e1-2eb4-4f13-b844-0e14e2aef915";
pub const SRV: &str = "3b8f8425-20e0-4f3b-907f-1a25a76f98e8";
pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
pub const ROOT_VERITY_X86_64: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";

/// A file system image of `fs` holding `tree`, made by that file system's own tools.
pub fn mkfs(fs: &str, tree: &Path, out: &Path) {
    let (t, o) = (tree.display(), out.display());
    match fs {
        "ext4" => sh(&format!("truncate -s 96M '{o}' && mkfs.ext4 -q -d '{t}' '{o}'")),
        "btrfs" => sh(&format!(
            "truncate -s 160M '{o}' && mkfs.btrfs -q --rootdir '{t}' '{o}' >/dev/null"
        )),
        // mkfs.xfs cannot take a directory here: fill it through a mount in a throw-away
        // mount namespace (the loop device clears itself at the unmount).
        "xfs" => sh(&format!(
            "truncate -s 320M '{o}' && mkfs.xfs -q '{o}' && unshare -m sh -ec \
             'd=$(mktemp -d); mount -o loop \"{o}\" \"$d\"; cp -a \"{t}/.\" \"$d/\"; umount \"$d\"; rmdir \"$d\"'"
        )),
        "squashfs" => sh(&format!("mksquashfs '{t}' '{o}' -quiet -noappend >/dev/null")),
        "erofs" => sh(&format!("mkfs.erofs '{o}' '{t}' >/dev/null 2>&1")),
        "vfat" => sh(&format!(
            "truncate -s 34M '{o}' && mkfs.vfat -F 32 '{o}' >/dev/null"
        )),
        other => panic!("no builder for {other}"),
    }
}

/// A GPT disk with one partition per `(type UUID, file system image)`, in order, each
/// partition sized to its image (1 MiB aligned).
pub fn gpt_disk(out: &Path, parts: &[(&str, &Path)]) {
    let sizes: Vec<u64> = parts
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len().div_ceil(1 << 20))
        .collect();
    let total: u64 = sizes.iter().sum::<u64>() + 2;
    sh(&format!("truncate -s {total}M '{}'", out.display()));
    let mut args = String::new();
    let mut start = 1u64;
    for (i, ((kind, _), size)) in parts.iter().zip(&sizes).enumerate() {
        let n = i + 1;
        args.push_str(&format!(" -n {n}:{}:+{size}M -t {n}:{kind}", start * 2048));
        start += size;
    }
    sh(&format!("sgdisk {args} '{}' >/dev/null", out.display()));
    let mut start = 1u64;
    for ((_, image), size) in parts.iter().zip(&sizes) {
        sh(&format!(
            "dd if='{}' of='{}' bs=1M seek={start} conv=notrunc,sparse status=none",
            image.display(),
            out.display()
        ));
        start += size;
    }
}

/// An MBR disk with one Linux (0x83) partition holding `image`.
pub fn mbr_disk(out: &Path, image: &Path) {
    let size = std::fs::metadata(image).unwrap().len().div_ceil(1 << 20);
    sh(&format!(
        "truncate -s {}M '{o}' && echo 'start=2048, size={}, type=83' | sfdisk -q '{o}' >/dev/null \
         && dd if='{}' of='{o}' bs=1M seek=1 conv=notrunc,sparse status=none",
        size + 2,
        size * 2048,
        image.display(),
        o = out.display()
    ));
}

/// Loop devices backed by `file` (there must be none after rmach is done with it).
pub fn loops_on(file: &Path) -> String {
    let o = Command::new("losetup")
        .arg("-j")
        .arg(file)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits up to 20 s for the loop devices on `file` to go (autoclear runs when the last
/// mount's namespace is torn down, which the kernel does asynchronously).
pub fn assert_no_loops(file: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = loops_on(file);
        if left.trim().is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loop devices left on {}: {left}",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Writes `bytes` big-endian at `at`.
pub fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A hand-made qcow2 v3 file with 64 KiB clusters: cluster 0 header, 1 L1, 2 refcount table,
/// 3 L2, 4 refcount block, 5 data. `edit` changes it before it is returned.
pub fn qcow2_by_hand(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    const C: usize = 65536;
    let mut f = vec![0u8; 6 * C];
    put(&mut f, 0, b"QFI\xfb");
    put(&mut f, 4, &3u32.to_be_bytes());
    put(&mut f, 20, &16u32.to_be_bytes());
    put(&mut f, 24, &(1u64 << 20).to_be_bytes()); // 1 MiB virtual
    put(&mut f, 36, &1u32.to_be_bytes()); // L1 entries
    put(&mut f, 40, &(C as u64).to_be_bytes());
    put(&mut f, 48, &(2 * C as u64).to_be_bytes());
    put(&mut f, 56, &1u32.to_be_bytes());
    put(&mut f, 96, &4u32.to_be_bytes());
    put(&mut f, 100, &104u32.to_be_bytes());
    put(&mut f, C, &((3 * C as u64) | 1 << 63).to_be_bytes()); // L1[0] -> L2
    put(&mut f, 2 * C, &(4 * C as u64).to_be_bytes()); // reftable[0] -> block
    for i in 0..6 {
        put(&mut f, 4 * C + i * 2, &1u16.to_be_bytes());
    }
    put(&mut f, 3 * C, &((5 * C as u64) | 1 << 63).to_be_bytes()); // L2[0] -> data
    f[5 * C..6 * C].fill(0xab);
    edit(&mut f);
    f
}
