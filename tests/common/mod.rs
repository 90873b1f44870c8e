//! Helpers shared by the tests that drive the rmach binary: a throw-away store, a way to run
//! the binary against it, and tree fixtures and comparisons.
#![allow(dead_code)]

pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary store, state directory and cache directory, and the binary pointed at them.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub state: PathBuf,
    pub cache: PathBuf,
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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command for the binary with this environment's store; the caller adds arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmach"));
        cmd.env("RMACH_STORE", &self.store)
            .env("RMACH_STATE_DIR", &self.state)
            .env("RMACH_CACHE_DIR", &self.cache)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rmach {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "rmach {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr
    }

    pub fn library_store(&self) -> rmach::store::Store {
        rmach::store::Store::open(&self.store, &self.state).unwrap()
    }

    /// Names of the entries in the store directory, hidden ones included.
    pub fn store_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.store)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Runs a shell command and requires success.
pub fn sh(script: &str) {
    let status = Command::new("sh").arg("-ec").arg(script).status().unwrap();
    assert!(status.success(), "sh failed: {script}");
}

/// Whether a program is on PATH; tests that need it install it through scripts/test, so a
/// missing one is a failure, not a skip.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "{program} is required (scripts/test installs it)");
}
