//! Helpers for the runner's tests: a small root filesystem assembled from host binaries and
//! the libraries `ldd` names, placed in a temporary store, and a way to run rmach on it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Host programs copied into the probe image (with their libraries).
const PROGRAMS: &[&str] = &[
    "bash", "sh", "cat", "ls", "echo", "true", "false", "sleep", "head", "tail", "tr", "id",
    "hostname", "mkdir", "touch", "readlink", "stat", "grep", "env", "timeout", "wc", "rm",
    "chmod", "dd", "mount", "umount", "swapoff",
];

fn copy_with_parents(src: &Path, root: &Path) {
    let dst = root.join(src.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    if !dst.exists() {
        std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
}

/// Builds the probe image at `root`: /usr/bin with the programs above, /bin -> usr/bin,
/// their libraries, and a passwd with root and an unprivileged user.
pub fn make_rootfs(root: &Path) {
    for d in [
        "usr/bin",
        "etc",
        "root",
        "home/user",
        "tmp",
        "var/tmp",
        "proc",
        "sys",
        "dev",
        "run",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(t, root.join(l)).unwrap();
    }
    for p in PROGRAMS {
        let out = Command::new("bash")
            .args(["-c", &format!("type -P {p}")])
            .output()
            .unwrap();
        let host = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert!(
            host.is_absolute(),
            "{p} is needed on the host for the runner tests"
        );
        let host = std::fs::canonicalize(&host).unwrap();
        std::fs::copy(&host, root.join("usr/bin").join(p)).unwrap();
        let ldd = Command::new("ldd").arg(&host).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let lib = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(lib) = lib {
                let lib = if lib.starts_with("/lib") || lib.starts_with("/lib64") {
                    Path::new("/usr").join(lib.strip_prefix("/").unwrap())
                } else {
                    lib
                };
                let real = std::fs::canonicalize(&lib).unwrap();
                let dst = root.join(lib.strip_prefix("/").unwrap());
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                if !dst.exists() {
                    std::fs::copy(&real, &dst).unwrap();
                }
            }
        }
    }
    let _ = copy_with_parents;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nusers:x:100:user\nuser:x:1000:\n",
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
}

/// A temporary store holding the probe image under `name`.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl TestStore {
    pub fn new(name: &str) -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("rmach-run-")
            .tempdir()
            .unwrap();
        for d in ["store", "state", "cache"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        make_rootfs(&dir.path().join("store").join(name));
        TestStore {
            dir,
            name: name.into(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn image(&self, name: &str) -> PathBuf {
        self.store().join(name)
    }

    /// `rmach --store ... VERB ARGS`, stdin from /dev/null unless piped by the caller.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rmach"));
        c.arg("--store").arg(self.store());
        c.arg("--state-dir").arg(self.dir.path().join("state"));
        c.arg("--cache-dir").arg(self.dir.path().join("cache"));
        c.args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
