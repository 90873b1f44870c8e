//! run and boot.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::output::UsageError;
use super::{Context, Status};
use crate::machine::Settings;
use crate::runner::{self, Bind, RunSpec};
use crate::store::ImageName;

/// systemd-nspawn's console modes (docs/console.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Console {
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

/// The run options a settings file can record, in one declaration for every verb that takes
/// them: `run` and `boot` ([`RunOptions`]), `start` and `set` (`machine::MachineOptions`, which
/// words a few of them for a started machine). Each becomes one field of [`Settings`].
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct PersistentOptions {
    /// An environment variable K=V
    #[arg(short = 'E', long)]
    pub(crate) setenv: Vec<String>,
    /// Bind SRC to DST (default: the same path) read-write
    #[arg(long, value_name = "SRC[:DST]")]
    pub(crate) bind: Vec<String>,
    /// Bind SRC to DST (default: the same path) read-only
    #[arg(long, value_name = "SRC[:DST]")]
    pub(crate) bind_ro: Vec<String>,
    /// Mount a tmpfs at PATH
    #[arg(long, value_name = "PATH")]
    pub(crate) tmpfs: Vec<PathBuf>,
    /// Run on a throw-away copy; changes vanish at exit
    #[arg(short = 'x', long)]
    pub(crate) ephemeral: bool,
    /// Mount the root read-only
    #[arg(long)]
    pub(crate) read_only: bool,
    /// The hostname inside (default: the image name)
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// host, private (loopback only) or veth
    #[arg(long, value_parser = ["host", "private", "veth"])]
    pub(crate) network: Option<String>,
    /// auto, no, pick, identity or UID[:COUNT] (auto: a private range where the file system
    /// has idmapped mounts, else no)
    #[arg(long)]
    pub(crate) private_users: Option<String>,
    /// Memory limit (bytes, or with K, M, G suffix)
    #[arg(long)]
    pub(crate) memory_max: Option<String>,
    /// CPU limit in cores (may be fractional)
    #[arg(long)]
    pub(crate) cpus: Option<f64>,
    /// Process count limit
    #[arg(long)]
    pub(crate) pids_max: Option<u64>,
    /// A capability to keep beyond the default set
    #[arg(long)]
    pub(crate) capability: Vec<String>,
    /// A capability to drop from the default set
    #[arg(long)]
    pub(crate) drop_capability: Vec<String>,
    /// Set no_new_privs for the payload
    #[arg(long)]
    pub(crate) no_new_privileges: bool,
    /// Run even where the host has no cgroup device controller: the machine may then open
    /// any device node it can create
    #[arg(long)]
    pub(crate) unsafe_no_device_policy: bool,
}

impl From<PersistentOptions> for Settings {
    fn from(o: PersistentOptions) -> Settings {
        Settings {
            setenv: o.setenv,
            bind: o.bind,
            bind_ro: o.bind_ro,
            tmpfs: o.tmpfs,
            ephemeral: o.ephemeral.then_some(true),
            read_only: o.read_only.then_some(true),
            hostname: o.hostname,
            network: o.network,
            private_users: o.private_users,
            memory_max: o.memory_max,
            cpus: o.cpus,
            pids_max: o.pids_max,
            capability: o.capability,
            drop_capability: o.drop_capability,
            no_new_privileges: o.no_new_privileges.then_some(true),
            unsafe_no_device_policy: o.unsafe_no_device_policy.then_some(true),
        }
    }
}

/// Options shared by run and boot.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("network", |a| a.default_value("host")),
    mut_arg("private_users", |a| a.default_value("auto"))
)]
pub(crate) struct RunOptions {
    /// The user to run as
    #[arg(short, long)]
    pub(crate) user: Option<String>,
    /// The working directory inside
    #[arg(long)]
    pub(crate) chdir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) persistent: PersistentOptions,
    /// The console (default: interactive on a terminal; else read-only for boot, pipe for run)
    #[arg(long, value_enum)]
    pub(crate) console: Option<Console>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The image
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) options: RunOptions,
    /// The command and its arguments (default: a login shell)
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BootArgs {
    /// The image
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) options: RunOptions,
    /// Arguments for init
    #[arg(last = true)]
    pub(crate) args: Vec<String>,
}

pub(crate) fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<Status> {
    execute(ctx, &args.name, args.options, args.command, false)
}

pub(crate) fn boot(ctx: &Context, args: BootArgs) -> anyhow::Result<Status> {
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
    let read_only =
        o.persistent.read_only || o.persistent.ephemeral || store.is_read_only(&name)?;
    let _lock = if read_only {
        store.lock_read_only(&name, purpose)?
    } else {
        store.lock(&name, purpose)?
    };
    let mut settings = Settings::from(o.persistent);
    let mut payload = Payload {
        user: o.user,
        chdir: o.chdir,
        command,
        boot,
        console: o.console,
    };
    if !boot {
        // An image pulled from an OCI registry runs what its config says (see docs/oci.md).
        super::oci::apply_run_settings(
            &store,
            &name,
            &mut payload.command,
            &mut payload.user,
            &mut payload.chdir,
            &mut settings.setenv,
        );
    }
    // A raw image runs from its file systems, mounted in this process's own mount namespace.
    let mounted = super::raw::mount_for_run(ctx, &image, read_only)?;
    let mut spec = spec_from(
        mounted.as_ref().map_or(image.path(), |m| m.root()),
        name.as_str(),
        settings,
        payload,
        store.is_read_only(&name)?,
    )?;
    // Per-run scratch directories (the ephemeral overlay's) go under the state directory.
    spec.scratch = ctx.global.state_dir.clone();
    spec.seccomp_cache = Some(ctx.global.cache_dir.join("runner"));
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

/// What a machine runs, beyond its persistent options: `run`'s and `boot`'s own options.
#[derive(Debug, Default)]
pub(super) struct Payload {
    pub(super) user: Option<String>,
    pub(super) chdir: Option<PathBuf>,
    /// The command (`run`) or init's arguments (`boot`).
    pub(super) command: Vec<String>,
    pub(super) boot: bool,
    pub(super) console: Option<Console>,
}

/// Turns the options into a run specification, the one place for every verb that runs a
/// machine (run, boot, start, set, the unit); a network or user range not given is `host` and
/// `auto`. Bad values are usage errors (exit 2).
pub(super) fn spec_from(
    root: &Path,
    name: &str,
    s: Settings,
    p: Payload,
    image_read_only: bool,
) -> anyhow::Result<RunSpec> {
    let mut spec = RunSpec::new(root, p.command);
    spec.name = name.into();
    spec.boot = p.boot;
    if p.boot && p.user.is_some() {
        return Err(UsageError(
            "boot runs the image's init as root: --user applies to run only (log in, or use run -u)"
                .into(),
        )
        .into());
    }
    if let Some(h) = &s.hostname {
        ImageName::parse(h).map_err(|_| {
            UsageError(format!(
                "bad --hostname {h:?}: expected 1-64 ASCII letters, digits, '-' and '.', no empty label"
            ))
        })?;
    }
    spec.user = p.user;
    spec.chdir = p.chdir;
    for kv in s.setenv {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| UsageError(format!("bad --setenv {kv:?}: expected K=V")))?;
        spec.env.push((k.into(), v.into()));
    }
    for b in &s.bind {
        spec.binds.push(Bind::parse(b, false).map_err(usage)?);
    }
    for b in &s.bind_ro {
        spec.binds.push(Bind::parse(b, true).map_err(usage)?);
    }
    if let Some(t) = s.tmpfs.iter().find(|t| !t.is_absolute()) {
        return Err(UsageError(format!(
            "bad --tmpfs {}: expected an absolute path",
            t.display()
        ))
        .into());
    }
    spec.tmpfs = s.tmpfs;
    spec.ephemeral = s.ephemeral.unwrap_or(false);
    // A read-only image runs read-only unless its changes go to a throw-away layer.
    spec.read_only = s.read_only.unwrap_or(false) || (image_read_only && !spec.ephemeral);
    spec.hostname = s.hostname;
    spec.network = match s.network.as_deref().unwrap_or("host") {
        "host" => runner::Network::Host,
        "private" => runner::Network::Private,
        "veth" => runner::Network::Veth,
        other => {
            return Err(UsageError(format!(
                "bad network {other:?}: expected host, private or veth"
            ))
            .into())
        }
    };
    spec.private_users =
        runner::parse_private_users(s.private_users.as_deref().unwrap_or("auto")).map_err(usage)?;
    spec.limits = runner::Limits {
        memory_max: s
            .memory_max
            .as_deref()
            .map(runner::parse_size)
            .transpose()
            .map_err(usage)?,
        cpus: match s.cpus {
            Some(c) if !(c > 0.0 && c.is_finite()) => {
                return Err(
                    UsageError(format!("bad --cpus {c}: expected a positive number")).into(),
                )
            }
            c => c,
        },
        pids_max: s.pids_max,
    };
    spec.add_caps = s.capability;
    spec.drop_caps = s.drop_capability;
    spec.no_new_privileges = s.no_new_privileges.unwrap_or(false);
    spec.device_policy = !s.unsafe_no_device_policy.unwrap_or(false);
    spec.console = console_mode(p.console, p.boot);
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
