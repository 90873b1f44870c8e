//! The real thing: `rmach bootstrap bookworm` (minbase, buildd, default) from the Debian mirror
//! of the host's apt sources, against debootstrap run with the same arguments on the same
//! mirror: the identical package set, every package `ii`, `dpkg --audit` and `apt-get check`
//! clean inside, and the same file tree apart from the documented varying files (see
//! docs/bootstrap.md). Needs root, the network to that mirror, and debootstrap. Downloads are
//! shared through /var/cache/rmach-test, so a second run downloads nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

const CACHE: &str = "/var/cache/rmach-test";
static SERIAL: Mutex<()> = Mutex::new(());

/// Paths whose content or metadata legitimately differ between the two tools.
fn varies(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "etc/hostname",   // debootstrap copies the host's; rmach writes the image name
        "etc/machine-id", // rmach leaves an empty one for first boot
        "var/cache/ldconfig/aux-cache", // inode and mtime cache
        "var/lib/dpkg/available", // same stanzas, in dpkg's hash order (checked as a set below)
        "var/log/alternatives.log", // timestamps
        "var/log/bootstrap.log", // each tool's own log
        "var/log/dpkg.log", // timestamps
        "run/mount",      // debootstrap mounts /proc with the image's mount(8)
    ];
    const UNDER: &[&str] = &[
        "var/cache/apt/archives/", // debootstrap leaves the .debs; rmach leaves none
        "var/lib/apt/lists/",      // debootstrap leaves its indices, named after the mirror
        "run/mount/",
    ];
    EXACT.contains(&path) || UNDER.iter().any(|u| path.starts_with(u))
}

#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    size: u64,
    link: Option<PathBuf>,
    sha256: Option<String>,
    rdev: u64,
}

fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "special"
            };
            if varies(&rel) {
                continue;
            }
            let sha256 = ft
                .is_file()
                .then(|| hex::encode(Sha256::digest(std::fs::read(&path).unwrap())));
            // resolv.conf is the host's, copied with its mode by debootstrap: content only.
            let mode = if rel == "etc/resolv.conf" {
                0
            } else {
                m.mode()
            };
            out.insert(
                rel,
                Node {
                    kind,
                    mode,
                    owner: (m.uid(), m.gid()),
                    size: if ft.is_dir() { 0 } else { m.size() },
                    link: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                    sha256,
                    rdev: m.rdev(),
                },
            );
        }
    }
    out
}

fn host_mirror() -> String {
    rmach::bootstrap::host_debian_mirror(Path::new("/etc/apt"))
        .expect("the host's apt sources name no Debian mirror; the end-to-end test needs one")
        .trim_end_matches('/')
        .to_string()
}

/// `Package` → `Status` from a dpkg status file.
fn statuses(root: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |n: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(n))
                .map(|v| v.trim().to_string())
        };
        if let (Some(p), Some(s)) = (field("Package:"), field("Status:")) {
            out.insert(p, s);
        }
    }
    out
}

fn available_names(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("var/lib/dpkg/available")).unwrap();
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn inside(root: &Path, args: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} in {}: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// rmach with its store and state under `dir` and the shared download cache.
fn rmach(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmach"));
    cmd.arg("--store")
        .arg(dir.join("store"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--cache-dir")
        .arg(CACHE)
        .env_remove("RMACH_MIRROR");
    cmd
}

fn compare(variant: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mirror = host_mirror();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let name = format!("e2e-{variant}");
    let out = rmach(dir.path())
        .args(["bootstrap", "bookworm", &name, "--variant", variant])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rmach bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = store.join(&name);

    let ds_cache = PathBuf::from(CACHE).join("debootstrap");
    std::fs::create_dir_all(&ds_cache).unwrap();
    let theirs = dir.path().join("debootstrap");
    let mut cmd = Command::new("debootstrap");
    if variant != "default" {
        cmd.arg(format!("--variant={variant}"));
    }
    let out = cmd
        .arg(format!("--cache-dir={}", ds_cache.display()))
        .arg("bookworm")
        .arg(&theirs)
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (a, b) = (statuses(&theirs), statuses(&ours));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "package sets differ"
    );
    for (p, s) in &b {
        assert_eq!(s, "install ok installed", "{p} is not ii");
    }
    assert_eq!(available_names(&theirs), available_names(&ours));
    assert_eq!(
        inside(&ours, &["dpkg", "--audit"]).trim(),
        "",
        "dpkg --audit"
    );
    assert_eq!(
        std::fs::read_to_string(ours.join("etc/hostname")).unwrap(),
        format!("{name}\n")
    );
    assert_eq!(std::fs::read(ours.join("etc/machine-id")).unwrap(), b"");
    assert!(!ours.join("usr/sbin/policy-rc.d").exists());
    let debs: Vec<_> = std::fs::read_dir(ours.join("var/cache/apt/archives"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
        .map(|e| e.file_name())
        .collect();
    assert!(debs.is_empty(), ".debs left in the image: {debs:?}");
    assert!(std::fs::read(ours.join("sbin/start-stop-daemon"))
        .unwrap()
        .starts_with(b"\x7fELF"));
    assert!(std::fs::read(ours.join("usr/bin/ischroot"))
        .unwrap()
        .starts_with(b"\x7fELF"));
    assert!(!ours.join("usr/bin/ischroot.REAL").exists());

    let (ta, tb) = (snapshot(&theirs), snapshot(&ours));
    let mut diffs = Vec::new();
    for (path, node) in &ta {
        match tb.get(path) {
            None => diffs.push(format!("only in debootstrap's: {path}")),
            Some(n) if n != node => diffs.push(format!(
                "differs: {path}: debootstrap {node:?}, rmach {n:?}"
            )),
            _ => {}
        }
    }
    diffs.extend(
        tb.keys()
            .filter(|p| !ta.contains_key(*p))
            .map(|p| format!("only in rmach's: {p}")),
    );
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Last: apt-get check writes apt's caches into the image.
    inside(&ours, &["apt-get", "check", "-q"]);
}

#[test]
fn bookworm_minbase_matches_debootstrap() {
    compare("minbase");
}

#[test]
fn bookworm_buildd_matches_debootstrap() {
    compare("buildd");
}

#[test]
fn bookworm_default_matches_debootstrap() {
    compare("default");
}

/// Ctrl-C while the second stage runs: the runner passes it on to dpkg, the step fails with a
/// one-line error that says so, and no image is left (`clean` finds nothing else).
#[test]
fn ctrl_c_in_the_second_stage_leaves_no_image() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut child = rmach(dir.path())
        .args(["bootstrap", "bookworm", "int", "--variant", "minbase"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The second stage has begun once dpkg has written its log in the staging directory.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let started = || {
        std::fs::read_dir(&store)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().join("var/log/dpkg.log").exists())
            })
            .unwrap_or(false)
    };
    while !started() {
        assert!(std::time::Instant::now() < deadline, "no second stage");
        assert!(child.try_wait().unwrap().is_none(), "rmach ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let sent = std::time::Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert!(sent.elapsed().as_secs() < 10, "took {:?}", sent.elapsed());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    // Mostly dpkg is running and gets the signal through the runner; between two steps rmach's
    // own handler answers (exit 130) and leaves the staging directory to `clean`.
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!store.join("int").exists());
    let clean = rmach(dir.path()).arg("clean").output().unwrap();
    assert!(clean.status.success());
    let left: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the store: {left:?}");
}
