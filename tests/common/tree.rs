//! Trees on disk: a fixture with every kind of member a root filesystem holds, and a snapshot
//! and comparison of two trees attribute by attribute (content, type, mode, owner, nanosecond
//! mtime, every xattr (ACLs and capabilities among them), link targets, hard-link groups,
//! device numbers, holes).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Builds the fixture under `root` (which must not exist). Owners, devices and
/// `security.capability` need root, which the tests have.
pub fn make_full_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::create_dir_all(root.join("srv/acl/sub")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=fixture\nPRETTY_NAME=\"Fixture OS\"\n",
    )
    .unwrap();
    std::fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    std::fs::write(root.join("usr/bin/suid"), vec![7u8; 5000]).unwrap();
    std::fs::write(root.join("usr/bin/ping"), b"ping binary").unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-link")).unwrap();
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("etc/tool-link2")).unwrap();
    // Long names: a 255-byte component and a path well past 100 bytes; a non-UTF-8 name.
    let long = "l".repeat(255);
    let deep = root.join("deep/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb/cccccccccccccccccccccccccccccc");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join(&long), b"long").unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"caf\xe9-latin1")), b"latin1").unwrap();
    // Sparse: 1 MiB of data between 64 MiB holes.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(root.join("sparse")).unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(&vec![0xabu8; 1 << 20]).unwrap();
        f.set_len(129 << 20).unwrap();
    }
    super::sh(&format!(
        r#"cd '{root}'
        chmod 4755 usr/bin/suid; chmod 2755 usr/bin/tool; chmod 1777 tmp; chmod 0640 etc/os-release
        chown 1000:1001 usr/bin/tool; chown -h 42:43 dangling
        mknod dev/null c 1 3; mknod dev/loop7 b 7 7; mkfifo dev/fifo; chmod 0620 dev/fifo
        setcap cap_net_raw+ep usr/bin/ping
        setfattr -n user.plain -v hello etc/os-release
        setfattr -n user.dir -v on-a-directory srv
        setfattr -n user.binary -v 0x000a0dff00410a srv/acl
        setfattr -n trusted.link -v on-a-symlink bin
        setfacl -m u:1234:rwx,g:2345:r-x srv/acl
        setfacl -d -m u:1234:rwx,g::r-x,o::- srv/acl
        setfacl -m u:99:r usr/bin/tool
        touch -h -d '2001-02-03 04:05:06.123456789' bin usr/bin/suid srv/acl/sub
        touch -d '1999-12-31 23:59:59.5' sparse srv"#,
        root = root.display()
    ));
}

/// Everything compared about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    /// Permission bits with setuid, setgid and sticky (the type is `kind`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    /// For regular files: a hash of the size and the bytes (see `content_hash`).
    pub content: Option<String>,
    /// For symlinks: the target.
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Allocated bytes are less than the size: the file has holes.
    pub sparse: bool,
    /// 512-byte blocks allocated, compared only for sparse files.
    pub blocks: u64,
}

/// A snapshot of a tree: every entry by its path relative to the root (the root itself is the
/// empty path).
pub struct Tree {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Sets of paths that share an inode (non-directories with more than one link), each
    /// sorted, and sorted.
    pub link_groups: Vec<Vec<Vec<u8>>>,
}

impl Tree {
    /// The entry at `rel`, which must be there.
    pub fn entry(&self, rel: &str) -> &Entry {
        self.entries
            .get(rel.as_bytes())
            .unwrap_or_else(|| panic!("no {rel:?} in the tree"))
    }

    /// The hard-link group `rel` belongs to, if it has more than one link.
    pub fn link_group(&self, rel: &str) -> Option<&[Vec<u8>]> {
        self.link_groups
            .iter()
            .find(|g| g.iter().any(|p| p == rel.as_bytes()))
            .map(|g| &g[..])
    }
}

fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut v[..]).unwrap();
        v.truncate(len);
        out.insert(name.to_vec(), v);
    }
    out
}

/// A hash of a file's bytes that reads only its data segments (a 9 GiB sparse file costs
/// nothing) and does not depend on where the holes are: 64 KiB blocks at fixed offsets that
/// are not all zeros are hashed with their index.
fn content_hash(path: &Path) -> String {
    use rustix::fs::{seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    const B: u64 = 64 << 10;
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let mut hash = Sha256::new();
    hash.update(size.to_le_bytes());
    let mut pos = 0u64;
    let mut next_block = 0u64;
    let mut buf = vec![0u8; B as usize];
    while pos < size {
        let Ok(data) = seek(&file, SeekFrom::Data(pos)) else {
            break;
        };
        let hole = seek(&file, SeekFrom::Hole(data)).unwrap().min(size);
        let first = (data / B).max(next_block);
        let last = (hole - 1) / B;
        for k in first..=last {
            let len = B.min(size - k * B) as usize;
            file.read_exact_at(&mut buf[..len], k * B).unwrap();
            if buf[..len].iter().any(|&b| b != 0) {
                hash.update(k.to_le_bytes());
                hash.update(&buf[..len]);
            }
        }
        next_block = last + 1;
        pos = hole;
    }
    hex::encode(hash.finalize())
}

/// Everything about the tree at `root` that a faithful copy keeps.
pub fn snapshot(root: &Path) -> Tree {
    snapshot_without(root, |_| false)
}

/// [`snapshot`] leaving out the paths (relative to `root`, the root itself is "") for which
/// `skip` is true, such as files two tools legitimately write differently; their contents are
/// still walked.
pub fn snapshot_without(root: &Path, skip: impl Fn(&[u8]) -> bool) -> Tree {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            }
        };
        if ft.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        if skip(&rel) {
            continue;
        }
        if !ft.is_dir() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let content = ft.is_file().then(|| content_hash(&path));
        let blocks = md.blocks();
        entries.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { md.size() },
                content,
                link: ft.is_symlink().then(|| {
                    std::fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                rdev: md.rdev(),
                xattrs: xattrs_of(&path),
                sparse: ft.is_file() && blocks * 512 < md.size(),
                blocks,
            },
        );
    }
    let mut link_groups: Vec<Vec<Vec<u8>>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    link_groups.sort();
    Tree {
        entries,
        link_groups,
    }
}

/// What [`differences`] compares; [`FULL`] compares everything, and a caller turns off what its
/// tools legitimately do not keep with `Compare { field: false, ..FULL }`.
#[derive(Clone, Copy)]
pub struct Compare {
    /// Modification times at all (tools that set their own, such as two bootstraps).
    pub mtimes: bool,
    /// Sub-second mtimes (not kept by the old GNU format).
    pub subsec: bool,
    /// Extended attributes, ACLs and capabilities among them (not kept by the old GNU format).
    pub xattrs: bool,
    /// Holes in sparse files (GNU tar without --sparse, as systemd-export runs it, stores them
    /// as zeros); the contents are compared either way.
    pub holes: bool,
    /// Which paths share an inode (one tool's hard links may be another's copies).
    pub hard_links: bool,
}

pub const FULL: Compare = Compare {
    mtimes: true,
    subsec: true,
    xattrs: true,
    holes: true,
    hard_links: true,
};

/// Every difference between two trees, one line each; empty when they match.
pub fn differences(a: &Tree, b: &Tree, how: Compare) -> Vec<String> {
    let mut out = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (path, ma) in &a.entries {
        let Some(mb) = b.entries.get(path) else {
            out.push(format!("{}: missing", show(path)));
            continue;
        };
        let mut ma = ma.clone();
        let mut mb = mb.clone();
        if !how.mtimes {
            ma.mtime = (0, 0);
            mb.mtime = (0, 0);
        }
        if !how.subsec {
            ma.mtime.1 = 0;
            mb.mtime.1 = 0;
        }
        if !how.xattrs {
            ma.xattrs.clear();
            mb.xattrs.clear();
        }
        // Allocation matters only for holes; the last block of a hole-free file may differ.
        let blocks_ok = !how.holes || !ma.sparse || (mb.sparse && mb.blocks <= ma.blocks + 16);
        if !how.holes {
            ma.sparse = false;
            mb.sparse = false;
        }
        ma.blocks = 0;
        mb.blocks = 0;
        if ma != mb || !blocks_ok {
            out.push(format!(
                "{}:\n  want {ma:?}\n  got  {mb:?} (blocks ok: {blocks_ok})",
                show(path)
            ));
        }
    }
    for path in b.entries.keys() {
        if !a.entries.contains_key(path) {
            out.push(format!("{}: unexpected", show(path)));
        }
    }
    if how.hard_links && a.link_groups != b.link_groups {
        out.push(format!(
            "hard-link groups differ: {:?} vs {:?}",
            a.link_groups, b.link_groups
        ));
    }
    out
}

/// Requires the tree at `b` to be the same as the one at `a` in everything `how` compares.
pub fn assert_same(a: &Path, b: &Path, how: Compare) {
    let d = differences(&snapshot(a), &snapshot(b), how);
    assert!(
        d.is_empty(),
        "{} differs from {}:\n{}",
        b.display(),
        a.display(),
        d.join("\n")
    );
}
