//! `rmach bootstrap` against a hermetic fixture mirror served on loopback: the resolver
//! (compared with debootstrap's own on the same mirror), signature and checksum failures,
//! Ubuntu's layout (zstd .debs, merged /usr), and errors that must leave no image. Needs root
//! (device nodes, chown) and debootstrap + dpkg-deb + gpgv on the host.

mod common;
use common::mirror;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::bootstrap::{assert_store_empty, interrupt, must_fail, run, stderr, wait_for};
use common::{assert_success, Env};
use mirror::{pkg, Mirror, Pkg, Spec};
use rmach::bootstrap::{self, Options, Variant};

fn debian_pkgs() -> Vec<Pkg> {
    let mut pre = pkg("dash", "required", "");
    pre.pre_depends = "debianutils (>= 1)".into();
    vec![
        pkg("base-files", "required", "libc6 (>= 2) | libc-alt"),
        pkg("libc6", "required", "libgcc-s1, virtual-thing"),
        pkg("libgcc-s1", "optional", "gcc-base:any (= 1.0)"),
        pkg("gcc-base", "optional", ""),
        pre,
        pkg("debianutils", "optional", "usrmerge | usr-is-merged"),
        pkg("usrmerge", "optional", "perl-thing"),
        pkg("perl-thing", "optional", ""),
        pkg("usr-is-merged", "optional", ""),
        pkg("libc-alt", "optional", ""),
        pkg("apt", "important", "libapt (>= 1), gpgv | gpgv2"),
        pkg("libapt", "optional", ""),
        pkg("gpgv", "optional", ""),
        pkg("gpgv2", "optional", ""),
        pkg("important-thing", "important", "dash"),
        pkg("extra", "optional", "gcc-base"),
        pkg("dropped", "required", "libc-alt"),
        pkg("build-essential", "optional", "make"),
        pkg("make", "optional", ""),
        pkg("base-passwd", "required", ""),
        pkg("dpkg", "required", ""),
        pkg("perl-base", "required", ""),
        pkg("mawk", "required", ""),
    ]
}

fn debian_mirror(dir: &Path) -> Mirror {
    bookworm_mirror(dir, debian_pkgs())
}

fn bookworm_mirror(dir: &Path, pkgs: Vec<Pkg>) -> Mirror {
    mirror::build(
        dir,
        Spec {
            pkgs,
            ..debian_spec("bookworm", "bookworm")
        },
    )
}

/// The fixture's Debian packages as `suite`, whose Release names `codename`.
fn debian_spec(suite: &'static str, codename: &'static str) -> Spec<'static> {
    Spec {
        suite,
        codename,
        origin: "Debian",
        valid_until: None,
        pkgs: debian_pkgs(),
    }
}

fn opts(m: &Mirror, dir: &Path, variant: Variant) -> Options {
    Options {
        suite: m.suite.clone(),
        mirror: m.url.clone(),
        variant,
        arch: "amd64".into(),
        components: vec![],
        include: vec!["extra".into()],
        exclude: vec!["dropped".into()],
        keyring: Some(m.keyring.clone()),
        cache_dir: dir.join("cache"),
        hostname: "t".into(),
        jobs: 4,
        settings: Default::default(),
        reproducible: Default::default(),
    }
}

fn sorted(words: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = words.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn package_set_is_debootstraps_on_the_same_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let m = debian_mirror(dir.path());
    for (variant, flag) in [
        (Variant::Minbase, "minbase"),
        (Variant::Buildd, "buildd"),
        (Variant::Default, ""),
    ] {
        let ours = bootstrap::print_debs(&opts(&m, dir.path(), variant), &|_| {}).unwrap();
        let target = dir.path().join(format!("ds-{flag}"));
        let mut cmd = Command::new("debootstrap");
        cmd.arg("--print-debs")
            .arg(format!("--keyring={}", m.keyring.display()));
        cmd.args(["--include=extra", "--exclude=dropped", "--arch=amd64"]);
        if !flag.is_empty() {
            cmd.arg(format!("--variant={flag}"));
        }
        let out = cmd
            .arg("bookworm")
            .arg(&target)
            .arg(&m.url)
            .output()
            .unwrap();
        assert_success(&out, "debootstrap --print-debs");
        let theirs = sorted(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from),
        );
        assert_eq!(ours, theirs, "variant {flag:?}");
    }
    // The rules themselves, spelled out: first alternatives, no virtuals, usrmerge excluded,
    // usr-is-merged added, --exclude on seeds only, --include added.
    let ours = bootstrap::print_debs(&opts(&m, dir.path(), Variant::Minbase), &|_| {}).unwrap();
    let want = [
        "apt",
        "base-files",
        "base-passwd",
        "dash",
        "debianutils",
        "dpkg",
        "extra",
        "gcc-base",
        "gpgv",
        "libapt",
        "libc6",
        "libgcc-s1",
        "mawk",
        "perl-base",
        "usr-is-merged",
    ];
    assert_eq!(ours, want);
}

#[test]
fn verification_failures_leave_no_image() {
    let env = Env::new();
    let d = env.dir.path();
    let m = debian_mirror(d);
    let key = m.keyring.display().to_string();
    let other = m.other_keyring.display().to_string();
    let base = [
        "bootstrap",
        "bookworm",
        "img",
        "--mirror",
        &m.url,
        "--variant",
        "minbase",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let refused = |args: Vec<String>, expect: &str| {
        must_fail(
            &env,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            expect,
        )
    };

    refused(with(&["--keyring", &other]), "signature does not verify");
    refused(
        with(&["--keyring", "/nonexistent/key.gpg"]),
        "/nonexistent/key.gpg",
    );
    // A 404: the suite is not on the mirror.
    let args: Vec<String> = [
        "bootstrap",
        "trixie",
        "img",
        "--mirror",
        &m.url,
        "--keyring",
        &key,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    refused(args, "not found (HTTP 404)");
    // The same through a file:// mirror: no HTTP involved, and the message says so.
    let file_mirror = format!("file://{}", m.root.display());
    let out = run(
        &env,
        &[
            "bootstrap",
            "trixie",
            "img",
            "--mirror",
            &file_mirror,
            "--keyring",
            &key,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not found (no such file)"), "{err}");
    assert!(!err.contains("HTTP"), "{err}");
    // Nobody listens on port 1.
    let start = std::time::Instant::now();
    let args: Vec<String> = [
        "bootstrap",
        "bookworm",
        "img",
        "--mirror",
        "http://127.0.0.1:1",
        "--keyring",
        &key,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    refused(args, "http://127.0.0.1:1/dists/bookworm/InRelease");
    assert!(
        start.elapsed().as_secs() < 30,
        "unreachable mirror took {:?}",
        start.elapsed()
    );
    // An unknown suite without a keyring is refused before any network access.
    refused(
        vec![
            "bootstrap".into(),
            "no-such".into(),
            "img".into(),
            "--mirror".into(),
            m.url.clone(),
        ],
        "--keyring FILE",
    );

    // An altered .deb (same size, one byte changed).
    let deb = m.root.join("pool/main/apt_1.0_amd64.deb");
    let good = std::fs::read(&deb).unwrap();
    let mut bad = good.clone();
    let n = bad.len() - 10;
    bad[n] ^= 0xff;
    std::fs::write(&deb, &bad).unwrap();
    refused(with(&["--keyring", &key]), "SHA256 mismatch");
    std::fs::write(&deb, &good).unwrap();
    // Without a core package the second stage installs by name: refused before any download.
    refused(
        with(&["--keyring", &key, "--exclude", "dpkg"]),
        "dpkg not in the package set (left out with --exclude?)",
    );

    // An altered index: by-hash and plain copies of Packages.xz replaced. The cache holds the
    // good index under the Release's hash, so it goes first.
    std::fs::remove_dir_all(d.join("cache")).unwrap();
    let bin = m.root.join("dists/bookworm/main/binary-amd64");
    let saved: Vec<_> = walk(&bin)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    for (p, data) in &saved {
        let mut d2 = data.clone();
        d2.extend_from_slice(b"\n");
        std::fs::write(p, d2).unwrap();
    }
    refused(with(&["--keyring", &key]), "size mismatch");
    for (p, data) in &saved {
        std::fs::write(p, data).unwrap();
    }

    // An altered InRelease: one signed line changed.
    let inrelease = m.root.join("dists/bookworm/InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        text.replace("Codename: bookworm", "Codename: bookwork"),
    )
    .unwrap();
    refused(with(&["--keyring", &key]), "signature does not verify");
    std::fs::write(&inrelease, &text).unwrap();
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `rmach bootstrap SUITE img` from the fixture mirror with its keyring and `extra` must fail
/// naming `expect`, leaving no image.
fn refused_from(env: &Env, m: &Mirror, suite: &str, extra: &[&str], expect: &str) {
    let key = m.keyring.display().to_string();
    let mut args = vec![
        "bootstrap",
        suite,
        "img",
        "--mirror",
        &m.url,
        "--keyring",
        &key,
    ];
    args.extend_from_slice(extra);
    must_fail(env, &args, expect);
}

/// `len` characters of hex that xz cannot shrink much (a package whose download takes time).
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

/// The fixture's packages plus one required package with `content` in a file.
fn mirror_with(dir: &Path, name: &str, content: String) -> Mirror {
    let mut pkgs = debian_pkgs();
    let mut big = pkg(name, "required", "");
    big.files = vec![(format!("usr/share/{name}/data"), content)];
    pkgs.push(big);
    bookworm_mirror(dir, pkgs)
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_no_image() {
    let env = Env::new();
    let d = env.dir.path();
    // 8 MiB that xz makes small: the download is quick, the extraction does not fit.
    let m = mirror_with(d, "bulky", "x".repeat(8 << 20));
    let store = env.store.clone();
    std::fs::create_dir_all(&store).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "rmach-test"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(mounted.success());
    let key = m.keyring.display().to_string();
    let args = [
        "bootstrap",
        "bookworm",
        "img",
        "--mirror",
        &m.url,
        "--keyring",
        &key,
        "--variant",
        "minbase",
    ];
    let out = run(&env, &args);
    let _ = Command::new("umount").arg(&store).status();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_store_empty(&env, "after failure");
}

#[test]
fn ctrl_c_stops_at_once_and_leaves_no_image() {
    let env = Env::new();
    let d = env.dir.path();
    // 2 MiB served at 160 KiB/s: several seconds to download.
    let m = mirror_with(d, "slowpkg", noise(2 << 20));
    let key = m.keyring.display().to_string();
    let child = common::bootstrap::command(&env)
        .args(["bootstrap", "bookworm", "img", "--mirror", &m.url])
        .args(["--keyring", &key, "--variant", "minbase"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the slow package is being downloaded.
    let debs = env.cache.join("bootstrap/debs");
    wait_for("a download", Duration::from_secs(30), || {
        std::fs::read_dir(&debs).is_ok_and(|r| r.count() >= 2)
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, err, took) = interrupt(child);
    assert!(took.as_secs() < 5, "took {took:?}");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: nothing was created"), "{err}");
    assert!(!env.store.join("img").exists());
    let out = run(&env, &["clean"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_store_empty(&env, "after clean");
}

#[test]
fn expired_release_is_refused() {
    let env = Env::new();
    let spec = Spec {
        valid_until: Some("Thu, 01 Jan 2015 00:00:00 UTC"),
        ..debian_spec("bookworm", "bookworm")
    };
    let m = mirror::build(env.dir.path(), spec);
    refused_from(&env, &m, "bookworm", &[], "expired");
}

/// jammy's layout: zstd-compressed .debs with files in /bin, /lib and /usr, merged by the
/// first stage; the fixture cannot run dpkg, so the full bootstrap must fail cleanly.
#[test]
fn ubuntu_zstd_debs_and_merged_usr() {
    let env = Env::new();
    let dir = &env.dir;
    let mut pkgs = vec![
        pkg("base-files", "required", "bash"),
        pkg("bash", "required", ""),
        pkg("coreutils", "required", ""),
        pkg("apt", "important", ""),
        pkg("usrmerge", "optional", ""),
        pkg("base-passwd", "required", ""),
        pkg("dpkg", "required", ""),
        pkg("libc6", "required", ""),
        pkg("perl-base", "required", ""),
        pkg("mawk", "required", ""),
    ];
    pkgs[1].files.push(("bin/bash".into(), "#!fake\n".into()));
    pkgs[1].files.push(("bin/sh".into(), "->bash".into()));
    pkgs[2].files.push(("usr/bin/env".into(), "env\n".into()));
    pkgs[2]
        .files
        .push(("lib/x86_64-linux-gnu/libfake.so.1".into(), "lib\n".into()));
    pkgs[2]
        .files
        .push(("sbin/fake-init".into(), "init\n".into()));
    for p in &mut pkgs {
        p.compression = "zstd".into();
    }
    let m = mirror::build(
        dir.path(),
        Spec {
            suite: "jammy",
            codename: "jammy",
            origin: "Ubuntu",
            valid_until: None,
            pkgs,
        },
    );
    let apt_deb = std::fs::read(m.root.join("pool/main/apt_1.0_amd64.deb")).unwrap();
    assert!(
        apt_deb
            .windows(15)
            .any(|w| w == b"data.tar.zst/  " || w.starts_with(b"data.tar.zst")),
        "fixture not zstd"
    );
    let mut o = opts(&m, dir.path(), Variant::Minbase);
    o.include.clear();
    o.exclude.clear();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let report = bootstrap::first_stage(&o, &target, &|_| {}).unwrap();
    assert_eq!(report.distro, "ubuntu");
    assert_eq!(
        report.packages,
        [
            "apt",
            "base-files",
            "base-passwd",
            "bash",
            "coreutils",
            "dpkg",
            "libc6",
            "mawk",
            "perl-base"
        ]
    );
    for (link, to) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/sbin")] {
        assert_eq!(
            std::fs::read_link(target.join(link)).unwrap(),
            Path::new(to)
        );
    }
    assert_eq!(
        std::fs::read_to_string(target.join("usr/bin/bash")).unwrap(),
        "#!fake\n"
    );
    assert_eq!(
        std::fs::read_link(target.join("usr/bin/sh")).unwrap(),
        Path::new("bash")
    );
    assert!(target
        .join("usr/lib/x86_64-linux-gnu/libfake.so.1")
        .is_file());
    assert!(target.join("usr/sbin/fake-init").is_file());
    assert!(
        !target.join("usr/share/doc/apt").exists(),
        "base packages are not extracted in the first stage"
    );
    let sources = std::fs::read_to_string(target.join("etc/apt/sources.list")).unwrap();
    assert_eq!(sources, format!("deb {} jammy main\n", m.url));
    assert!(std::fs::symlink_metadata(target.join("dev/null"))
        .unwrap()
        .file_type()
        .is_char_device_like());

    // The whole bootstrap fails in the second stage (nothing in the fixture runs) and leaves
    // no image; the packages it downloaded stay cached.
    refused_from(
        &env,
        &m,
        "jammy",
        &["--variant", "minbase"],
        "second stage: checking the image runs: cannot run inside the image",
    );
    assert!(
        std::fs::read_dir(dir.path().join("cache/bootstrap/debs"))
            .unwrap()
            .count()
            >= 4
    );
}

trait CharDev {
    fn is_char_device_like(&self) -> bool;
}

impl CharDev for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}

/// The cache is keyed by SHA256: a second first stage downloads nothing, and a truncated
/// cached file is detected and fetched again.
#[test]
fn cache_is_reused_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let m = debian_mirror(dir.path());
    let o = opts(&m, dir.path(), Variant::Minbase);
    let t1 = dir.path().join("t1");
    std::fs::create_dir(&t1).unwrap();
    let first = bootstrap::first_stage(&o, &t1, &|_| {}).unwrap();
    assert!(first.downloaded_bytes > 0);
    let t2 = dir.path().join("t2");
    std::fs::create_dir(&t2).unwrap();
    let second = bootstrap::first_stage(&o, &t2, &|_| {}).unwrap();
    assert_eq!(second.downloaded_bytes, 0);
    let debs = dir.path().join("cache/bootstrap/debs");
    let victim = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let len = std::fs::metadata(&victim).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let t3 = dir.path().join("t3");
    std::fs::create_dir(&t3).unwrap();
    let third = bootstrap::first_stage(&o, &t3, &|_| {}).unwrap();
    assert_eq!(third.downloaded_bytes, len);
    // A partial download (`SHA256.part`) is resumed with a Range request, not restarted.
    let good = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let part = victim.with_extension("part");
    std::fs::write(&part, &good[..good.len() / 3]).unwrap();
    let t4 = dir.path().join("t4");
    std::fs::create_dir(&t4).unwrap();
    let fourth = bootstrap::first_stage(&o, &t4, &|_| {}).unwrap();
    assert_eq!(
        fourth.downloaded_bytes,
        (good.len() - good.len() / 3) as u64
    );
    assert_eq!(std::fs::read(&victim).unwrap(), good);
    assert!(!part.exists());
}

/// `stable` is an alias: the Release file's Codename (bookworm) picks the rules, so
/// usr-is-merged joins the required set. A suite rmach does not know works with --keyring and
/// follows the newest Debian rules (no usr-is-merged, usrmerge still excluded).
#[test]
fn aliases_and_unknown_suites() {
    let dir = tempfile::tempdir().unwrap();
    let m = mirror::build(dir.path(), debian_spec("stable", "bookworm"));
    let set = bootstrap::print_debs(&opts(&m, dir.path(), Variant::Minbase), &|_| {}).unwrap();
    assert!(set.contains(&"usr-is-merged".to_string()), "{set:?}");

    let dir2 = tempfile::tempdir().unwrap();
    let m2 = mirror::build(dir2.path(), debian_spec("rmach-future", "rmach-future"));
    let set = bootstrap::print_debs(&opts(&m2, dir2.path(), Variant::Minbase), &|_| {}).unwrap();
    assert!(
        !set.contains(&"usr-is-merged".to_string()) && !set.contains(&"usrmerge".to_string()),
        "{set:?}"
    );
    assert!(set.contains(&"debianutils".to_string()));
}

/// A validly signed Release of another suite served under the name asked for is refused; so is
/// a Release older than the one verified before for that mirror and suite (a replay), while a
/// newer one is accepted and becomes the new floor. Each refusal names the URL.
#[test]
fn release_of_another_suite_or_older_date_is_refused() {
    let env = Env::new();
    let dir = &env.dir;
    let m = debian_mirror(dir.path());
    let o = opts(&m, dir.path(), Variant::Minbase);
    m.resign(|r| {
        r.replace(
            "Suite: bookworm\nCodename: bookworm",
            "Suite: trixie\nCodename: trixie",
        )
    });
    let err = bootstrap::print_debs(&o, &|_| {}).unwrap_err().to_string();
    assert!(
        err.contains("is for trixie") && err.contains("not bookworm"),
        "{err}"
    );
    assert!(err.contains(&m.url), "{err}");

    m.resign(|r| r.to_string());
    bootstrap::print_debs(&o, &|_| {}).unwrap();
    m.resign(|r| {
        r.replace(
            "Sat, 11 Jul 2026 10:16:37 UTC",
            "Fri, 10 Jul 2026 10:16:37 UTC",
        )
    });
    let err = bootstrap::print_debs(&o, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("older than the one verified before"), "{err}");
    assert!(err.contains("Sat, 11 Jul 2026"), "{err}");
    // The CLI refuses it too and creates nothing.
    refused_from(
        &env,
        &m,
        "bookworm",
        &[],
        "older than the one verified before",
    );

    m.resign(|r| {
        r.replace(
            "Sat, 11 Jul 2026 10:16:37 UTC",
            "Sun, 12 Jul 2026 10:16:37 UTC",
        )
    });
    bootstrap::print_debs(&o, &|_| {}).unwrap();
    m.resign(|r| r.to_string());
    let err = bootstrap::print_debs(&o, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("Sun, 12 Jul 2026"), "{err}");
}

/// Two bootstraps sharing a cache at once (as parallel CI jobs do): each package is downloaded
/// once, the second waiting for the first's partial file instead of writing into it, and both
/// first stages succeed with verified files.
#[test]
fn concurrent_first_stages_share_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    // 384 KiB the fixture server sends at 160 KiB/s: the two runs overlap on it for seconds.
    let m = mirror_with(dir.path(), "slowshared", noise(384 << 10));
    let o = opts(&m, dir.path(), Variant::Minbase);
    let (t1, t2) = (dir.path().join("t1"), dir.path().join("t2"));
    std::fs::create_dir(&t1).unwrap();
    std::fs::create_dir(&t2).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| bootstrap::first_stage(&o, &t1, &|_| {}));
        let b = s.spawn(|| bootstrap::first_stage(&o, &t2, &|_| {}));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let debs = dir.path().join("cache/bootstrap/debs");
    let cached: u64 = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(
        a.downloaded_bytes + b.downloaded_bytes,
        cached,
        "every package downloaded once ({} + {} bytes)",
        a.downloaded_bytes,
        b.downloaded_bytes
    );
    let parts: Vec<_> = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .collect();
    assert!(parts.is_empty(), "partial files left: {parts:?}");
    assert_eq!(
        std::fs::read(t1.join("usr/share/slowshared/data")).unwrap(),
        std::fs::read(t2.join("usr/share/slowshared/data")).unwrap()
    );
}
