//! Machines that keep running: start (and the hidden supervisor it re-executes), stop, kill,
//! reboot, status, shell, set, enable, disable, copy-to, copy-from.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::output::UsageError;
use super::run::{self, PersistentOptions};
use super::{Context, Status};
use crate::machine::{self, control, record, shell, supervisor, Settings};
use crate::store::{ImageName, ImageState, LockPurpose};

/// Run options that persist (`start`, `set`, the unit): the run options a settings file
/// records, worded for a started machine; any not given comes from the machine's settings
/// file, then from the defaults for started machines.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    mut_arg("setenv", |a| a.help("An environment variable K=V for init")),
    mut_arg("ephemeral", |a| a.help("Run on a throw-away copy; changes vanish when it stops")),
    mut_arg("network", |a| a.help("host, private or veth (default for started machines: veth)")),
    mut_arg("private_users", |a| {
        a.help("auto, no, pick, identity or UID[:COUNT] (default: auto)")
    }),
    mut_arg("no_new_privileges", |a| a.help("Set no_new_privs for init")),
    mut_arg("unsafe_no_device_policy", |a| {
        a.help("Run even where no cgroup device policy can be set (inside another machine)")
    })
)]
pub(crate) struct MachineOptions {
    #[command(flatten)]
    pub(crate) persistent: PersistentOptions,
}

impl From<MachineOptions> for Settings {
    fn from(o: MachineOptions) -> Settings {
        o.persistent.into()
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// The image
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) options: MachineOptions,
    /// Seconds to wait for the machine to be up
    #[arg(long, default_value_t = 120)]
    pub(crate) timeout: u64,
    /// Supervise in this process instead of in the background (for rmach@.service)
    #[arg(long)]
    pub(crate) foreground: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SuperviseArgs {
    pub(crate) name: String,
    /// The merged settings, as JSON
    #[arg(long)]
    pub(crate) settings_json: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StopArgs {
    /// The machine
    pub(crate) name: String,
    /// Seconds to wait for a clean halt before killing it
    #[arg(long, default_value_t = 60)]
    pub(crate) timeout: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct KillArgs {
    /// The machine
    pub(crate) name: String,
    /// The signal for its init: a name (TERM, SIGKILL, RTMIN+4) or a number
    #[arg(short, long, default_value = "SIGTERM")]
    pub(crate) signal: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct NameArgs {
    /// The machine
    pub(crate) name: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The machine
    pub(crate) name: String,
    /// Print one JSON document
    #[arg(long)]
    pub(crate) json: bool,
    /// Console lines to show
    #[arg(short = 'n', long, default_value_t = 10)]
    pub(crate) lines: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShellArgs {
    /// [USER@]NAME: the machine, and the user to be (default root)
    pub(crate) target: String,
    /// An environment variable K=V for the session
    #[arg(short = 'E', long)]
    pub(crate) setenv: Vec<String>,
    /// The command and its arguments (default: the user's login shell)
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SetArgs {
    /// The machine
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) options: MachineOptions,
}

#[derive(Debug, clap::Args)]
pub(crate) struct UnitArgs {
    /// The machine
    pub(crate) name: String,
    /// Where systemd looks for units
    #[arg(long, env = "RMACH_UNIT_DIR", default_value = "/etc/systemd/system")]
    pub(crate) unit_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CopyArgs {
    /// The machine (running or not)
    pub(crate) name: String,
    /// What to copy
    pub(crate) source: PathBuf,
    /// Where to (default: the same path)
    pub(crate) destination: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BindArgs {
    /// The running machine
    pub(crate) name: String,
    /// The host path to mount
    pub(crate) source: PathBuf,
    /// Where in the machine (default: the same path)
    pub(crate) destination: Option<PathBuf>,
    /// Mount it read-only
    #[arg(long)]
    pub(crate) read_only: bool,
    /// Create the mount point if it is missing
    #[arg(long)]
    pub(crate) mkdir: bool,
}

/// `start`, and the supervisor it re-executes.
pub(crate) fn start(ctx: &Context, a: StartArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let name = ImageName::parse(&a.name)?;
    let image = store.image(&name)?;
    if !image.kind().is_tree() {
        anyhow::bail!("{name} is a raw image; running raw images is not supported yet");
    }
    refuse_running(ctx, &name)?;
    let settings = Settings::load(store.root(), name.as_str())?.merged(&a.options.into());
    // Bad option values are refused here, before anything runs.
    spec(ctx, &name, &settings)?;
    if a.foreground {
        return supervise(ctx, &name, settings, false);
    }
    let mut args: Vec<std::ffi::OsString> = vec![
        "--store".into(),
        ctx.global.store.clone().into(),
        "--state-dir".into(),
        ctx.global.state_dir.clone().into(),
        "--cache-dir".into(),
        ctx.global.cache_dir.clone().into(),
        "__supervise".into(),
        name.as_str().into(),
        "--settings-json".into(),
        serde_json::to_string(&settings)?.into(),
    ];
    if ctx.global.verbose {
        args.insert(0, "-v".into());
    }
    let exe = std::env::current_exe().context("cannot find the rmach binary")?;
    let state = &ctx.global.state_dir;
    let mut child = supervisor::spawn(&exe, &args, state, name.as_str())?;
    let rec = supervisor::wait_ready(
        state,
        name.as_str(),
        &mut child,
        Duration::from_secs(a.timeout),
    )?;
    ctx.out.info(&format!(
        "{name} is running (leader PID {}; console log {})",
        rec.leader.unwrap_or(0),
        record::console_log(state, name.as_str()).display()
    ));
    Ok(0)
}

pub(crate) fn supervise_hidden(ctx: &Context, a: SuperviseArgs) -> anyhow::Result<Status> {
    // A session of its own: the shell or test that ran `start` can end without taking it along.
    let _ = rustix::process::setsid();
    let name = ImageName::parse(&a.name)?;
    let settings: Settings = serde_json::from_str(&a.settings_json)?;
    supervise(ctx, &name, settings, true)
}

fn supervise(
    ctx: &Context,
    name: &ImageName,
    settings: Settings,
    own_log: bool,
) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let _lock = store.lock(name, LockPurpose::Boot)?;
    if own_log {
        supervisor::reset_log(&ctx.global.state_dir, name.as_str());
    }
    let spec = spec(ctx, name, &settings)?;
    let status = supervisor::supervise(spec, &ctx.global.state_dir, settings)?;
    Ok(crate::runner::exit_code(status))
}

/// The run specification a started machine boots with: a private network and user range
/// unless its settings say otherwise, and its console (a pty relayed into the log: systemd
/// gets a /dev/console and a getty).
fn spec(ctx: &Context, name: &ImageName, s: &Settings) -> anyhow::Result<crate::runner::RunSpec> {
    let store = ctx.store()?;
    let image = store.image(name)?;
    let mut s = s.clone();
    s.network.get_or_insert_with(|| "veth".into());
    s.private_users.get_or_insert_with(|| "auto".into());
    let payload = run::Payload {
        boot: true,
        console: Some(run::Console::Interactive),
        ..Default::default()
    };
    let read_only = store.is_read_only(name)?;
    run::spec_from(image.path(), name.as_str(), s, payload, read_only)
}

/// Refuses to start a machine that runs already, naming its supervisor.
fn refuse_running(ctx: &Context, name: &ImageName) -> anyhow::Result<()> {
    if let Some(rec) = record::load(&ctx.global.state_dir, name.as_str()) {
        return Err(machine::MachineError::AlreadyRunning {
            name: name.to_string(),
            pid: rec.supervisor,
        }
        .into());
    }
    let store = ctx.store()?;
    let info = store.info(&store.image(name)?, false)?;
    if let Some(holder) = info.lock {
        if info.state == ImageState::Running {
            anyhow::bail!("{name} is already {holder}; stop that first");
        }
        anyhow::bail!("{name} is {holder}; try again when that is done");
    }
    Ok(())
}

pub(crate) fn stop(ctx: &Context, a: StopArgs) -> anyhow::Result<Status> {
    let rec = control::running(&ctx.global.state_dir, &a.name)?;
    let clean = control::stop(&rec, Duration::from_secs(a.timeout))?;
    if !clean {
        ctx.out.warn(&format!(
            "{} did not halt within {} s and was killed",
            a.name, a.timeout
        ));
    }
    Ok(0)
}

pub(crate) fn kill(ctx: &Context, a: KillArgs) -> anyhow::Result<Status> {
    let sig = control::parse_signal(&a.signal).ok_or_else(|| {
        UsageError(format!(
            "bad --signal {:?}: expected a name like TERM or a number",
            a.signal
        ))
    })?;
    let rec = control::running(&ctx.global.state_dir, &a.name)?;
    control::signal_leader(&rec, sig)?;
    Ok(0)
}

pub(crate) fn reboot(ctx: &Context, a: NameArgs) -> anyhow::Result<Status> {
    let rec = control::running(&ctx.global.state_dir, &a.name)?;
    // SIGINT is ctrl-alt-del for systemd (reboot.target) and sysvinit alike.
    control::signal_leader(&rec, libc::SIGINT)?;
    Ok(0)
}

#[derive(serde::Serialize)]
struct StatusDoc {
    name: String,
    state: &'static str,
    leader: Option<u32>,
    init: Option<String>,
    supervisor: u32,
    uptime_seconds: u64,
    addresses: Vec<String>,
    memory_bytes: Option<u64>,
    cpu_nanoseconds: Option<u64>,
    tasks: Option<u64>,
    network: String,
    veth: Option<String>,
    private_users: String,
    root: PathBuf,
    console_log: PathBuf,
    console_tail: Vec<String>,
}

pub(crate) fn status(ctx: &Context, a: StatusArgs) -> anyhow::Result<Status> {
    let state = &ctx.global.state_dir;
    let rec = control::running(state, &a.name)?;
    let cg = rec.machine_cgroup();
    let leader = rec.live_leader();
    let log = record::console_log(state, &rec.name);
    let doc = StatusDoc {
        name: rec.name.clone(),
        state: if rec.ready { "running" } else { "starting" },
        leader,
        init: leader
            .and_then(|l| std::fs::read_to_string(format!("/proc/{l}/comm")).ok())
            .map(|c| c.trim().to_string()),
        supervisor: rec.supervisor,
        uptime_seconds: rec.uptime(),
        addresses: leader.map(machine::files::addresses).unwrap_or_default(),
        memory_bytes: cg.memory_bytes(),
        cpu_nanoseconds: cg.cpu_nanos(),
        tasks: cg.tasks(),
        network: rec
            .settings
            .network
            .clone()
            .unwrap_or_else(|| "veth".into()),
        veth: rec.veth.clone(),
        private_users: rec
            .settings
            .private_users
            .clone()
            .unwrap_or_else(|| "auto".into()),
        root: rec.root.clone(),
        console_tail: supervisor::console_tail(&log, a.lines),
        console_log: log,
    };
    if a.json {
        ctx.out.json(&doc)?;
        return Ok(0);
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mb = doc
        .memory_bytes
        .map(|b| format!("{:.1}M", b as f64 / 1048576.0));
    let cpu = doc
        .cpu_nanoseconds
        .map(|n| format!("{:.2} s", n as f64 / 1e9));
    let addresses = match doc.addresses.is_empty() {
        true => "-".to_string(),
        false => doc.addresses.join(", "),
    };
    let veth = doc.veth.as_ref().map(|v| format!(" (host side {v})"));
    let mut lines = vec![
        format!("{}: {}", doc.name, doc.state),
        format!(
            "    Leader: {} ({})",
            opt(doc.leader.map(|l| l.to_string())),
            opt(doc.init.clone())
        ),
        format!(
            "    Uptime: {}",
            humantime::format_duration(Duration::from_secs(doc.uptime_seconds))
        ),
        format!("   Address: {addresses}"),
        format!("   Network: {}{}", doc.network, veth.unwrap_or_default()),
        format!("     Users: {}", doc.private_users),
        format!("    Memory: {}", opt(mb)),
        format!("       CPU: {}", opt(cpu)),
        format!("     Tasks: {}", opt(doc.tasks.map(|t| t.to_string()))),
        format!("      Root: {}", doc.root.display()),
        format!("   Console: {}", doc.console_log.display()),
    ];
    lines.extend(doc.console_tail.iter().map(|l| format!("        {l}")));
    let t = lines.join("\n") + "\n";
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), t.as_bytes());
    Ok(0)
}

pub(crate) fn shell(ctx: &Context, a: ShellArgs) -> anyhow::Result<Status> {
    let (user, name) = match a.target.split_once('@') {
        Some((u, n)) if !u.is_empty() => (Some(u.to_string()), n.to_string()),
        _ => (None, a.target.clone()),
    };
    ImageName::parse(&name)?;
    let rec = control::running(&ctx.global.state_dir, &name)?;
    let pty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut env = Vec::new();
    if pty {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into()),
        ));
    }
    for kv in a.setenv {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| UsageError(format!("bad --setenv {kv:?}: expected K=V")))?;
        env.push((k.into(), v.into()));
    }
    let session = shell::Session {
        user,
        command: a.command,
        shell_command: std::env::var("SSH_ORIGINAL_COMMAND").ok(),
        pty,
        env,
        seccomp_cache: Some(ctx.global.cache_dir.join("runner")),
    };
    Ok(shell::run(&rec, &session)?)
}

pub(crate) fn login(ctx: &Context, a: NameArgs) -> anyhow::Result<Status> {
    ImageName::parse(&a.name)?;
    let rec = control::running(&ctx.global.state_dir, &a.name)?;
    ctx.out.info(&format!(
        "Connected to {}. Press ^] three times within 1 s to exit session.",
        a.name
    ));
    shell::login(&rec)?;
    ctx.out
        .info(&format!("\nConnection to {} terminated.", a.name));
    Ok(0)
}

pub(crate) fn set(ctx: &Context, a: SetArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let name = ImageName::parse(&a.name)?;
    store.image(&name)?;
    let given: Settings = a.options.into();
    let settings = Settings::load(store.root(), name.as_str())?.merged(&given);
    // Checked as a start would check them; a bad value changes nothing.
    spec(ctx, &name, &settings)?;
    if let Some(rec) = record::load(&ctx.global.state_dir, name.as_str()) {
        let limits = crate::runner::Limits {
            memory_max: given
                .memory_max
                .as_deref()
                .map(crate::runner::parse_size)
                .transpose()?,
            cpus: given.cpus,
            pids_max: given.pids_max,
        };
        rec.machine_cgroup().set_limits(&limits)?;
        ctx.out.verbose(&format!(
            "{name} is running: its limits changed now; other options apply at its next start"
        ));
    }
    settings.save(store.root(), name.as_str())?;
    Ok(0)
}

pub(crate) fn enable(ctx: &Context, a: UnitArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let name = ImageName::parse(&a.name)?;
    store.image(&name)?;
    let exe = std::env::current_exe().context("cannot find the rmach binary")?;
    let made = machine::unit::enable(&a.unit_dir, &exe, name.as_str())?;
    reload(&a.unit_dir)?;
    for m in made {
        ctx.out.info(&format!("Created {}", m.display()));
    }
    Ok(0)
}

pub(crate) fn disable(ctx: &Context, a: UnitArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&a.name)?;
    if !machine::unit::disable(&a.unit_dir, name.as_str())? {
        ctx.out.info(&format!("{name} was not enabled"));
    }
    reload(&a.unit_dir)?;
    Ok(0)
}

/// Tells a running systemd about the change when it was made where systemd looks.
fn reload(unit_dir: &std::path::Path) -> anyhow::Result<()> {
    if machine::unit::systemd_running() && unit_dir.starts_with("/etc/systemd") {
        let st = std::process::Command::new("systemctl")
            .arg("daemon-reload")
            .status();
        if !st.is_ok_and(|s| s.success()) {
            anyhow::bail!("systemctl daemon-reload failed; run it by hand");
        }
    }
    Ok(())
}

/// A store refusal because a machine runs from the image also says how to stop it.
pub(crate) fn explain_running(err: anyhow::Error) -> anyhow::Error {
    match err.downcast_ref::<crate::store::StoreError>() {
        Some(crate::store::StoreError::Busy { name, holder })
            if holder.purpose == LockPurpose::Boot =>
        {
            anyhow::anyhow!("{name} is {holder}; stop it first with `rmach stop {name}`")
        }
        _ => err,
    }
}

pub(crate) fn copy_to(ctx: &Context, a: CopyArgs) -> anyhow::Result<Status> {
    let root = machine_root(ctx, &a.name)?;
    let dst = a.destination.unwrap_or_else(|| a.source.clone());
    machine::files::copy_to(&root, &a.source, &dst)
        .with_context(|| format!("cannot copy {} into {}", a.source.display(), a.name))?;
    Ok(0)
}

pub(crate) fn copy_from(ctx: &Context, a: CopyArgs) -> anyhow::Result<Status> {
    let root = machine_root(ctx, &a.name)?;
    let dst = a.destination.unwrap_or_else(|| a.source.clone());
    machine::files::copy_from(&root, &a.source, &dst)
        .with_context(|| format!("cannot copy {} out of {}", a.source.display(), a.name))?;
    Ok(0)
}

fn machine_root(ctx: &Context, name: &str) -> anyhow::Result<PathBuf> {
    let store = ctx.store()?;
    let image = store.image(&ImageName::parse(name)?)?;
    if !image.kind().is_tree() {
        anyhow::bail!("{name} is a raw image; copy-to and copy-from need a directory image");
    }
    Ok(image.path().to_path_buf())
}

pub(crate) fn bind(ctx: &Context, a: BindArgs) -> anyhow::Result<Status> {
    ImageName::parse(&a.name)?;
    if !a.source.is_absolute() {
        return Err(UsageError(format!(
            "bad source {}: expected an absolute path",
            a.source.display()
        ))
        .into());
    }
    let rec = control::running(&ctx.global.state_dir, &a.name)?;
    let dst = a.destination.unwrap_or_else(|| a.source.clone());
    machine::bind::bind(&rec, &a.source, &dst, a.read_only, a.mkdir)?;
    Ok(0)
}
