//! import-tar and export-tar, driven through the binary: round trips with GNU tar in both
//! directions and with rmach itself compared attribute by attribute, every compression format,
//! standard input and output, name derivation, top-directory lifting, and a corpus of hostile
//! and broken archives that must fail (or stay inside the image) without touching anything
//! outside. Needs root (devices, owners, trusted.* and security.* xattrs), GNU tar, setfacl,
//! setcap, zstd, xz, bzip2 and gzip.

#[path = "common/tar.rs"]
mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::{assert_same, make_fixture, sh, snapshot, Compare, Env, RawTar, FULL};

fn gnu_tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image named `name` holding the fixture, made without rmach (the store's layout is a
/// directory per image).
fn fixture_image(env: &Env, name: &str, big: bool) -> std::path::PathBuf {
    let path = env.store().join(name);
    make_fixture(&path, big);
    path
}

#[test]
fn gnu_tar_to_rmach_keeps_everything() {
    let env = Env::new();
    let src = env.path("src");
    make_fixture(&src, true);
    let archive = env.path("fixture.tar");
    gnu_tar(
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--sparse",
            "--format=posix",
            "-cf",
            archive.to_str().unwrap(),
            ".",
        ],
        &src,
    );
    env.ok(&["import-tar", archive.to_str().unwrap()]);
    assert_same(&src, &env.store().join("fixture"), FULL);
}

/// GNU tar's headers for a file beyond 8 GiB (PAX `size` in posix format, base-256 in gnu
/// format) are read with the right size; only the first blocks are needed for that.
#[test]
fn gnu_tar_headers_for_files_over_8_gib() {
    let env = Env::new();
    let dir = env.path("big");
    std::fs::create_dir_all(&dir).unwrap();
    sh(&format!("truncate -s 9G '{}/big'", dir.display()));
    for format in ["posix", "gnu"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "tar -C '{}' --format={format} -cf - big | head -c 65536",
                dir.display()
            ))
            .output()
            .unwrap();
        let mut reader = rmach::archive::TarReader::new(&out.stdout[..]);
        let m = reader.next_member().unwrap().unwrap();
        assert_eq!(
            (m.path.as_slice(), m.size),
            (&b"big"[..], 9u64 << 30),
            "{format}"
        );
    }
}

#[test]
fn old_gnu_format_and_old_sparse_import() {
    let env = Env::new();
    let src = env.path("src");
    make_fixture(&src, false);
    let archive = env.path("old.tar");
    gnu_tar(
        &[
            "--sparse",
            "--format=gnu",
            "-cf",
            archive.to_str().unwrap(),
            ".",
        ],
        &src,
    );
    env.ok(&["import-tar", archive.to_str().unwrap()]);
    assert_same(
        &src,
        &env.store().join("old"),
        Compare {
            subsec: false,
            xattrs: false,
        },
    );
}

#[test]
fn rmach_to_gnu_tar_keeps_everything() {
    let env = Env::new();
    let image = fixture_image(&env, "fx", true);
    let archive = env.path("fx.tar");
    env.ok(&["export-tar", "fx", archive.to_str().unwrap()]);
    let out = env.path("gnu-out");
    std::fs::create_dir(&out).unwrap();
    gnu_tar(
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-xpf",
            archive.to_str().unwrap(),
        ],
        &out,
    );
    assert_same(&image, &out, FULL);
}

#[test]
fn rmach_to_rmach_in_every_format() {
    let env = Env::new();
    let image = fixture_image(&env, "fx", true);
    for (suffix, tool) in [
        ("tar", "cat"),
        ("tar.gz", "gzip -dc"),
        ("tgz", "gzip -dc"),
        ("tar.zst", "zstd -dc"),
        ("tar.xz", "xz -dc"),
        ("tar.bz2", "bzip2 -dc"),
    ] {
        let file = env.path(&format!("out/fx-{}.{suffix}", suffix.replace('.', "-")));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        env.ok(&["export-tar", "fx", file.to_str().unwrap()]);
        // The usual tool reads it too.
        sh(&format!(
            "{tool} < '{}' | tar -tf - > /dev/null",
            file.display()
        ));
        let name = format!("back-{}", suffix.replace('.', "-"));
        env.ok(&["import-tar", file.to_str().unwrap(), &name]);
        assert_same(&image, &env.store().join(&name), FULL);
    }
    // --format beats the suffix.
    let odd = env.path("out/fx.tar.zst");
    env.ok(&[
        "export-tar",
        "fx",
        odd.to_str().unwrap(),
        "--format",
        "xz",
        "--level",
        "1",
        "--threads",
        "1",
    ]);
    assert_eq!(&std::fs::read(&odd).unwrap()[..6], b"\xfd7zXZ\0");
}

#[test]
fn parallel_gzip_output_is_multi_member_and_reads_back() {
    let env = Env::new();
    let image = env.store().join("big");
    std::fs::create_dir_all(&image).unwrap();
    // Enough data for several 1 MiB gzip members, compressible but not trivially.
    let data: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 & 0x3f)
        .collect();
    std::fs::write(image.join("data"), &data).unwrap();
    let file = env.path("big.tar.gz");
    env.ok(&[
        "export-tar",
        "big",
        file.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    sh(&format!(
        "gzip -t '{0}' && test $(gzip -dc '{0}' | tar -xOf - ./data | wc -c) = 6000000",
        file.display()
    ));
    env.ok(&["import-tar", file.to_str().unwrap(), "big2"]);
    assert_same(&image, &env.store().join("big2"), FULL);
}

#[test]
fn concatenated_streams_in_every_format_import() {
    let env = Env::new();
    let src = env.path("src");
    make_fixture(&src, false);
    let tar = env.path("whole.tar");
    gnu_tar(
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--sparse",
            "--format=posix",
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
        &src,
    );
    let len = std::fs::metadata(&tar).unwrap().len();
    for (i, tool) in ["gzip -c", "zstd -q -c", "xz -c", "bzip2 -c"]
        .iter()
        .enumerate()
    {
        let out = env.path(&format!("cat{i}"));
        // Two streams split in the middle of the tar, concatenated.
        sh(&format!(
            "head -c {h} '{t}' | {tool} > '{o}' && tail -c +{n} '{t}' | {tool} >> '{o}'",
            h = len / 2,
            n = len / 2 + 1,
            t = tar.display(),
            o = out.display()
        ));
        let name = format!("cat{i}");
        env.ok(&["import-tar", out.to_str().unwrap(), &name]);
        assert_same(&src, &env.store().join(&name), FULL);
    }
}

#[test]
fn stdin_and_stdout() {
    let env = Env::new();
    let image = fixture_image(&env, "fx", false);
    let out = env.run(
        &[
            OsStr::new("export-tar"),
            OsStr::new("fx"),
            OsStr::new("-"),
            OsStr::new("--format"),
            OsStr::new("zstd"),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "a non-terminal run prints nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&out.stdout[..4], b"\x28\xb5\x2f\xfd");
    let no_name = env.run(
        &[OsStr::new("import-tar"), OsStr::new("-")],
        Some(&out.stdout),
    );
    assert_eq!(
        no_name.status.code(),
        Some(2),
        "reading from - needs a NAME"
    );
    let back = env.run(
        &[
            OsStr::new("import-tar"),
            OsStr::new("-"),
            OsStr::new("piped"),
        ],
        Some(&out.stdout),
    );
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_same(&image, &env.store().join("piped"), FULL);
    // Without FILE, the archive goes to standard output, uncompressed.
    let plain = env.run(&[OsStr::new("export-tar"), OsStr::new("fx")], None);
    assert!(plain.status.success());
    assert_eq!(&plain.stdout[257..263], b"ustar\0");
}

#[test]
fn names_come_from_the_file_and_outputs_are_not_clobbered() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"x\n").unwrap();
    std::fs::create_dir_all(env.path("backups")).unwrap();
    let file = env.path("backups/dev.tar.zst");
    sh(&format!(
        "tar -C '{}' -cf - . | zstd -q -o '{}'",
        src.display(),
        file.display()
    ));
    env.ok(&["import-tar", file.to_str().unwrap()]);
    assert!(env.store().join("dev/etc/hostname").is_file());
    // Same name again: refused without --force, replaced with it.
    let again = env.run(&[OsStr::new("import-tar"), file.as_os_str()], None);
    assert_eq!(again.status.code(), Some(1));
    env.ok(&[
        "import-tar",
        file.to_str().unwrap(),
        "--force",
        "--read-only",
    ]);
    // An existing output file is refused without --force and left alone.
    let out = env.path("backups/out.tar.gz");
    std::fs::write(&out, b"precious").unwrap();
    let refused = env.run(
        &[OsStr::new("export-tar"), OsStr::new("dev"), out.as_os_str()],
        None,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    env.ok(&["export-tar", "dev", out.to_str().unwrap(), "--force"]);
    sh(&format!(
        "gzip -dc '{}' | tar -tf - | grep -qx './etc/hostname'",
        out.display()
    ));
    // No temporary file is left beside the output.
    let left: Vec<_> = std::fs::read_dir(env.path("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    // An unknown suffix is a usage error, not a guess.
    let odd = env.run(
        &[
            OsStr::new("export-tar"),
            OsStr::new("dev"),
            env.path("x.lz4").as_os_str(),
        ],
        None,
    );
    assert_eq!(odd.status.code(), Some(2));
}

#[test]
fn single_top_directory_becomes_the_root() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("rootfs/etc")).unwrap();
    std::fs::create_dir_all(src.join("rootfs/rootfs")).unwrap();
    std::fs::write(src.join("rootfs/etc/os-release"), b"ID=test\n").unwrap();
    sh(&format!(
        "chmod 0751 '{0}/rootfs' && tar -C '{0}' -cf '{0}/../wrapped.tar' rootfs",
        src.display()
    ));
    env.ok(&["import-tar", env.path("wrapped.tar").to_str().unwrap()]);
    let image = env.store().join("wrapped");
    assert!(image.join("etc/os-release").is_file());
    assert!(
        image.join("rootfs").is_dir(),
        "a child named like the top directory survives"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&image).unwrap().mode() & 0o7777, 0o751);
    // One directory that is not an OS tree stays as it is.
    std::fs::create_dir_all(src.join("data/files")).unwrap();
    sh(&format!(
        "tar -C '{0}' -cf '{0}/../plain.tar' data",
        src.display()
    ));
    env.ok(&["import-tar", env.path("plain.tar").to_str().unwrap()]);
    assert!(env.store().join("plain/data/files").is_dir());
}

#[test]
fn export_holds_the_image_lock_and_warns_about_sockets() {
    let env = Env::new();
    let image = env.store().join("sock");
    std::fs::create_dir_all(&image).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(image.join("socket")).unwrap();
    std::fs::write(image.join("file"), b"x").unwrap();
    let out = env.run(
        &[
            OsStr::new("export-tar"),
            OsStr::new("sock"),
            env.path("s.tar").as_os_str(),
        ],
        None,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket not archived"));
    sh(&format!(
        "test \"$(tar -tf '{}' | sort | tr '\\n' ' ')\" = './ ./file '",
        env.path("s.tar").display()
    ));
    // While an import of "busy" waits on its input, exporting "busy" fails at once, naming it.
    let mut importer = env
        .cmd()
        .args(["import-tar", "-", "busy"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock = env.path("state/locks/busy.lock");
    while !std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .contains("imported")
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = env.run(
        &[
            OsStr::new("export-tar"),
            OsStr::new("busy"),
            env.path("b.tar").as_os_str(),
        ],
        None,
    );
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(msg.contains("busy is being imported by PID"), "{msg}");
    drop(importer.stdin.take());
    assert!(
        !importer.wait().unwrap().success(),
        "an empty input is refused"
    );
    assert!(!env.path("b.tar").exists());
}

/// A canary tree outside the store; hostile archives aim at it.
fn outside(env: &Env) -> std::path::PathBuf {
    let o = env.path("outside");
    std::fs::create_dir_all(o.join("dir")).unwrap();
    std::fs::write(o.join("victim"), b"untouched\n").unwrap();
    o
}

/// Imports `archive`; requires failure with one line on stderr, no image and no leftovers,
/// and the outside tree unchanged. Returns the message.
fn refused(env: &Env, archive: &[u8], extra: &[&str]) -> String {
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
    let out = env.run(&args, Some(archive));
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
    let d = common::differences(&before, &snapshot(&out_dir), FULL);
    assert!(d.is_empty(), "outside changed: {d:?}");
    msg
}

/// Imports `archive`, which may succeed, as long as nothing outside changes; returns the image.
fn contained(env: &Env, archive: &[u8]) -> Option<std::path::PathBuf> {
    let out_dir = outside(env);
    let before = snapshot(&out_dir);
    let out = env.run(
        &[
            OsStr::new("import-tar"),
            OsStr::new("-"),
            OsStr::new("hostile"),
            OsStr::new("--force"),
        ],
        Some(archive),
    );
    let d = common::differences(&before, &snapshot(&out_dir), FULL);
    assert!(d.is_empty(), "outside changed: {d:?}");
    out.status.success().then(|| env.store().join("hostile"))
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
    assert!(refused(
        &env,
        &RawTar::default().file("../escape", b"x").finish(),
        &[]
    )
    .contains("'..'"));
    assert!(refused(
        &env,
        &RawTar::default().file(&rel_out, b"pwned").finish(),
        &[]
    )
    .contains("'..'"));
    assert!(
        refused(&env, &RawTar::default().file(&abs, b"pwned").finish(), &[]).contains("absolute")
    );
    // Hard links out: absolute, relative, through a symlink.
    refused(&env, &RawTar::default().hardlink("h", &abs).finish(), &[]);
    refused(
        &env,
        &RawTar::default().hardlink("h", &rel_out).finish(),
        &[],
    );
    let via = RawTar::default()
        .symlink("s", &o.display().to_string())
        .hardlink("h", "s/victim")
        .file("h", b"pwned")
        .finish();
    refused(&env, &via, &[]);
    // PAX overrides win over the ustar fields, and are checked like them.
    let pax_path = RawTar::default()
        .pax(&[("path", rel_out.as_bytes())])
        .file("innocent", b"pwned")
        .finish();
    refused(&env, &pax_path, &[]);
    let pax_link = RawTar::default()
        .file("t", b"x")
        .pax(&[("linkpath", abs.as_bytes())])
        .hardlink("h", "t")
        .finish();
    refused(&env, &pax_link, &[]);
    // A NUL inside a PAX path cannot smuggle a shorter name.
    refused(
        &env,
        &RawTar::default()
            .pax(&[("path", b"ok\0/../../x")])
            .file("n", b"x")
            .finish(),
        &[],
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
    refused(&env, &a, &[]);
    let a = RawTar::default()
        .symlink("evil", "../../../../../../../../tmp")
        .file("evil/pwned", b"pwned")
        .finish();
    refused(&env, &a, &[]);
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
    refused(
        &env,
        &RawTar::default()
            .pax_raw(b"99 path=x\n")
            .file("f", b"x")
            .finish(),
        &[],
    );
    refused(
        &env,
        &RawTar::default()
            .pax_raw(b"11 path=abc\n")
            .file("f", b"x")
            .finish(),
        &[],
    );
}

#[test]
fn pax_size_mismatch_cannot_smuggle_members() {
    let env = Env::new();
    let o = env.path("outside");
    // The header says 1024 bytes whose content is a header for a file outside; PAX says 0,
    // so rmach reads that "content" as the next header, which is then refused on its path.
    let inner = common::header(
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
    refused(&env, &a, &[]);
    // A PAX size larger than what follows runs into the end of the input.
    let a = RawTar::default()
        .pax(&[("size", b"100000")])
        .file("f", b"short")
        .finish();
    assert!(refused(&env, &a, &[]).contains("truncated"));
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
    assert!(refused(&env, &good[..100_000], &[]).contains("truncated"));
    assert!(refused(&env, &good[..good.len() - 1024], &[]).contains("end-of-archive"));
    assert!(refused(&env, &good[..good.len() - 1024 - 512 - 100], &[]).contains("truncated"));
    // Garbage and empty input.
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
    assert!(refused(&env, &garbage, &[]).contains("not a tar archive"));
    assert!(refused(&env, b"", &[]).contains("empty"));
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
        refused(&env, &corrupt, &[]);
        refused(&env, &packed[..packed.len() - 10], &[]);
    }
    // A wrong --sha256 leaves no image; a bad one is a usage error.
    let sha = "0".repeat(64);
    assert!(refused(&env, &good, &["--sha256", &sha]).contains("SHA-256"));
    let bad = env.run(
        &[
            OsStr::new("import-tar"),
            OsStr::new("-"),
            OsStr::new("x"),
            OsStr::new("--sha256"),
            OsStr::new("12"),
        ],
        Some(&good),
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn full_disk_fails_cleanly() {
    let env = Env::new();
    let store = env.store();
    std::fs::create_dir_all(&store).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=2m rmach-test-full '{}'",
        store.display()
    ));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(store.clone());
    let big = RawTar::default().file("a", &vec![1u8; 3 << 20]).finish();
    let msg = refused(&env, &big, &[]);
    assert!(msg.contains("full"), "{msg}");
}
