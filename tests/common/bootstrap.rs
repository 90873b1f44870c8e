//! What the bootstrap tests share: rmach against a test [`Env`] without the caller's mirror or
//! epoch, the shared download cache of the tests that use a real mirror, the check that a
//! refusal left no image, Ctrl-C sent to a running bootstrap, and an image's package states.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use super::Env;

/// Downloads of the tests against a real mirror, shared so that a second run downloads nothing.
pub const SHARED_CACHE: &str = "/var/cache/rmach-test";

/// An environment whose downloads go to [`SHARED_CACHE`].
pub fn shared_cache_env() -> Env {
    let mut env = Env::new();
    env.cache = SHARED_CACHE.into();
    env
}

/// rmach against `env`, with neither RMACH_MIRROR nor SOURCE_DATE_EPOCH from the caller.
pub fn command(env: &Env) -> Command {
    let mut cmd = env.command();
    cmd.env_remove("RMACH_MIRROR")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

pub fn run(env: &Env, args: &[&str]) -> Output {
    command(env).args(args).output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No image, not even a hidden leftover, in the store (the failed log may stay in the state
/// directory, where the error names it).
pub fn assert_store_empty(env: &Env, when: &str) {
    let left: Vec<_> = std::fs::read_dir(&env.store)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "store not empty {when}: {left:?}");
}

/// A command that must fail: exit 1, one line naming `expect`, and no image left.
pub fn must_fail(env: &Env, args: &[&str], expect: &str) {
    let out = run(env, args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "expected {expect:?} in {err}");
    assert_store_empty(env, "after failure");
}

/// Sends SIGINT to `child` (spawned with a piped stderr), waits for it, and returns how it
/// ended, what it said and how long it took to end.
pub fn interrupt(mut child: Child) -> (ExitStatus, String, Duration) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let sent = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err, took)
}

/// Waits up to `limit` for `ready`, failing the test when it does not come.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Package` → `Status` from the image's dpkg status file.
pub fn package_states(root: &Path) -> BTreeMap<String, String> {
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
