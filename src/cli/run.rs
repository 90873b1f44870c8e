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

/// systemd-nspawn's console modes (docs/console.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Console {
    /// A pty relayed both ways; the terminal in raw mode (Ctrl-C goes to the machine)
    Interactive,
    /// A pty whose output is relayed; input is not (Ctrl-C halts the machine)
    ReadOnly,
    /// A pty connected to nothing
    Passive,
    /// rmach's own stdin, stdout and stderr, no pty
    Pipe,
    /// interactive on a terminal, else pipe
    Autopipe,
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
    /// auto, no, pick, identity or UID[:COUNT] (auto: a private range where the file system
    /// has idmapped mounts, else no)
    #[arg(long, default_value = "auto")]
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
    /// Run even where the host has no cgroup device controller: the machine may then open
    /// any device node it can create
    #[arg(long)]
    pub unsafe_no_device_policy: bool,
    /// The console (default: interactive on a terminal; else read-only for boot, pipe for run)
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
    let purpose = if boot {
        crate::store::LockPurpose::Boot
    } else {
        crate::store::LockPurpose::Run
    };
    // A machine that cannot write to the image shares it, as nspawn --read-only does.
    let read_only = o.read_only || o.ephemeral || store.is_read_only(&name)?;
    let _lock = if read_only {
        store.lock_read_only(&name, purpose)?
    } else {
        store.lock(&name, purpose)?
    };
    // A raw image runs from its file systems, mounted in this process's own mount namespace.
    let mounted = super::raw::mount_for_run(ctx, &image, read_only)?;
    let mut spec = spec_from(
        mounted.as_ref().map_or(image.path(), |m| m.root()),
        name.as_str(),
        o,
        command,
        boot,
        store.is_read_only(&name)?,
    )?;
    // Per-run scratch directories (the ephemeral overlay's) go under the state directory.
    spec.scratch = ctx.global.state_dir.clone();
    let plan = runner::plan(&spec).map_err(|e| match e {
        runner::RunnerError::BadCapability { .. } => usage(e),
        e => e.into(),
    })?;
    if let Some(note) = &plan.private_users_note {
        ctx.out.verbose(&format!("--private-users auto: {note}"));
    }
    let announce = boot || spec.console == runner::Console::Interactive;
    if announce {
        ctx.out.info(&format!(
            "Spawning machine {name} on {}.",
            image.path().display()
        ));
        if spec.console == runner::Console::Interactive {
            ctx.out
                .info("Press ^] three times within 1s to kill the machine.");
        }
    }
    let status = runner::execute(&plan)?.status;
    if announce {
        ctx.out.info(&ended(&name, boot, status));
    }
    Ok(runner::exit_code(status))
}

/// The line saying how the machine ended.
fn ended(name: &ImageName, boot: bool, status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) if boot => format!("Machine {name} has been shut down."),
        (Some(0), _) => format!("Machine {name} exited successfully."),
        (Some(code), _) => format!("Machine {name} failed with status {code}."),
        (None, Some(libc::SIGKILL)) => format!("Machine {name} was killed (SIGKILL)."),
        (None, Some(sig)) => format!("Machine {name} was terminated by signal {sig}."),
        _ => format!("Machine {name} ended."),
    }
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
    if boot && o.user.is_some() {
        return Err(UsageError(
            "boot runs the image's init as root: --user applies to run only (log in, or use run -u)"
                .into(),
        )
        .into());
    }
    if let Some(h) = &o.hostname {
        ImageName::parse(h).map_err(|_| {
            UsageError(format!(
                "bad --hostname {h:?}: expected 1-64 ASCII letters, digits, '-' and '.', no empty label"
            ))
        })?;
    }
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
    spec.no_new_privileges = o.no_new_privileges;
    spec.device_policy = !o.unsafe_no_device_policy;
    spec.console = console_mode(o.console, boot);
    Ok(spec)
}

/// nspawn's defaults: interactive when stdin and stdout are terminals; otherwise read-only for
/// boot (the whole boot log reaches stdout) and pipe for run (so `echo x | rmach run dev -- cat`
/// works; nspawn needs `--pipe` for that).
fn console_mode(asked: Option<Console>, boot: bool) -> runner::Console {
    let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    choose_console(asked, boot, on_terminal)
}

fn choose_console(asked: Option<Console>, boot: bool, on_terminal: bool) -> runner::Console {
    match asked {
        Some(Console::Interactive) => runner::Console::Interactive,
        Some(Console::ReadOnly) => runner::Console::ReadOnly,
        Some(Console::Passive) => runner::Console::Passive,
        Some(Console::Pipe) => runner::Console::Pipe,
        Some(Console::Autopipe) | None if on_terminal => runner::Console::Interactive,
        Some(Console::Autopipe) => runner::Console::Pipe,
        None if boot => runner::Console::ReadOnly,
        None => runner::Console::Pipe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_defaults_are_nspawns() {
        use runner::Console as C;
        assert_eq!(choose_console(None, true, true), C::Interactive);
        assert_eq!(choose_console(None, true, false), C::ReadOnly);
        assert_eq!(choose_console(None, false, true), C::Interactive);
        assert_eq!(choose_console(None, false, false), C::Pipe);
        assert_eq!(
            choose_console(Some(Console::Autopipe), true, true),
            C::Interactive
        );
        assert_eq!(
            choose_console(Some(Console::Autopipe), true, false),
            C::Pipe
        );
        assert_eq!(
            choose_console(Some(Console::ReadOnly), false, true),
            C::ReadOnly
        );
        assert_eq!(
            choose_console(Some(Console::Passive), true, true),
            C::Passive
        );
    }
}
