//! import-tar against hostile and broken archives, driven through the binary: each must fail
//! with one line and leave no image and no leftovers, or stay inside the image; nothing outside
//! the store may change. Raw headers are written by hand for what no honest tool produces.
//! Needs root (mounts a small tmpfs for the full-disk case), gzip, zstd, xz and bzip2.

mod common;

use std::ffi::OsStr;

use common::tar::RawTar;
use common::tree::{snapshot, FULL};
use common::{assert_success, sh, Env, Tmpfs};

/// A canary tree outside the store; hostile archives aim at it.
fn outside(env: &Env) -> std::path::PathBuf {
    let o = env.path("outside");
    std::fs::create_dir_all(o.join("dir")).unwrap();
    std::fs::write(o.join("victim"), b"untouched\n").unwrap();
    o
}

/// Imports `archive`; requires failure with one line on stderr, no image and no leftovers,
/// and the outside tree unchanged. Returns the message.
fn refused(env: &Env, archive: &[u8]) -> String {
    refused_with(env, archive, &[])
}

/// [`refused`] with `extra` options for import-tar.
fn refused_with(env: &Env, archive: &[u8], extra: &[&str]) -> String {
    let out_dir = outside(env);
    let before = snapshot(&out_dir);
    let store_before = env.store_entries();
    let mut args = vec![
        OsStr::new("import-tar"),
        OsStr::new("-"),
        OsStr::new("hostile"),
        OsStr::new("--force"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    let out = env.run_input(&args, archive);
    let msg = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure, got {:?}: {msg}",
        out.status
    );
    assert!(
        msg.starts_with("rmach: ") && msg.trim_end().lines().count() == 1,
        "one line: {msg:?}"
    );
    assert_eq!(
        env.store_entries(),
        store_before,
        "no image and no leftovers in the store"
    );
    let d = common::tree::differences(&before, &snapshot(&out_dir), FULL);
    assert!(d.is_empty(), "outside changed: {d:?}");
    msg
}

/// Imports `archive`, which may succeed, as long as nothing outside changes; returns the image.
fn contained(env: &Env, archive: &[u8]) -> Option<std::path::PathBuf> {
    let out_dir = outside(env);
    let before = snapshot(&out_dir);
    let out = env.run_input(
        &[
            OsStr::new("import-tar"),
            OsStr::new("-"),
            OsStr::new("hostile"),
            OsStr::new("--force"),
        ],
        archive,
    );
    let d = common::tree::differences(&before, &snapshot(&out_dir), FULL);
    assert!(d.is_empty(), "outside changed: {d:?}");
    out.status.success().then(|| env.store.join("hostile"))
}

#[test]
fn hostile_paths_are_refused() {
    let env = Env::new();
    let o = env.path("outside");
    let abs = format!("{}/victim", o.display());
    let depth = "../".repeat(12);
    let rel_out = format!(
        "{depth}{}/victim",
        o.display().to_string().trim_start_matches('/')
    );
    assert!(refused(&env, &RawTar::default().file("../escape", b"x").finish()).contains("'..'"));
    assert!(refused(&env, &RawTar::default().file(&rel_out, b"pwned").finish()).contains("'..'"));
    assert!(refused(&env, &RawTar::default().file(&abs, b"pwned").finish()).contains("absolute"));
    // Hard links out: absolute, relative, through a symlink.
    refused(&env, &RawTar::default().hardlink("h", &abs).finish());
    refused(&env, &RawTar::default().hardlink("h", &rel_out).finish());
    let via = RawTar::default()
        .symlink("s", &o.display().to_string())
        .hardlink("h", "s/victim")
        .file("h", b"pwned")
        .finish();
    refused(&env, &via);
    // PAX overrides win over the ustar fields, and are checked like them.
    let pax_path = RawTar::default()
        .pax(&[("path", rel_out.as_bytes())])
        .file("innocent", b"pwned")
        .finish();
    refused(&env, &pax_path);
    let pax_link = RawTar::default()
        .file("t", b"x")
        .pax(&[("linkpath", abs.as_bytes())])
        .hardlink("h", "t")
        .finish();
    refused(&env, &pax_link);
    // A NUL inside a PAX path cannot smuggle a shorter name.
    refused(
        &env,
        &RawTar::default()
            .pax(&[("path", b"ok\0/../../x")])
            .file("n", b"x")
            .finish(),
    );
}

#[test]
fn symlink_tricks_stay_inside_the_image() {
    let env = Env::new();
    let o = env.path("outside");
    let abs_dir = o.join("dir").display().to_string();
    let abs_victim = o.join("victim").display().to_string();
    // symlink-then-write: the write resolves inside the image, where the target is missing.
    let a = RawTar::default()
        .symlink("evil", &abs_dir)
        .file("evil/pwned", b"pwned")
        .finish();
    refused(&env, &a);
    let a = RawTar::default()
        .symlink("evil", "../../../../../../../../tmp")
        .file("evil/pwned", b"pwned")
        .finish();
    refused(&env, &a);
    // Overwrite through a symlink: the symlink is replaced, the victim untouched.
    let a = RawTar::default()
        .symlink("v", &abs_victim)
        .file("v", b"pwned")
        .finish();
    let image = contained(&env, &a).expect("a plain replacement succeeds");
    assert_eq!(std::fs::read(image.join("v")).unwrap(), b"pwned");
    assert!(!image
        .join("v")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    // symlink-then-chmod: a directory entry's metadata is applied late; by then the name is a
    // symlink out of the image, which must not be followed.
    let a = RawTar::default()
        .dir("d", 0o777)
        .symlink("d", &abs_dir)
        .finish();
    let image = contained(&env, &a).expect("succeeds");
    assert!(image
        .join("d")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        std::fs::metadata(o.join("dir"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o777
    );
    // A device node or FIFO over a symlink, and a hard link to an in-image symlink.
    let a = RawTar::default()
        .symlink("n", &abs_victim)
        .member(b"n", b'6', 0o666, b"", b"")
        .symlink("s", &abs_victim)
        .hardlink("h", "s")
        .finish();
    let image = contained(&env, &a).expect("succeeds");
    assert!(image
        .join("h")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    // Merged /usr: ./bin/x lands in usr/bin through the in-image symlink, and a directory
    // member ./bin/ (as .deb packages still carry) keeps the symlink.
    let a = RawTar::default()
        .dir("usr/bin", 0o755)
        .symlink("bin", "usr/bin")
        .dir("bin", 0o700)
        .file("bin/x", b"x")
        .finish();
    let image = contained(&env, &a).expect("succeeds");
    assert!(image.join("usr/bin/x").is_file());
    assert!(image
        .join("bin")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(image.join("usr/bin")).unwrap().mode() & 0o777,
        0o755
    );
}

#[test]
fn pax_records_are_framed_by_length() {
    let env = Env::new();
    let o = env.path("outside");
    // A value holding what looks like a record: a newline-splitting parser would see a path.
    let fake = format!("x\n40 path={}/victim\n", o.display());
    let a = RawTar::default()
        .pax(&[("SCHILY.xattr.user.trick", fake.as_bytes())])
        .file("f", b"safe")
        .finish();
    let image = contained(&env, &a).expect("succeeds");
    let mut v = vec![0u8; 4096];
    let n = rustix::fs::getxattr(image.join("f"), "user.trick", &mut v[..]).unwrap();
    assert_eq!(&v[..n], fake.as_bytes());
    // Names with newlines are just names.
    let a = RawTar::default()
        .pax(&[("path", b"a\nb")])
        .file("ignored", b"nl")
        .finish();
    let image = contained(&env, &a).expect("succeeds");
    assert_eq!(std::fs::read(image.join("a\nb")).unwrap(), b"nl");
    // Malformed records fail the import.
    for record in [&b"99 path=x\n"[..], b"11 path=abc\n"] {
        refused(
            &env,
            &RawTar::default().pax_raw(record).file("f", b"x").finish(),
        );
    }
}

#[test]
fn pax_size_mismatch_cannot_smuggle_members() {
    let env = Env::new();
    let o = env.path("outside");
    // The header says 1024 bytes whose content is a header for a file outside; PAX says 0,
    // so rmach reads that "content" as the next header, which is then refused on its path.
    let inner = common::tar::header(
        format!("{}/victim", o.display()).as_bytes(),
        b'0',
        0o644,
        0,
        b"",
    );
    let mut data = inner.to_vec();
    data.resize(1024, 0);
    let a = RawTar::default()
        .pax(&[("size", b"0")])
        .member(b"f", b'0', 0o644, &data, b"")
        .finish();
    refused(&env, &a);
    // A size that overflows when its padding is added, and extension headers too large to
    // hold in memory, fail instead of wrapping around or exhausting memory.
    let a = RawTar::default()
        .pax(&[("size", b"18446744073709551615")])
        .file("f", b"x")
        .finish();
    refused(&env, &a);
    let a = RawTar::default()
        .member(b"PaxHeaders/x", b'x', 0o644, &vec![b'a'; 17 << 20], b"")
        .file("f", b"x")
        .finish();
    assert!(refused(&env, &a).contains("exceed"));
    // A PAX size larger than what follows runs into the end of the input.
    let a = RawTar::default()
        .pax(&[("size", b"100000")])
        .file("f", b"short")
        .finish();
    assert!(refused(&env, &a).contains("truncated"));
}

#[test]
fn broken_inputs_fail_cleanly() {
    let env = Env::new();
    let good = RawTar::default()
        .dir("etc", 0o755)
        .file("etc/a", &vec![7u8; 300_000])
        .file("etc/b", b"b")
        .finish();
    // Truncated: inside data, at a header boundary without the end marker, inside a header.
    assert!(refused(&env, &good[..100_000]).contains("truncated"));
    assert!(refused(&env, &good[..good.len() - 1024]).contains("end-of-archive"));
    assert!(refused(&env, &good[..good.len() - 1024 - 512 - 100]).contains("truncated"));
    // Garbage and empty input.
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(refused(&env, &garbage).contains("not a tar archive"));
    assert!(refused(&env, b"").contains("empty"));
    // A short text file is not a tar archive, not a cut one; a cut first header still is.
    assert!(refused(&env, b"hello, not a tarball\n").contains("not a tar archive"));
    assert!(refused(&env, &good[..300]).contains("truncated"));
    // Corrupt and truncated compression, every format.
    for tool in ["gzip -c", "zstd -q -c", "xz -c", "bzip2 -c"] {
        let raw = env.path("good.tar");
        std::fs::write(&raw, &good).unwrap();
        let packed_path = env.path("packed");
        sh(&format!(
            "{tool} < '{}' > '{}'",
            raw.display(),
            packed_path.display()
        ));
        let packed = std::fs::read(&packed_path).unwrap();
        let mut corrupt = packed.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 16] {
            *b ^= 0x5a;
        }
        refused(&env, &corrupt);
        refused(&env, &packed[..packed.len() - 10]);
    }
    // A wrong --sha256 leaves no image; a bad one is a usage error.
    let sha = "0".repeat(64);
    assert!(refused_with(&env, &good, &["--sha256", &sha]).contains("SHA-256"));
    let bad = env.run_input(
        &[
            OsStr::new("import-tar"),
            OsStr::new("-"),
            OsStr::new("x"),
            OsStr::new("--sha256"),
            OsStr::new("12"),
        ],
        &good,
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn full_disk_fails_cleanly() {
    let env = Env::new();
    let tmpfs = Tmpfs::mount(&env.store, "2m");
    let big = RawTar::default().file("a", &vec![1u8; 3 << 20]).finish();
    let msg = refused(&env, &big);
    assert!(msg.contains("full"), "{msg}");
    // The host check of every test's Env sees a mount left in it.
    let mount = format!("mount on {}", env.store.display());
    assert_eq!(env.host_leftovers(), [mount]);
    drop(tmpfs);
}

/// Runs `rmach import-tar FILE NAME` under GNU time; returns its output and peak RSS in MiB.
fn import_peak_mib(env: &Env, file: &std::path::Path, name: &str) -> (std::process::Output, u64) {
    common::require("time");
    let report = env.path(&format!("{name}.rss"));
    let mut rmach = env.command();
    rmach.args(["import-tar", file.to_str().unwrap(), name, "--force"]);
    let out = common::wrapped(
        &["/usr/bin/time", "-f", "%M", "-o", report.to_str().unwrap()],
        &rmach,
    )
    .output()
    .unwrap();
    let kib: u64 = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("{name}: peak RSS {} MiB", kib / 1024);
    (out, kib / 1024)
}

/// A zstd-compressed archive written member by member (hundreds of MB of tar in a few KB).
fn zstd_archive(path: &std::path::Path, members: impl Fn(&mut dyn FnMut(&[u8]))) {
    use std::io::Write;
    let file = std::fs::File::create(path).unwrap();
    let mut enc = zstd::stream::write::Encoder::new(file, 3).unwrap();
    members(&mut |bytes: &[u8]| enc.write_all(bytes).unwrap());
    enc.write_all(&[0u8; 1024]).unwrap();
    enc.finish().unwrap();
}

/// The most memory an import may take, whatever the archive: the decoder's queue, one member's
/// extension headers (16 MiB, read and parsed), a sparse map (at most 2^20 segments, 16 MiB),
/// zstd's window, and 16 bytes per directory whose metadata waits for the end.
const CEILING_MIB: u64 = 128;

/// Imports `file` as `name`, which must succeed with a peak RSS under [`CEILING_MIB`]; `what`
/// names the case in a failure.
fn imports_under_the_ceiling(env: &Env, file: &std::path::Path, name: &str, what: &str) {
    let (out, mib) = import_peak_mib(env, file, name);
    assert_success(&out, what);
    assert!(mib < CEILING_MIB, "{what}: {mib} MiB");
}

/// #9: a PAX 1.0 sparse map of 12 million empty segments (48 MB of map in 4 KB of zstd), big
/// PAX records, and thousands of directories with 60 KB xattrs each: the extractor's peak RSS
/// stays under a fixed ceiling (before: 380 MB and 320 MB, growing with the archive).
#[test]
fn extractor_memory_is_bounded_whatever_the_archive() {
    let env = Env::new();
    // tmpfs takes 60 KB user xattrs (ext4 without ea_inode does not); its pages are not the
    // importer's RSS.
    let _tmpfs = Tmpfs::mount(&env.store, "1g");
    let sparse_map = |segments: usize| {
        let mut map = format!("{segments}\n").into_bytes();
        for _ in 0..segments {
            map.extend_from_slice(b"0\n0\n");
        }
        // The map fills whole blocks of the member's data, as GNU tar writes it.
        map.resize(map.len().div_ceil(512) * 512, 0);
        let mut t = RawTar::default();
        t.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"holes"),
            ("GNU.sparse.realsize", b"0"),
        ]);
        t.member(b"GNUSparseFile.0/holes", b'0', 0o644, &map, b"");
        t.bytes
    };
    let huge_map = env.path("huge-map.tar.zst");
    zstd_archive(&huge_map, |w| w(&sparse_map(12_000_000)));
    let (out, mib) = import_peak_mib(&env, &huge_map, "huge-map");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("more than 1048576 segments"), "{msg}");
    assert!(mib < CEILING_MIB, "12M-segment map: {mib} MiB");

    let big_map = env.path("big-map.tar.zst");
    zstd_archive(&big_map, |w| w(&sparse_map(1 << 20)));
    imports_under_the_ceiling(&env, &big_map, "big-map", "2^20-segment map");

    let records = env.path("records.tar.zst");
    let comment = vec![b'c'; 15 << 20];
    zstd_archive(&records, |w| {
        for i in 0..12 {
            let mut t = RawTar::default();
            t.pax(&[("comment", &comment)]).file(&format!("f{i}"), b"x");
            w(&t.bytes);
        }
    });
    imports_under_the_ceiling(&env, &records, "records", "15 MiB PAX records");

    let dirs = env.path("dirs.tar.zst");
    let value = vec![b'v'; 60_000];
    zstd_archive(&dirs, |w| {
        for i in 0..3000 {
            let mut t = RawTar::default();
            t.pax(&[("SCHILY.xattr.user.big", &value)])
                .dir(&format!("d{i}/"), 0o755);
            w(&t.bytes);
        }
    });
    imports_under_the_ceiling(&env, &dirs, "dirs", "3000 directories with 60 KB xattrs");
    let got = rustix::fs::getxattr(
        env.store.join("dirs/d2999"),
        "user.big",
        &mut [0u8; 65536][..],
    );
    assert_eq!(
        got.unwrap(),
        60_000,
        "the last directory's xattr was restored"
    );
}

/// An xz header may ask for a dictionary of up to 1.5 GiB, which the decoder would allocate:
/// rmach's decoder has a 128 MiB limit (xz -9 needs 65 MiB) and refuses such a stream in one
/// line, while xz -9 archives import.
#[test]
fn xz_streams_needing_huge_dictionaries_are_refused() {
    let env = Env::new();
    let mut t = RawTar::default();
    t.dir("etc/", 0o755).file("etc/hostname", b"xz\n");
    std::fs::write(env.path("x.tar"), t.finish()).unwrap();
    let dir = env.dir.path().display();
    sh(&format!(
        "cd '{dir}' && xz -c --lzma2=dict=1GiB x.tar > big-dict.tar.xz && xz -9 -c x.tar > nine.tar.xz"
    ));
    let big = std::fs::read(env.path("big-dict.tar.xz")).unwrap();
    assert!(refused(&env, &big).contains("memory limit"));
    env.ok(&[
        "import-tar",
        env.path("nine.tar.xz").to_str().unwrap(),
        "nine",
    ]);
}
