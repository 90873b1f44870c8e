//! Helpers for the tar tests: a temporary store driving the binary, a fixture tree with every
//! kind of member, a tree comparison attribute by attribute, and a raw tar writer for hostile
//! archives that no well-behaved tool would produce.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// A temporary store, state and cache directory, plus room for inputs and outputs.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("rmach-tar-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rmach"));
        c.arg("--store").arg(self.store());
        c.arg("--state-dir").arg(self.path("state"));
        c.arg("--cache-dir").arg(self.path("cache"));
        c
    }

    /// Runs rmach with `args`, feeding `stdin` when given.
    pub fn run(&self, args: &[&OsStr], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = c.spawn().unwrap();
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        child.wait_with_output().unwrap()
    }

    /// Runs rmach and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = self.run(&args, None);
        assert!(
            out.status.success(),
            "rmach {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The entries in the store, hidden ones included.
    pub fn store_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.store()) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

pub fn sh(script: &str) {
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec as _,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Builds a tree with every member kind rmach must carry. `big_sparse` adds a 9 GiB sparse
/// file (size beyond the 8 GiB octal limit).
pub fn make_fixture(root: &Path, big_sparse: bool) {
    std::fs::create_dir_all(root).unwrap();
    let p = |r: &str| root.join(r);
    for d in ["d/sub", "usr/bin", "tmp", "empty"] {
        std::fs::create_dir_all(p(d)).unwrap();
    }
    std::fs::write(p("d/suid"), b"setuid program\n").unwrap();
    std::fs::write(p("d/sgid"), b"setgid program\n").unwrap();
    std::fs::write(p("d/binary-xattrs"), b"x").unwrap();
    std::fs::write(p("empty-file"), b"").unwrap();
    std::fs::write(p("usr/bin/tool"), vec![0xabu8; 200_000]).unwrap();
    std::fs::hard_link(p("d/suid"), p("d/hard")).unwrap();
    std::fs::hard_link(p("d/suid"), p("usr/bin/hard2")).unwrap();
    symlink("usr/bin", p("bin")).unwrap();
    symlink("../suid", p("d/sub/rel")).unwrap();
    symlink("/etc/passwd", p("d/abs")).unwrap();
    let long_target = "t".repeat(180);
    symlink(&long_target, p("d/longlink")).unwrap();
    let long = "l".repeat(150);
    std::fs::create_dir_all(p(&format!("d/{long}"))).unwrap();
    std::fs::write(p(&format!("d/{long}/{long}")), b"long name\n").unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"d/non-utf8-\xff\xfe")),
        b"raw bytes name\n",
    )
    .unwrap();
    std::fs::write(p("d/name with\nnewline"), b"nl\n").unwrap();
    let r = root.display();
    sh(&format!(
        "cd '{r}' && mknod cdev c 1 3 && mknod bdev b 7 0 && mknod bigdev c 259 1048575 && mkfifo fifo \
         && chown 1234:5678 d/sgid usr/bin/tool && chown -h 4321:8765 d/abs && chown 3000000:3000001 empty-file \
         && chmod 4755 d/suid && chmod 2711 d/sgid && chmod 1777 tmp && chmod 0700 empty && chmod 0640 usr/bin/tool \
         && setfacl -m u:1000:r,g:50:rw d/sgid && setfacl -m u:1001:rwx d/sub && setfacl -d -m u:1000:rx,g:50:r d/sub \
         && setcap cap_net_raw+ep usr/bin/tool \
         && truncate -s 10M sparse-tail-hole \
         && printf data | dd of=sparse-tail-hole bs=1 seek=4096 conv=notrunc status=none \
         && printf more | dd of=sparse-tail-hole bs=1 seek=5000000 conv=notrunc status=none \
         && truncate -s 3M sparse-lead-hole && printf end | dd of=sparse-lead-hole bs=1 seek=3145725 conv=notrunc status=none"
    ));
    if big_sparse {
        sh(&format!("cd '{r}' && truncate -s 9G huge-sparse && printf tail | dd of=huge-sparse bs=1 seek=9663676000 conv=notrunc status=none"));
    }
    xattr(&p("d/binary-xattrs"), "user.binary", b"\n\0\xff\n=x\n");
    xattr(
        &p("d/binary-xattrs"),
        "user.fake-record",
        b"\n30 path=../../escaped-via-xattr\n",
    );
    xattr(&p("d/binary-xattrs"), "user.empty", b"");
    xattr(&p("d"), "user.on-a-dir", b"dir value");
    xattr(&p("d/suid"), "trusted.root-only", b"\x01\x02");
    for (rel, secs, nsec) in [
        ("d/suid", 1_577_934_245, 123_456_789),
        ("d/sgid", 1_000_000_000, 1),
        ("d/abs", 1_234_567_890, 500_000_000),
    ] {
        set_mtime(&p(rel), secs, nsec);
    }
    // Directories last, deepest first, so their times stay as set.
    for (i, d) in ["d/sub", "d", "usr/bin", "usr", "tmp", "empty", ""]
        .iter()
        .enumerate()
    {
        set_mtime(&p(d), 1_600_000_000 + i as i64, 250_000_000);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<String>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Allocated bytes are less than the size: the file has holes.
    pub sparse: bool,
    /// 512-byte blocks allocated, compared only for sparse files.
    pub blocks: u64,
}

pub struct Tree {
    pub entries: BTreeMap<Vec<u8>, Meta>,
    /// Sets of paths that share an inode.
    pub link_groups: Vec<Vec<Vec<u8>>>,
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

/// Everything about a tree that a faithful copy keeps.
pub fn snapshot(root: &Path) -> Tree {
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
        if ft.is_file() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let content = ft.is_file().then(|| content_hash(&path));
        let blocks = md.blocks();
        entries.insert(
            rel,
            Meta {
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

#[derive(Clone, Copy)]
pub struct Compare {
    /// Sub-second mtimes (not kept by the old GNU format).
    pub subsec: bool,
    pub xattrs: bool,
}

pub const FULL: Compare = Compare {
    subsec: true,
    xattrs: true,
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
        if !how.subsec {
            ma.mtime.1 = 0;
            mb.mtime.1 = 0;
        }
        if !how.xattrs {
            ma.xattrs.clear();
            mb.xattrs.clear();
        }
        // Allocation matters only for holes; the last block of a hole-free file may differ.
        let blocks_ok = !ma.sparse || (mb.sparse && mb.blocks <= ma.blocks + 16);
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
    if a.link_groups != b.link_groups {
        out.push(format!(
            "hard-link groups differ: {:?} vs {:?}",
            a.link_groups, b.link_groups
        ));
    }
    out
}

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

/// A tar stream written header by header, for archives no honest tool writes.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

pub fn header(name: &[u8], typ: u8, mode: u32, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    let oct = |f: &mut [u8], v: u64| {
        let s = format!("{v:0w$o}\0", w = f.len() - 1);
        f.copy_from_slice(s.as_bytes());
    };
    oct(&mut h[100..108], mode as u64);
    oct(&mut h[108..116], 0);
    oct(&mut h[116..124], 0);
    oct(&mut h[124..136], size);
    oct(&mut h[136..148], 1_700_000_000);
    h[156] = typ;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

impl RawTar {
    fn pad(&mut self) {
        let n = (512 - self.bytes.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, n));
    }

    /// A member with data; `size` is what the header claims (normally `data.len()`).
    pub fn member(
        &mut self,
        name: &[u8],
        typ: u8,
        mode: u32,
        data: &[u8],
        link: &[u8],
    ) -> &mut Self {
        self.bytes
            .extend_from_slice(&header(name, typ, mode, data.len() as u64, link));
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.member(name.as_bytes(), b'0', 0o644, data, b"")
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.member(name.as_bytes(), b'5', mode, b"", b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.member(name.as_bytes(), b'2', 0o777, b"", target.as_bytes())
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.member(name.as_bytes(), b'1', 0o644, b"", target.as_bytes())
    }

    /// A PAX header body given as ready records (so tests can also write malformed ones).
    pub fn pax_raw(&mut self, body: &[u8]) -> &mut Self {
        self.member(b"PaxHeaders/x", b'x', 0o644, body, b"")
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while len != base + len.to_string().len() {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.pax_raw(&body)
    }

    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}
