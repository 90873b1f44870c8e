//! Helpers shared by the tests that drive the rmach binary: a throw-away store and a way to run
//! the binary against it ([`Env`]), a shell runner, tree fixtures and an attribute-by-attribute
//! tree comparison ([`tree`]), and builders for tar archives and the tar fixture ([`tar`]).
//! Each test binary takes it with `mod common;` and uses what it needs.
#![allow(dead_code)]

pub mod bootstrap;
pub mod http;
pub mod mirror;
pub mod oci;
pub mod registry;
pub mod tar;
pub mod tree;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary store, state directory and cache directory, room for inputs and outputs, and
/// the binary pointed at them.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub state: PathBuf,
    pub cache: PathBuf,
}

/// A killed rmach (or supervisor) cannot remove the lock files it holds for systemd's sake
/// (nspawn's `/run/systemd/nspawn/locks/inode-*`, as a killed nspawn cannot): `clean` removes
/// the unheld ones of the store's images, so no test leaves them on the host.
impl Drop for Env {
    fn drop(&mut self) {
        if self.store.is_dir() {
            let _ = self.command().arg("-q").arg("clean").output();
        }
    }
}

impl Env {
    pub fn new() -> Env {
        Env::with_store_in(None)
    }

    /// A store inside `parent` (a mounted test file system) instead of the temporary directory.
    pub fn with_store_in(parent: Option<&Path>) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("rmach-test-")
            .tempdir()
            .unwrap();
        let store = parent.unwrap_or(dir.path()).join("store");
        let state = dir.path().join("state");
        let cache = dir.path().join("cache");
        Env {
            dir,
            store,
            state,
            cache,
        }
    }

    /// `rel` inside the temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A command for the binary with this environment's store, state and cache directories
    /// (through the environment, so that a test can still pass `--store`) and no input; the
    /// caller adds arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmach"));
        cmd.env("RMACH_STORE", &self.store)
            .env("RMACH_STATE_DIR", &self.state)
            .env("RMACH_CACHE_DIR", &self.cache)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs rmach with `args` and no input.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_with(args, None)
    }

    /// Runs rmach with `args`, feeding `input` on its standard input.
    pub fn run_input<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Output {
        self.run_with(args, Some(input))
    }

    fn run_with<S: AsRef<OsStr>>(&self, args: &[S], input: Option<&[u8]>) -> Output {
        let mut cmd = self.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = input {
            let mut pipe = child.stdin.take().unwrap();
            let data = data.to_vec();
            // A writer thread, so that a child that stops reading early cannot block the test.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rmach {:?} failed ({:?}): {}",
            shown(args),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires failure with `code`, without a panic and with one line on stderr;
    /// returns stderr.
    pub fn fails<S: AsRef<OsStr>>(&self, args: &[S], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "rmach {:?}: {stderr}",
            shown(args)
        );
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr
    }

    /// The store through the library, as the binary opens it.
    pub fn library_store(&self) -> rmach::store::Store {
        rmach::store::Store::open(&self.store, &self.state).unwrap()
    }

    /// Names of the entries in the store directory, hidden ones included, sorted; none when
    /// the store does not exist yet.
    pub fn store_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.store) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

fn shown<S: AsRef<OsStr>>(args: &[S]) -> Vec<&OsStr> {
    args.iter().map(AsRef::as_ref).collect()
}

/// Runs a bash script with `-eu` and requires success; a failure shows the script's stderr.
pub fn sh(script: &str) {
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh failed ({:?}): {script}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small tmpfs mounted over a directory, for full-disk cases; unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount takes it: "2m") on `path`, creating the directory.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={size} rmach-test-full '{}'",
            path.display()
        ));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Whether a program is on PATH; tests that need it install it through scripts/test, so a
/// missing one is a failure, not a skip.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "{program} is required (scripts/test installs it)");
}
