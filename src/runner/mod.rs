//! Running a command in, or booting, a root directory in Linux namespaces, like
//! systemd-nspawn. A [`RunSpec`] becomes a plain-data [`Plan`] (namespaces, an ordered mount
//! table, cgroup limits, capabilities, seccomp, environment) which [`exec`] alone carries out.
//! It owns the console relay and the machine's cgroup. It does not know the store: callers
//! pass a root path (the CLI resolves image names; the bootstrap passes its target directory).
//!
//! ```no_run
//! use rmach::runner::{self, Console, RunSpec};
//! let mut spec = RunSpec::new("/srv/target", vec!["dpkg".into(), "--configure".into(), "-a".into()]);
//! spec.env.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
//! spec.console = Console::Capture;
//! let out = runner::output(&spec)?;          // std::process::Output: status, stdout, stderr
//! let status = runner::run(&spec)?;          // or only the status (pipes pass through)
//! # Ok::<(), runner::RunnerError>(())
//! ```

mod caps;
mod cgroup;
pub(crate) mod channel;
pub(crate) mod console;
mod devices;
mod exec;
mod helper;
pub(crate) mod init;
mod machine;
mod mounts;
pub(crate) mod passwd;
pub mod plan;
mod rootfs;
pub mod seccomp;
mod spec;
mod syscalls;
mod userns;

use std::path::PathBuf;
use std::process::{ExitStatus, Output};

pub use plan::{plan, Plan};
pub use seccomp::SeccompProgram;
pub use spec::{
    parse_private_users, parse_size, Bind, Console, Limits, Network, PrivateUsers, RunSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot use {path} as a machine's root")]
    NoRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{command}: no such command in the machine at {root}; give a path inside the image")]
    CommandNotFound { command: String, root: PathBuf },
    #[error("setting up the machine failed")]
    Setup(#[source] channel::SetupError),
    #[error("cgroup {path} (rmach needs root and a writable /sys/fs/cgroup)")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the {name} cgroup controller is not mounted on this host; drop the limit that needs it"
    )]
    NoController { name: String },
    #[error("this host has no cgroup device controller, so a machine could open any device node; pass --unsafe-no-device-policy to run without one")]
    NoDeviceController,
    #[error("user namespace map {path}")]
    UserNamespace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("idmapped mount of {path} (the file system must support idmapped mounts: ext4, btrfs, xfs, tmpfs)")]
    Idmap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no free 65536-id range for --private-users=pick; stop a machine or give UID:COUNT")]
    NoFreeIds,
    #[error("network interface {name}")]
    Network {
        name: String,
        source: std::io::Error,
    },
    #[error("scratch directory {path}")]
    Scratch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the seccomp filter failed: {what}")]
    Seccomp {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("unknown capability {name:?}; use names like CAP_NET_ADMIN or net_admin")]
    BadCapability { name: String },
    #[error("bad bind {arg:?}: expected SRC[:DST] with absolute paths")]
    BadBind { arg: String },
    #[error("bad size {value:?}: expected bytes or a number with K, M, G or T")]
    BadSize { value: String },
    #[error(
        "bad --private-users value {value:?}: expected auto, no, pick, identity, UID or UID:COUNT"
    )]
    BadPrivateUsers { value: String },
}

/// Runs the spec with its console setting and returns the payload's exit status. When booting,
/// a reboot inside starts the machine again; a poweroff ends with status 0.
pub fn run(spec: &RunSpec) -> Result<ExitStatus, RunnerError> {
    Ok(output(spec)?.status)
}

/// Like [`run`], also returning what the payload wrote when `spec.console` is
/// [`Console::Capture`] (empty otherwise).
pub fn output(spec: &RunSpec) -> Result<Output, RunnerError> {
    execute(&plan::plan(spec)?)
}

/// Carries out a plan made by [`plan()`]: what [`output`] does after planning, for callers
/// that inspect or report the plan first (the CLI says what `--private-users auto` chose).
pub(crate) fn execute(plan: &Plan) -> Result<Output, RunnerError> {
    loop {
        let ended = exec::execute_once(plan)?;
        if !ended.reboot {
            return Ok(Output {
                status: ended.status,
                stdout: ended.stdout,
                stderr: ended.stderr,
            });
        }
    }
}

/// The status a shell would report: the exit code, or 128 + N for signal N.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        _ => 1,
    }
}
