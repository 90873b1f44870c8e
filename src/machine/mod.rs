//! Machines that keep running: the supervisor that boots an image in the background and
//! keeps a record of it in the state directory ([`record`]), stopping and signalling it
//! ([`control`]), entering it ([`shell`]), its cgroup seen from the host (usage, live limits,
//! freezing for live backups: [`cgroup`], [`live`]), host paths mounted into it ([`bind`]),
//! the per-machine settings file
//! ([`settings`]), the systemd unit ([`unit`]) and files in and out of it ([`files`]).
//! It uses the runner to boot and the store for locks and paths; it does not parse the
//! command line or print.

pub(crate) mod bind;
pub(crate) mod cgroup;
pub(crate) mod control;
pub(crate) mod files;
pub(crate) mod live;
pub(crate) mod record;
mod relay;
pub(crate) mod settings;
pub(crate) mod shell;
pub(crate) mod supervisor;
pub(crate) mod unit;
mod user;

use std::path::PathBuf;

pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MachineError {
    #[error("{name} is not running; start it with `rmach start {name}`")]
    NotRunning { name: String },
    #[error(
        "{name} is already running (supervisor PID {pid}); stop it first with `rmach stop {name}`"
    )]
    AlreadyRunning { name: String, pid: u32 },
    #[error("{name} did not start: {reason}{tail}")]
    StartFailed {
        name: String,
        reason: String,
        tail: String,
    },
    #[error("{name} did not stop within {seconds} s")]
    StopTimeout { name: String, seconds: u64 },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter {name}: {what}")]
    Enter {
        name: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no user {user} in {name}'s /etc/passwd")]
    NoUser { name: String, user: String },
    #[error("settings file {path} is not valid")]
    Settings {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path} is outside the machine's root or not there")]
    Outside { path: PathBuf },
    #[error("{what}")]
    Command {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Runner(#[from] crate::runner::RunnerError),
}

pub(crate) type Result<T> = std::result::Result<T, MachineError>;

pub(crate) trait IoAt<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> IoAt<T> for std::result::Result<T, E> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| MachineError::Io {
            path: path.into(),
            source: e.into(),
        })
    }
}
