//! User namespaces: choosing the id range and writing the maps. The image's files are not
//! changed: its root is mounted through an idmapped mount (see `mounts`), so files owned by
//! 0..65536 on disk appear owned by 0..65536 inside while the kernel sees base..base+65536.

use std::path::Path;

use super::plan::IdMap;
use super::spec::PrivateUsers;
use super::RunnerError;

/// Slots of 65536 ids that `pick` may use: from 0x80000 (above any ordinary user) to 0x6fff0000,
/// like systemd-nspawn.
const FIRST_SLOT: u32 = 0x8;
const LAST_SLOT: u32 = 0x6fff;

/// Ranges in use by any process's user namespace on the host (outside ids, length). A
/// process in rmach's own user namespace has rmach's map: one `readlink` tells, instead of
/// reading its map (this scan is a good part of a short run's time on a busy host).
fn used_ranges() -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    let own = std::fs::read_link("/proc/self/ns/user").ok();
    ranges_in_map("/proc/self/uid_map", &mut v);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let path = e.path();
        match std::fs::read_link(path.join("ns/user")) {
            Ok(ns) if Some(&ns) == own.as_ref() => {}
            _ => ranges_in_map(path.join("uid_map"), &mut v),
        }
    }
    v
}

/// Adds the outside ranges (outside id not 0) of the uid map file at `path` to `v`.
fn ranges_in_map(path: impl AsRef<Path>, v: &mut Vec<(u32, u32)>) {
    let Ok(map) = std::fs::read_to_string(path) else {
        return;
    };
    for line in map.lines() {
        let f: Vec<u32> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() == 3 && f[1] != 0 {
            v.push((f[1], f[2]));
        }
    }
}

/// A slot picked from the machine's name, moved on while it overlaps a range in use.
fn pick_free(root: &Path, used: &[(u32, u32)]) -> Option<IdMap> {
    let seed = root
        .to_string_lossy()
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ b as u32);
    let span = LAST_SLOT - FIRST_SLOT;
    (0..span)
        .map(|i| FIRST_SLOT + (seed.wrapping_add(i)) % span)
        .find_map(|slot| {
            let base = slot << 16;
            let free = used
                .iter()
                .all(|&(b, n)| b.saturating_add(n) <= base || b >= base + 65536);
            free.then_some(IdMap { base, count: 65536 })
        })
}

pub(crate) fn pick(p: PrivateUsers, root: &Path) -> Result<IdMap, RunnerError> {
    Ok(match p {
        PrivateUsers::No | PrivateUsers::Auto | PrivateUsers::Identity => IdMap {
            base: 0,
            count: 65536,
        },
        PrivateUsers::Range { base, count } => IdMap { base, count },
        PrivateUsers::Pick => pick_free(root, &used_ranges()).ok_or(RunnerError::NoFreeIds)?,
    })
}

/// Whether the kernel can idmap a mount of the file system holding `root`; the answer and
/// why, in words (for `-v`). Idmapped mounts came with Linux 5.12 (ext4, btrfs, xfs, fat,
/// f2fs); tmpfs has them from 6.3.
pub(crate) fn idmap_support(root: &Path) -> (bool, String) {
    const EXT4: i64 = 0xEF53;
    const BTRFS: i64 = 0x9123_683E;
    const XFS: i64 = 0x5846_5342;
    const F2FS: i64 = 0xF2F5_2010;
    const FAT: i64 = 0x4d44;
    const TMPFS: i64 = 0x0102_1994;
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let version = (
        parts
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0),
        parts
            .next()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0),
    );
    let Ok(st) = rustix::fs::statfs(root) else {
        return (
            false,
            format!("cannot tell the file system of {}", root.display()),
        );
    };
    // f_type's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    let (name, since) = match magic {
        EXT4 => ("ext4", (5, 12)),
        BTRFS => ("btrfs", (5, 12)),
        XFS => ("xfs", (5, 12)),
        F2FS => ("f2fs", (5, 12)),
        FAT => ("fat", (5, 12)),
        TMPFS => ("tmpfs", (6, 3)),
        other => {
            return (
                false,
                format!("its file system (magic {other:#x}) has no idmapped mounts"),
            )
        }
    };
    if version >= since {
        (
            true,
            format!("{name} on Linux {release} has idmapped mounts"),
        )
    } else {
        (
            false,
            format!(
                "{name} has idmapped mounts from Linux {}.{}, this is {release}",
                since.0, since.1
            ),
        )
    }
}

/// Writes `0 base count` as the uid and gid maps of `pid`'s user namespace.
pub(crate) fn write_maps(pid: i32, map: IdMap) -> Result<(), RunnerError> {
    let line = format!("0 {} {}\n", map.base, map.count);
    for f in ["uid_map", "gid_map"] {
        let path = Path::new("/proc").join(pid.to_string()).join(f);
        std::fs::write(&path, &line).map_err(|e| RunnerError::UserNamespace { path, source: e })?;
    }
    Ok(())
}

/// A detached, idmapped copy of `root`: files owned by id N on disk appear as `base + N` to the
/// kernel, which the machine's user namespace (same map) shows as N again. The map comes from
/// a short-lived helper process's user namespace.
pub(crate) fn idmapped_root(root: &Path, map: IdMap) -> Result<std::os::fd::OwnedFd, RunnerError> {
    use crate::sys::{mount as m, ns, process as p};
    let fail = |e: std::io::Error| RunnerError::Idmap {
        path: root.into(),
        source: e,
    };
    let (hold_r, hold_w) = p::pipe().map_err(fail)?;
    // SAFETY: rmach may have threads (a supervisor's watcher), so the child only closes a
    // descriptor, reads a pipe and exits: async-signal-safe calls, no allocation.
    let helper = match unsafe { ns::clone_fork(ns::Namespaces::NEWUSER) }.map_err(fail)? {
        None => {
            drop(hold_w);
            let mut b = [0u8; 1];
            let _ = rustix::io::read(&hold_r, &mut b);
            p::exit_now(0)
        }
        Some(pid) => pid,
    };
    drop(hold_r);
    let result = (|| {
        write_maps(helper, map)?;
        let userns = std::fs::File::open(format!("/proc/{helper}/ns/user")).map_err(fail)?;
        let tree = m::clone_tree(root).map_err(fail)?;
        m::idmap_tree(&tree, &userns).map_err(fail)?;
        Ok(tree)
    })();
    drop(hold_w);
    let _ = p::wait_raw(helper, false);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_free_aligned_slot() {
        let a = pick_free(Path::new("/m/a"), &[]).unwrap();
        assert_eq!(a.base % 65536, 0);
        assert!(a.base >= 0x80000 && a.count == 65536);
        let b = pick_free(Path::new("/m/a"), &[(a.base, 65536)]).unwrap();
        assert_ne!(a.base, b.base);
        assert_eq!(
            pick(PrivateUsers::Identity, Path::new("/")).unwrap().base,
            0
        );
    }
}
