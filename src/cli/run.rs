//! run and boot.

use std::path::PathBuf;

use super::{Context, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    Host,
    Private,
    Veth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Console {
    Interactive,
    Pipe,
    Passive,
}

/// Options shared by run and boot.
#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// The user to run as
    #[arg(short, long)]
    pub user: Option<String>,
    /// The working directory inside
    #[arg(long)]
    pub chdir: Option<PathBuf>,
    /// An environment variable K=V
    #[arg(short = 'E', long)]
    pub setenv: Vec<String>,
    /// Bind SRC to DST (default: the same path) read-write
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Bind SRC to DST (default: the same path) read-only
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind_ro: Vec<String>,
    /// Mount a tmpfs at PATH
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<PathBuf>,
    /// Run on a throw-away copy; changes vanish at exit
    #[arg(short = 'x', long)]
    pub ephemeral: bool,
    /// Mount the root read-only
    #[arg(long)]
    pub read_only: bool,
    /// The hostname inside (default: the image name)
    #[arg(long)]
    pub hostname: Option<String>,
    /// host, private (loopback only) or veth
    #[arg(long, value_enum, default_value = "host")]
    pub network: Network,
    /// no, pick, identity or UID[:COUNT]
    #[arg(long, default_value = "no")]
    pub private_users: String,
    /// Memory limit (bytes, or with K, M, G suffix)
    #[arg(long)]
    pub memory_max: Option<String>,
    /// CPU limit in cores (may be fractional)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Process count limit
    #[arg(long)]
    pub pids_max: Option<u64>,
    /// A capability to keep beyond the default set
    #[arg(long)]
    pub capability: Vec<String>,
    /// A capability to drop from the default set
    #[arg(long)]
    pub drop_capability: Vec<String>,
    /// Set no_new_privs for the payload
    #[arg(long)]
    pub no_new_privileges: bool,
    /// interactive, pipe or passive (default: interactive on a terminal, else pipe)
    #[arg(long, value_enum)]
    pub console: Option<Console>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The image
    pub name: String,
    #[command(flatten)]
    pub options: RunOptions,
    /// The command and its arguments (default: a login shell)
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct BootArgs {
    /// The image
    pub name: String,
    #[command(flatten)]
    pub options: RunOptions,
    /// Arguments for init
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(_ctx: &Context, _args: RunArgs) -> anyhow::Result<Status> {
    anyhow::bail!("run is not implemented yet")
}

pub fn boot(_ctx: &Context, _args: BootArgs) -> anyhow::Result<Status> {
    anyhow::bail!("boot is not implemented yet")
}
