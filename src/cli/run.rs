//! run and boot.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::output::UsageError;
use super::{Context, Status};
use crate::runner::{self, Bind, RunSpec};
use crate::store::ImageName;

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

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<Status> {
    execute(ctx, &args.name, args.options, args.command, false)
}

pub fn boot(ctx: &Context, args: BootArgs) -> anyhow::Result<Status> {
    execute(ctx, &args.name, args.options, args.args, true)
}

fn execute(
    ctx: &Context,
    name: &str,
    o: RunOptions,
    command: Vec<String>,
    boot: bool,
) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let name = ImageName::parse(name)?;
    let image = store.image(&name)?;
    if !image.kind().is_tree() {
        anyhow::bail!("{name} is a raw image; running raw images is not supported yet");
    }
    let _lock = store.lock(&name, if boot { "booted" } else { "run" })?;
    let (mut o, mut command) = (o, command);
    if !boot {
        // An image pulled from an OCI registry runs what its config says (see docs/oci.md).
        super::oci::apply_run_settings(
            &store,
            &name,
            &mut command,
            &mut o.user,
            &mut o.chdir,
            &mut o.setenv,
        );
    }
    let spec = spec_from(
        image.path(),
        name.as_str(),
        o,
        command,
        boot,
        store.is_read_only(&name)?,
    )?;
    let status = runner::run(&spec)?;
    Ok(runner::exit_code(status))
}

fn usage(e: runner::RunnerError) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// Turns the options into a run specification; bad values are usage errors (exit 2).
fn spec_from(
    root: &Path,
    name: &str,
    o: RunOptions,
    command: Vec<String>,
    boot: bool,
    image_read_only: bool,
) -> anyhow::Result<RunSpec> {
    let mut spec = RunSpec::new(root, command);
    spec.name = name.into();
    spec.boot = boot;
    spec.user = o.user;
    spec.chdir = o.chdir;
    for kv in o.setenv {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| UsageError(format!("bad --setenv {kv:?}: expected K=V")))?;
        spec.env.push((k.into(), v.into()));
    }
    for b in &o.bind {
        spec.binds.push(Bind::parse(b, false).map_err(usage)?);
    }
    for b in &o.bind_ro {
        spec.binds.push(Bind::parse(b, true).map_err(usage)?);
    }
    if let Some(t) = o.tmpfs.iter().find(|t| !t.is_absolute()) {
        return Err(UsageError(format!(
            "bad --tmpfs {}: expected an absolute path",
            t.display()
        ))
        .into());
    }
    spec.tmpfs = o.tmpfs;
    spec.ephemeral = o.ephemeral;
    // A read-only image runs read-only unless its changes go to a throw-away layer.
    spec.read_only = o.read_only || (image_read_only && !o.ephemeral);
    spec.hostname = o.hostname;
    spec.network = match o.network {
        Network::Host => runner::Network::Host,
        Network::Private => runner::Network::Private,
        Network::Veth => runner::Network::Veth,
    };
    spec.private_users = runner::parse_private_users(&o.private_users).map_err(usage)?;
    spec.limits = runner::Limits {
        memory_max: o
            .memory_max
            .as_deref()
            .map(runner::parse_size)
            .transpose()
            .map_err(usage)?,
        cpus: match o.cpus {
            Some(c) if !(c > 0.0 && c.is_finite()) => {
                return Err(
                    UsageError(format!("bad --cpus {c}: expected a positive number")).into(),
                )
            }
            c => c,
        },
        pids_max: o.pids_max,
    };
    spec.add_caps = o.capability;
    spec.drop_caps = o.drop_capability;
    runner::plan(&spec).map_err(usage)?;
    spec.no_new_privileges = o.no_new_privileges;
    spec.console = match o.console {
        Some(Console::Interactive) => runner::Console::Interactive,
        Some(Console::Pipe) => runner::Console::Pipe,
        Some(Console::Passive) => runner::Console::Passive,
        None if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() => {
            runner::Console::Interactive
        }
        None => runner::Console::Pipe,
    };
    Ok(spec)
}
