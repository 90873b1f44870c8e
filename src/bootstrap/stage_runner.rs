//! Running one shell script inside the image through the runner (the same namespaces, /proc,
//! /sys and private /dev that `rmach run` gives), its output captured for the error message.
//! debootstrap runs maintainer scripts on the image's own /run and /tmp (base-files' postinst
//! makes /run/lock there), while the runner mounts tmpfs on both. So two directories of the
//! bootstrap's scratch area in the image are bound over them, and [`keep_run_and_tmp`] moves
//! what they collected into the image's /run and /tmp afterwards: the tree comes out the same.

use std::path::Path;

use crate::runner::{self, Bind, Console, RunSpec, RunnerError};

use super::paths::{self, STAND_INS};
use super::Options;

/// Creates the stand-ins for /run and /tmp with the image's modes.
pub(crate) fn prepare_run_and_tmp(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in ["run", "tmp"] {
        let stand_in = paths::rel(root, STAND_INS).join(dir);
        std::fs::create_dir_all(&stand_in)?;
        let mode = std::fs::metadata(root.join(dir))
            .map(|m| m.permissions().mode())
            .unwrap_or(0o755);
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(mode))?;
        std::fs::write(stand_in.join(MARK), "")?;
    }
    Ok(())
}

/// A file in each stand-in: seen in /run inside, it says the bind is in effect.
const MARK: &str = ".rmach-stand-in";

/// Moves what the second stage left in /run and /tmp into the image's own directories.
pub(crate) fn keep_run_and_tmp(root: &Path) -> std::io::Result<()> {
    for dir in ["run", "tmp"] {
        let stand_in = paths::rel(root, STAND_INS).join(dir);
        for entry in std::fs::read_dir(&stand_in)? {
            let entry = entry?;
            if entry.file_name() == MARK {
                continue;
            }
            let dst = root.join(dir).join(entry.file_name());
            if std::fs::symlink_metadata(&dst).is_err() {
                std::fs::rename(entry.path(), dst)?;
            }
        }
    }
    std::fs::remove_dir_all(paths::rel(root, STAND_INS))
}

/// How a script ended.
pub(crate) enum Outcome {
    Succeeded,
    /// It failed: how (exit status or signal) and the last line of its error output.
    Failed(String),
    /// It was stopped by SIGINT (Ctrl-C passed on by the runner).
    Interrupted,
}

/// Runs `script` with /bin/sh inside the image at `root` (host name and cache directory from
/// `opts`), with `env` added; Err when the runner could not run it at all.
pub(crate) fn run_script(
    root: &Path,
    opts: &Options,
    env: &[(String, String)],
    script: &str,
) -> Result<Outcome, RunnerError> {
    // Where the runner mounts its own tmpfs over /run and /tmp after the binds, the stand-ins'
    // contents are copied in before the script and back after it.
    let script = format!(
        "if [ ! -e /run/{MARK} ]; then\n\
         for d in run tmp; do cp -a {STAND_INS}/$d/. /$d/; rm -f /$d/{MARK}; done\n\
         trap 'for d in run tmp; do find {STAND_INS}/$d -mindepth 1 ! -name {MARK} -delete; \
         for f in /$d/* /$d/.[!.]* /$d/..?*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; \
         cp -a \"$f\" {STAND_INS}/$d/; done; done' EXIT\n\
         fi\n{script}"
    );
    let mut spec = RunSpec::new(root, vec!["/bin/sh".into(), "-c".into(), script]);
    // A name of its own for every script: the cgroup of the one before may still be going.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    spec.name = format!("rmach-bootstrap-{}-{run}", std::process::id());
    spec.hostname = Some(opts.hostname.clone());
    // The runner's seccomp filter, compiled once and read back by the bootstrap's dozens of
    // steps (and by `rmach run`, which keeps it in the same place).
    spec.seccomp_cache = Some(opts.cache_dir.join("runner"));
    spec.console = Console::Capture;
    spec.env.extend(env.iter().cloned());
    for dir in ["run", "tmp"] {
        spec.binds.push(Bind {
            source: paths::rel(root, STAND_INS).join(dir),
            target: format!("/{dir}").into(),
            read_only: false,
        });
    }
    // When the runner cannot set the machine up (its cgroup vanished under a concurrent
    // cleanup, say) the script has not started: trying once more is safe.
    let out = match runner::output(&spec) {
        Ok(out) => out,
        Err(_) => {
            spec.name = format!("{}-again", spec.name);
            runner::output(&spec)?
        }
    };
    use std::os::unix::process::ExitStatusExt;
    if out.status.success() {
        return Ok(Outcome::Succeeded);
    }
    if out.status.signal() == Some(2) {
        return Ok(Outcome::Interrupted);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let status = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(15)) => "terminated (SIGTERM)".to_string(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "failed".to_string(),
    };
    Ok(Outcome::Failed(if last.is_empty() {
        status
    } else {
        format!("{status}: {last}")
    }))
}
