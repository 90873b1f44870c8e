//! import-tar on archives other tools write (Python's tarfile, bsdtar, GNU tar, gzip with tape
//! padding, concatenations) and on the corpus in fixtures/ (Go's archive/tar and tar-rs test
//! archives): where GNU tar extracts an archive, rmach's image must match GNU tar's tree
//! attribute by attribute; where it refuses, with one line. Needs root, GNU tar, python3,
//! bsdtar (libarchive-tools) and gzip.

mod common;

use std::path::{Path, PathBuf};

use common::tar::{differences_from_extraction, gnu_extract, RawTar};
use common::{require, sh, Env};

/// Imports `archive` as `name` and extracts it with GNU tar (`gnu_args` added); both must
/// succeed and agree. Returns the image.
fn same_as_gnu(env: &Env, archive: &Path, name: &str, gnu_args: &[&str]) -> PathBuf {
    let gnu = env.path(&format!("gnu-{name}"));
    let (ok, err) = gnu_extract(archive, &gnu, gnu_args);
    assert!(ok, "GNU tar refused {}: {err}", archive.display());
    env.ok(&["import-tar", archive.to_str().unwrap(), name]);
    let image = env.store.join(name);
    let d = differences_from_extraction(&gnu, &image, archive);
    assert!(
        d.is_empty(),
        "{name} differs from GNU tar:\n{}",
        d.join("\n")
    );
    image
}

fn python(script: &str) {
    require("python3");
    sh(&format!("python3 - <<'PY'\n{script}\nPY"));
}

/// Python's tarfile in PAX format cuts a long name into the 100-byte field anywhere and puts
/// the real one in PAX `path`; when byte 100 is a '/', the field ends in '/'. The member is a
/// file all the same.
#[test]
fn python_pax_member_whose_name_field_ends_in_a_slash_is_a_file() {
    let env = Env::new();
    let archive = env.path("py.tar");
    python(&format!(
        r#"import io, tarfile
with tarfile.open("{}", "w", format=tarfile.PAX_FORMAT) as t:
    i = tarfile.TarInfo("d" * 99 + "/victim.conf")
    data = b"secret\n"
    i.size = len(data)
    i.mode = 0o640
    t.addfile(i, io.BytesIO(data))"#,
        archive.display()
    ));
    let image = same_as_gnu(&env, &archive, "py", &[]);
    let file = image.join("d".repeat(99)).join("victim.conf");
    assert_eq!(std::fs::read(&file).unwrap(), b"secret\n");
}

/// A directory header with a size (old and Solaris-style writers) has no data: the members
/// after it are members, as GNU tar, libarchive and Python read them.
#[test]
fn a_directory_with_a_size_does_not_swallow_the_next_members() {
    let env = Env::new();
    let archive = env.path("dirsize.tar");
    let mut t = RawTar::default();
    t.raw(&common::tar::header(b"dir/", b'5', 0o755, 1024, b""));
    t.file("dir/a", b"first\n").file("dir/b", b"second\n");
    t.raw(&common::tar::header(b"link", b'2', 0o777, 512, b"dir/a"));
    t.file("after", b"third\n");
    std::fs::write(&archive, t.finish()).unwrap();
    let image = same_as_gnu(&env, &archive, "dirsize", &[]);
    assert_eq!(std::fs::read(image.join("after")).unwrap(), b"third\n");
}

/// bsdtar writes an all-hole file as a PAX sparse 1.0 member whose map has two empty segments.
#[test]
fn bsdtar_all_hole_sparse_file() {
    require("bsdtar");
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let archive = env.path("holes.tar");
    sh(&format!(
        "cd '{}' && truncate -s 1M empty-1m && truncate -s 3M tail \
         && printf end | dd of=tail bs=1 seek=3145725 conv=notrunc status=none \
         && bsdtar -cf '{}' empty-1m tail",
        src.display(),
        archive.display()
    ));
    let image = same_as_gnu(&env, &archive, "holes", &[]);
    assert_eq!(
        std::fs::metadata(image.join("empty-1m")).unwrap().len(),
        1 << 20
    );
}

/// gzip followed by zeros, as tape or `dd` blocking leaves it, is accepted (gzip -t and GNU tar
/// accept it); anything else after the gzip stream is refused.
#[test]
fn gzip_with_zero_padding_is_accepted_and_garbage_is_not() {
    let env = Env::new();
    let archive = env.path("padded.tar.gz");
    let mut t = RawTar::default();
    t.dir("etc/", 0o755).file("etc/hostname", b"padded\n");
    std::fs::write(env.path("padded.tar"), t.finish()).unwrap();
    sh(&format!(
        "gzip -c '{0}/padded.tar' > '{1}' && head -c 10240 /dev/zero >> '{1}' && gzip -t '{1}'",
        env.dir.path().display(),
        archive.display()
    ));
    same_as_gnu(&env, &archive, "padded", &[]);
    let garbage = env.path("garbage.tar.gz");
    sh(&format!(
        "cp '{}' '{1}' && printf 'not gzip' >> '{1}'",
        archive.display(),
        garbage.display()
    ));
    let msg = env.fails(&["import-tar", garbage.to_str().unwrap(), "garbage"], 1);
    assert!(msg.contains("neither gzip nor zero padding"), "{msg}");
    assert!(!env.store.join("garbage").exists());
}

/// An owner of 4294967295 (-1) means "leave as is" to chown; GNU tar passes it on, so the
/// extracting user keeps the file. rmach does the same instead of refusing the archive.
#[test]
fn owner_minus_one_is_left_as_is() {
    let env = Env::new();
    for (format, name) in [("PAX_FORMAT", "pax"), ("GNU_FORMAT", "gnu")] {
        let path = env.path(&format!("minus-one-{name}.tar"));
        python(&format!(
            r#"import io, tarfile
with tarfile.open("{}", "w", format=tarfile.{format}) as t:
    for name, uid, gid in [("both", 4294967295, 4294967295), ("gid", 1234, 4294967295), ("uid", 4294967295, 55)]:
        i = tarfile.TarInfo(name)
        i.size = 1
        i.uid, i.gid = uid, gid
        t.addfile(i, io.BytesIO(b"x"))"#,
            path.display()
        ));
        let image = same_as_gnu(&env, &path, &format!("m1-{name}"), &[]);
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(image.join("gid")).unwrap();
        assert_eq!((gid.uid(), gid.gid()), (1234, 0));
    }
}

/// Concatenated archives (`cat a.tar b.tar`, also compressed) are imported whole, as
/// systemd-import does by running `tar --ignore-zeros`; GNU tar with -i gives the reference.
#[test]
fn concatenated_archives_are_imported_whole() {
    let env = Env::new();
    let mut a = RawTar::default();
    a.dir("etc/", 0o755).file("etc/first", b"1\n");
    let mut b = RawTar::default();
    b.file("etc/second", b"2\n").dir("var/", 0o700);
    let (a, b) = (a.finish(), b.finish());
    // GNU tar pads to 10 KiB records: zeros between the archives.
    let mut both = a.clone();
    both.extend(vec![0u8; 10240 - a.len() % 10240]);
    both.extend(&b);
    let plain = env.path("both.tar");
    std::fs::write(&plain, &both).unwrap();
    let image = same_as_gnu(&env, &plain, "both", &["--ignore-zeros"]);
    assert_eq!(std::fs::read(image.join("etc/second")).unwrap(), b"2\n");
    std::fs::write(env.path("a.tar"), &a).unwrap();
    std::fs::write(env.path("b.tar"), &b).unwrap();
    let gz = env.path("both.tar.gz");
    sh(&format!(
        "cd '{}' && gzip -c a.tar > '{1}' && gzip -c b.tar >> '{1}'",
        env.dir.path().display(),
        gz.display()
    ));
    same_as_gnu(&env, &gz, "both-gz", &["--ignore-zeros"]);
    // Without its end marker the second archive is still a truncated archive.
    let mut cut = both.clone();
    cut.truncate(cut.len() - 1024);
    let cut_path = env.path("cut.tar");
    std::fs::write(&cut_path, &cut).unwrap();
    let msg = env.fails(&["import-tar", cut_path.to_str().unwrap(), "cut"], 1);
    assert!(msg.contains("end-of-archive"), "{msg}");
}

/// A NUL byte from a PAX record never reaches the terminal raw, and a warning names the
/// member as the archive does, not the staging path in the store.
#[test]
fn messages_carry_no_raw_nul_and_warnings_name_the_member() {
    let env = Env::new();
    let mut t = RawTar::default();
    t.pax(&[("SCHILY.xattr.user.a\0b", b"v")]).file("f", b"x");
    let out = env.run_input(&["import-tar", "-", "nul"], &t.finish());
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.contains(&0), "{:?}", out.stderr);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(r"user.a\0b") && msg.contains("member \"f\""),
        "{msg}"
    );
    assert!(!msg.contains(".#rmach"), "no staging path: {msg}");
    // user.* xattrs are not allowed on symlinks: a warning, naming the member.
    let mut t = RawTar::default();
    t.pax(&[("SCHILY.xattr.user.x", b"v")])
        .symlink("./etc/link", "target");
    let out = env.run_input(&["import-tar", "-", "warned"], &t.finish());
    assert!(out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("member \"./etc/link\""), "{msg}");
    assert!(
        !msg.contains(".#rmach") && !msg.contains(env.store.to_str().unwrap()),
        "{msg}"
    );
}

/// Archives of the corpus that GNU tar extracts and rmach refuses on purpose, each with the
/// words its one-line refusal must hold. Every one is a strictness docs/tar.md lists with its
/// reason.
const REFUSED: &[(&str, &str)] = &[
    // No end-of-archive marker: a cut archive looks exactly like this.
    ("go/gnu-incremental.tar", "end-of-archive marker is missing"),
    ("go/gnu-multi-hdrs.tar", "end-of-archive marker is missing"),
    ("go/nil-uid.tar", "end-of-archive marker is missing"),
    ("go/pax-multi-hdrs.tar", "end-of-archive marker is missing"),
    ("go/pax-path-hdr.tar", "end-of-archive marker is missing"),
    (
        "go/pax-pos-size-file.tar",
        "end-of-archive marker is missing",
    ),
    ("go/ustar-file-reg.tar", "end-of-archive marker is missing"),
    // A PAX value that is not what its keyword needs (GNU tar drops it silently).
    (
        "go/pax-bad-mtime-file.tar",
        "PAX record \"mtime\" has an invalid value",
    ),
    // A NUL inside a PAX path (GNU tar cuts the name there: another file than meant).
    ("go/pax-nul-path.tar", "contains a NUL byte"),
    // An empty name (GNU tar substitutes "." for it).
    ("tar-rs/empty_filename.tar", "its path is empty"),
];

/// Archives GNU tar fails on and rmach extracts; they are compared with
/// bsdtar's extraction instead, attribute by attribute (old GNU and PAX 0.x sparse members GNU
/// tar 1.34 misreads).
const BETTER_THAN_GNU: &[&str] = &["go/sparse-formats.tar"];

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tar");
    let mut out = Vec::new();
    for set in ["go", "tar-rs"] {
        for e in std::fs::read_dir(root.join(set)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".tar") || name.ends_with(".tar.bz2") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() > 50, "the corpus is in fixtures/tar");
    out
}

/// Every archive of the corpus: where GNU tar extracts it, rmach's image matches GNU tar's tree
/// attribute by attribute or rmach refuses it as [`REFUSED`] lists; where GNU tar fails, rmach
/// refuses with one line too, or extracts it as [`BETTER_THAN_GNU`] lists.
#[test]
fn every_archive_of_the_corpus_matches_gnu_tar_or_is_a_documented_refusal() {
    require("bsdtar");
    let env = Env::new();
    let mut report = Vec::new();
    let mut compared = 0;
    for (i, archive) in corpus().iter().enumerate() {
        let key = format!(
            "{}/{}",
            archive
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy(),
            archive.file_name().unwrap().to_string_lossy()
        );
        let name = format!("c{i}");
        let gnu = env.path(&format!("gnu-{name}"));
        let (gnu_ok, gnu_err) = gnu_extract(archive, &gnu, &[]);
        let out = env.run(&["import-tar", archive.to_str().unwrap(), &name]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let refused = REFUSED.iter().find(|(k, _)| *k == key);
        if out.status.success() {
            assert!(refused.is_none(), "{key}: listed as refused but imported");
            if gnu_ok {
                let d = differences_from_extraction(&gnu, &env.store.join(&name), archive);
                if !d.is_empty() {
                    report.push(format!("{key} differs from GNU tar:\n{}", d.join("\n")));
                }
                compared += 1;
            } else if BETTER_THAN_GNU.contains(&key.as_str()) {
                let bsd = env.path(&format!("bsd-{name}"));
                std::fs::create_dir_all(&bsd).unwrap();
                sh(&format!(
                    "bsdtar --numeric-owner -xpf '{}' -C '{}'",
                    archive.display(),
                    bsd.display()
                ));
                let d = differences_from_extraction(&bsd, &env.store.join(&name), archive);
                if !d.is_empty() {
                    report.push(format!(
                        "{key}: not as bsdtar extracts it:\n{}",
                        d.join("\n")
                    ));
                }
            } else {
                report.push(format!(
                    "{key}: GNU tar fails ({gnu_err}) but rmach imported it"
                ));
            }
        } else {
            assert_eq!(out.status.code(), Some(1), "{key}: {err}");
            assert!(
                err.starts_with("rmach: ") && err.trim_end().lines().count() == 1,
                "{key}: one line: {err:?}"
            );
            assert!(!env.store.join(&name).exists());
            match refused {
                Some((_, why)) => assert!(err.contains(why), "{key}: {err}"),
                None if gnu_ok => report.push(format!("{key}: GNU tar extracts it, rmach: {err}")),
                None => {}
            }
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
    assert!(
        compared >= 40,
        "only {compared} archives compared with GNU tar"
    );
    assert_eq!(
        env.store_entries()
            .iter()
            .filter(|e| e.starts_with(".#"))
            .count(),
        0
    );
}
