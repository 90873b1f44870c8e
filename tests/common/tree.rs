//! A fixture tree with every kind of member a root filesystem holds, and a comparison of two
//! trees attribute by attribute (content, type, mode, owner, nanosecond mtime, every xattr,
//! link targets, hard-link groups, device numbers, holes).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

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
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub sha256: Option<String>,
    pub link_target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) of the entry's inode, for multiply-linked files.
    pub link_group: Option<PathBuf>,
    /// For regular files: whether less is allocated than the size (it has holes).
    pub sparse: bool,
}

/// Every entry under `root`, by relative path; `root` itself is "".
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut paths = Vec::new();
    collect(root, Path::new(""), &mut paths);
    paths.sort();
    let mut first_of_inode: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for rel in paths {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
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
        let link_group = (!ft.is_dir() && meta.nlink() > 1).then(|| {
            first_of_inode
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        });
        let sha256 = ft
            .is_file()
            .then(|| hex::encode(Sha256::digest(std::fs::read(&path).unwrap())));
        out.insert(
            rel.clone(),
            Entry {
                kind,
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { meta.size() },
                sha256,
                link_target: ft.is_symlink().then(|| {
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_vec()
                }),
                rdev: meta.rdev(),
                xattrs: xattrs(&path),
                link_group,
                sparse: ft.is_file() && meta.blocks() * 512 < meta.size(),
            },
        );
    }
    out
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    out.push(rel.to_path_buf());
    let path = root.join(rel);
    if std::fs::symlink_metadata(&path).unwrap().is_dir() {
        for entry in std::fs::read_dir(&path).unwrap() {
            collect(root, &rel.join(entry.unwrap().file_name()), out);
        }
    }
}

pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        value.truncate(len);
        out.insert(name, value);
    }
    out
}

/// Requires the two trees to be equal in everything [`Entry`] holds. `ignore_root_mtime`
/// leaves out the top directory's times (a store may touch them).
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    let a_paths: Vec<_> = a.keys().collect();
    let b_paths: Vec<_> = b.keys().collect();
    assert_eq!(a_paths, b_paths, "the trees hold different paths");
    for (path, ea) in &a {
        let eb = &b[path];
        assert_eq!(ea, eb, "entry {path:?} differs");
    }
}
