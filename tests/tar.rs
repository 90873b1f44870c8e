//! import-tar and export-tar, driven through the binary: round trips with GNU tar in both
//! directions and with rmach itself compared attribute by attribute, every compression format,
//! standard input and output, name derivation, top-directory lifting, locks and sockets.
//! Hostile and broken inputs are in tar_hostile.rs. Needs root (devices, owners, trusted.* and
//! security.* xattrs), GNU tar, setfacl, setcap, zstd, xz, bzip2 and gzip.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tar::make_fixture;
use common::tree::{assert_same, Compare, FULL};
use common::{assert_success, sh, Env, Tmpfs};

fn gnu_tar(args: &[&str], dir: &Path) {
    let out = Command::new("tar")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    // Not a warning either: GNU tar must take every record rmach writes as its own.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fixture (`big` or not) at `src` in the temporary directory and GNU tar's archive of it
/// named `file`, keeping all GNU tar can: the posix format with xattrs (ACLs and capabilities
/// among them), ACLs and holes.
fn gnu_archive_of_the_fixture(env: &Env, big: bool, file: &str) -> (PathBuf, PathBuf) {
    let src = env.path("src");
    make_fixture(&src, big);
    let archive = env.path(file);
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
    (src, archive)
}

/// An image named `name` holding the fixture, made without rmach (the store's layout is a
/// directory per image).
fn fixture_image(env: &Env, name: &str, big: bool) -> std::path::PathBuf {
    let path = env.store.join(name);
    make_fixture(&path, big);
    path
}

#[test]
fn gnu_tar_to_rmach_keeps_everything() {
    let env = Env::new();
    let (src, archive) = gnu_archive_of_the_fixture(&env, true, "fixture.tar");
    env.ok(&["import-tar", archive.to_str().unwrap()]);
    assert_same(&src, &env.store.join("fixture"), FULL);
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
        &env.store.join("old"),
        Compare {
            subsec: false,
            xattrs: false,
            ..FULL
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
        assert_same(&image, &env.store.join(&name), FULL);
    }
    // --format names a file whose suffix says nothing; against a suffix that says another
    // format it is refused (a .tar.zst holding xz would fool every later reader).
    let odd = env.path("out/fx.backup");
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
    let wrong = env.path("out/fx-wrong.tar.gz");
    let msg = env.fails(
        &[
            "export-tar",
            "fx",
            wrong.to_str().unwrap(),
            "--format",
            "zstd",
        ],
        2,
    );
    assert!(msg.contains("does not match"), "{msg}");
    assert!(!wrong.exists());
}

#[test]
fn parallel_gzip_output_is_one_member_and_reads_back() {
    let env = Env::new();
    let image = env.store.join("big");
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
    // One gzip member covering the whole file, as pigz writes: systemd-import 252 hangs on
    // a stream of many members.
    sh(&format!(
        "python3 -c 'import sys, zlib; d = zlib.decompressobj(31); \
         d.decompress(open(sys.argv[1], \"rb\").read()); \
         sys.exit(0 if d.eof and not d.unused_data else \"not one member\")' '{}'",
        file.display()
    ));
    env.ok(&["import-tar", file.to_str().unwrap(), "big2"]);
    assert_same(&image, &env.store.join("big2"), FULL);
}

#[test]
fn concatenated_streams_in_every_format_import() {
    let env = Env::new();
    let (src, tar) = gnu_archive_of_the_fixture(&env, false, "whole.tar");
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
        assert_same(&src, &env.store.join(&name), FULL);
    }
}

#[test]
fn stdin_and_stdout() {
    let env = Env::new();
    let image = fixture_image(&env, "fx", false);
    let out = env.run(&[
        OsStr::new("export-tar"),
        OsStr::new("fx"),
        OsStr::new("-"),
        OsStr::new("--format"),
        OsStr::new("zstd"),
    ]);
    assert_success(&out, "export-tar fx - --format zstd");
    assert!(
        out.stderr.is_empty(),
        "a non-terminal run prints nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&out.stdout[..4], b"\x28\xb5\x2f\xfd");
    let no_name = env.run_input(&[OsStr::new("import-tar"), OsStr::new("-")], &out.stdout);
    assert_eq!(
        no_name.status.code(),
        Some(2),
        "reading from - needs a NAME"
    );
    let back = env.run_input(
        &[
            OsStr::new("import-tar"),
            OsStr::new("-"),
            OsStr::new("piped"),
        ],
        &out.stdout,
    );
    assert_success(&back, "import-tar - piped");
    assert_same(&image, &env.store.join("piped"), FULL);
    // Without FILE, the archive goes to standard output, uncompressed.
    let plain = env.run(&[OsStr::new("export-tar"), OsStr::new("fx")]);
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
    assert!(env.store.join("dev/etc/hostname").is_file());
    // Same name again: refused without --force, replaced with it.
    let again = env.run(&[OsStr::new("import-tar"), file.as_os_str()]);
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
    let refused = env.run(&[OsStr::new("export-tar"), OsStr::new("dev"), out.as_os_str()]);
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
    // A level the compressor does not have is a usage error too.
    let bad_level = env.run(&[
        OsStr::new("export-tar"),
        OsStr::new("dev"),
        env.path("x.tar.gz").as_os_str(),
        OsStr::new("--level"),
        OsStr::new("10"),
    ]);
    assert_eq!(bad_level.status.code(), Some(2));
    assert!(!env.path("x.tar.gz").exists());
    // An unknown suffix is a usage error, not a guess.
    let odd = env.run(&[
        OsStr::new("export-tar"),
        OsStr::new("dev"),
        env.path("x.lz4").as_os_str(),
    ]);
    assert_eq!(odd.status.code(), Some(2));
    // Writable again, so that the temporary directory can be removed.
    env.ok(&["read-only", "dev", "no"]);
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
    let image = env.store.join("wrapped");
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
    assert!(env.store.join("plain/data/files").is_dir());
}

#[test]
fn export_holds_the_image_lock_and_warns_about_sockets() {
    let env = Env::new();
    let image = env.store.join("sock");
    std::fs::create_dir_all(&image).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(image.join("socket")).unwrap();
    std::fs::write(image.join("file"), b"x").unwrap();
    let out = env.run(&[
        OsStr::new("export-tar"),
        OsStr::new("sock"),
        env.path("s.tar").as_os_str(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket not archived"));
    sh(&format!(
        "test \"$(tar -tf '{}' | sort | tr '\\n' ' ')\" = './ ./file '",
        env.path("s.tar").display()
    ));
    // While an import of "busy" waits on its input, exporting "busy" fails at once, naming it.
    let mut importer = env
        .command()
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
    let out = env.run(&[
        OsStr::new("export-tar"),
        OsStr::new("busy"),
        env.path("b.tar").as_os_str(),
    ]);
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

#[test]
fn export_to_a_full_disk_leaves_nothing() {
    let env = Env::new();
    let image = env.store.join("big");
    std::fs::create_dir_all(&image).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(image.join("data"), data).unwrap();
    let target = env.path("small");
    let _tmpfs = Tmpfs::mount(&target, "1m");
    let out = env.run(&[
        OsStr::new("export-tar"),
        OsStr::new("big"),
        target.join("big.tar").as_os_str(),
    ]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.starts_with("rmach: ") && msg.trim_end().lines().count() == 1,
        "{msg}"
    );
    assert!(msg.contains("No space left"), "{msg}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "no output and no temporary file"
    );
}

#[test]
fn ctrl_c_during_export_leaves_no_file() {
    let env = Env::new();
    let image = env.store.join("big");
    std::fs::create_dir_all(&image).unwrap();
    // 24 MB that xz at level 9 on one thread takes many seconds to compress.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..24_000_000u32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(image.join("data"), data).unwrap();
    let out_dir = env.path("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut child = env
        .command()
        .args([
            "export-tar",
            "big",
            "--format",
            "xz",
            "--level",
            "9",
            "--threads",
            "1",
        ])
        .arg(out_dir.join("big.tar.xz"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&out_dir).unwrap().count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no output started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The handler removed the partial output: nothing is left for `clean`.
    assert!(!err.contains("clean"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left beside the output: {left:?}");
}

/// A running machine holds its image's lock (purpose Run or Boot, taken by `rmach run` and
/// `rmach boot` for the machine's lifetime), so exporting it fails at once instead of writing a
/// torn archive; once the lock is gone, the export goes through. The lock is taken here through
/// the store's API, as the runner does, so that this test does not depend on booting anything.
#[test]
fn a_running_machine_is_not_exported() {
    let env = Env::new();
    let image = env.store.join("probe");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(image.join("file"), b"x").unwrap();
    let store = env.library_store();
    let name = rmach::store::ImageName::parse("probe").unwrap();
    let out_file = env.path("probe.tar.zst");
    let export = || {
        env.run(&[
            OsStr::new("export-tar"),
            OsStr::new("probe"),
            out_file.as_os_str(),
        ])
    };
    for purpose in [
        rmach::store::LockPurpose::Run,
        rmach::store::LockPurpose::Boot,
    ] {
        let lock = store.lock(&name, purpose).unwrap();
        let out = export();
        let msg = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{msg}");
        assert!(
            msg.contains(&format!("probe is running (PID {})", std::process::id())),
            "{msg}"
        );
        assert!(!out_file.exists());
        drop(lock);
    }
    let out = export();
    assert_success(&out, "export-tar once the lock is gone");
}

/// Options that used to be taken or refused wrongly: `--threads 0`; a negative `--level`
/// (clap took `-5` for an option and advised `-- -5`, which makes it a file name).
#[test]
fn export_options_are_checked_with_the_right_advice() {
    let env = Env::new();
    fixture_image(&env, "opts", false);
    let out = |name: &str| env.path(name).to_str().unwrap().to_string();
    let msg = env.fails(
        &["export-tar", "opts", &out("t.tar.zst"), "--threads", "0"],
        2,
    );
    assert!(msg.contains("--threads") && msg.contains("0"), "{msg}");
    let msg = env.fails(
        &["export-tar", "opts", &out("l.tar.gz"), "--level", "-5"],
        2,
    );
    assert!(msg.contains("out of range for gzip: use 0 to 9"), "{msg}");
    assert!(!msg.contains("-- -5"), "{msg}");
    // zstd's fast levels are negative, and taken.
    env.ok(&["export-tar", "opts", &out("fast.tar.zst"), "--level", "-5"]);
    env.ok(&["import-tar", &out("fast.tar.zst"), "opts-back"]);
    assert_same(&env.store.join("opts"), &env.store.join("opts-back"), FULL);
    assert!(!env.path("t.tar.zst").exists() && !env.path("l.tar.gz").exists());
}
