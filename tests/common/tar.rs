//! Builders for the tar tests: a fixture tree with every kind of member rmach must carry
//! through an archive, and a raw tar writer for hostile archives that no well-behaved tool
//! would produce. The store, the binary and the tree comparison are in the parent module.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::sh;

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

/// A tar stream written header by header, for archives no honest tool writes.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

/// A ustar header for `name` (cut at 100 bytes), owned by root, with a fixed mtime and a
/// right checksum; `link` is the link target field.
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

/// Extracts `archive` with GNU tar as root keeps everything (owners by number, modes, xattrs,
/// ACLs) into the new directory `dir`. Returns whether GNU tar succeeded, and its stderr.
pub fn gnu_extract(archive: &Path, dir: &Path, extra: &[&str]) -> (bool, String) {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("tar")
        .args([
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-xpf",
        ])
        .arg(archive)
        .args(extra)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The differences between another tool's extraction of `archive` at `gnu` (GNU tar's, or
/// bsdtar's) and rmach's image at `image`, attribute by attribute, leaving out the root
/// directory (the tool extracts into a directory that exists; rmach's image root is its own).
/// Directories the archive does not list (created as parents) get "now" as mtime from both
/// tools, so their mtimes are not compared.
pub fn differences_from_extraction(gnu: &Path, image: &Path, archive: &Path) -> Vec<String> {
    use super::tree::{differences, snapshot, FULL};
    let mut a = snapshot(gnu);
    let mut b = snapshot(image);
    a.entries.remove(&b""[..]);
    b.entries.remove(&b""[..]);
    let listing = std::process::Command::new("tar")
        .args(["--ignore-zeros", "-tf"])
        .arg(archive)
        .output()
        .unwrap();
    let listed: std::collections::BTreeSet<Vec<u8>> = listing
        .stdout
        .split(|&b| b == b'\n')
        .map(|l| {
            let l = l.strip_prefix(b"./").unwrap_or(l);
            l.strip_suffix(b"/").unwrap_or(l).to_vec()
        })
        .collect();
    for (path, entry) in a.entries.iter_mut() {
        if entry.kind == "dir" && !listed.contains(path) {
            if let Some(other) = b.entries.get(path) {
                entry.mtime = other.mtime;
            }
        }
    }
    differences(&a, &b, FULL)
}
