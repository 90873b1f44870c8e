//! The command line: clap definitions (validation only), one file per verb group, printing,
//! progress bars, JSON output and exit statuses. This is the only module that prints, reads
//! argv or decides an exit status; everything below it returns typed errors.

mod bootstrap;
mod complete;
mod images;
mod import;
mod machine;
pub mod man;
mod oci;
mod output;
mod pull;
mod raw;
mod run;
mod tar;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub(crate) use output::Output;

/// Keep, import, export, bootstrap and run machine images.
#[derive(Debug, Parser)]
#[command(name = "rmach", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Image store
    #[arg(
        long,
        env = "RMACH_STORE",
        default_value = "/var/lib/machines",
        global = true
    )]
    pub(crate) store: PathBuf,
    /// Locks and running-machine records
    #[arg(
        long,
        env = "RMACH_STATE_DIR",
        default_value = "/run/rmach",
        global = true
    )]
    pub(crate) state_dir: PathBuf,
    /// Downloaded packages and pulls
    #[arg(
        long,
        env = "RMACH_CACHE_DIR",
        default_value = "/var/cache/rmach",
        global = true
    )]
    pub(crate) cache_dir: PathBuf,
    /// Print nothing but errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Say more about what is being done
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the images in the store
    List(images::ListArgs),
    /// Show one image in full
    Show(images::ShowArgs),
    /// Remove images
    Remove(images::RemoveArgs),
    /// Rename an image
    Rename(images::RenameArgs),
    /// Copy an image under a new name
    Clone(images::CloneArgs),
    /// Mark an image read-only (or, with "no", writable)
    ReadOnly(images::ReadOnlyArgs),
    /// Remove what interrupted operations left behind
    Clean(images::CleanArgs),
    /// Copy a directory tree into the store as an image
    ImportFs(images::ImportFsArgs),
    /// Import a tarball (any compression) as an image
    ImportTar(tar::ImportTarArgs),
    /// Export an image as a tarball
    ExportTar(tar::ExportTarArgs),
    /// Import a disk image (raw or qcow2, any compression) as a raw image
    ImportRaw(raw::ImportRawArgs),
    /// Export a raw image (raw, compressed or qcow2)
    ExportRaw(raw::ExportRawArgs),
    /// Download a tarball over HTTP(S), verify it and import it as an image
    PullTar(pull::PullArgs),
    /// Download a disk image (raw or qcow2) over HTTP(S), verify it and import it
    PullRaw(pull::PullArgs),
    /// Import an OCI image layout or a docker save archive as an image
    ImportOci(oci::ImportOciArgs),
    /// Pull an image from an OCI registry
    PullOci(oci::PullOciArgs),
    /// Push an image to an OCI registry as one layer
    PushOci(oci::PushOciArgs),
    /// Write an image as an OCI image layout (directory or .tar)
    ExportOci(oci::ExportOciArgs),
    /// Build a Debian or Ubuntu image from a mirror
    Bootstrap(bootstrap::BootstrapArgs),
    /// Run a command inside an image
    Run(run::RunArgs),
    /// Boot an image's init as PID 1
    Boot(run::BootArgs),
    /// Boot an image in the background under a supervisor
    Start(machine::StartArgs),
    /// Power a started machine off (killing it after the timeout)
    Stop(machine::StopArgs),
    /// Send a signal to a started machine's init
    Kill(machine::KillArgs),
    /// Reboot a started machine
    Reboot(machine::NameArgs),
    /// Show a started machine's state, addresses, resource use and console
    Status(machine::StatusArgs),
    /// A session inside a started machine (honours SSH_ORIGINAL_COMMAND)
    Shell(machine::ShellArgs),
    /// Attach to a getty of a started machine (systemd inside)
    Login(machine::NameArgs),
    /// Change a machine's settings (limits at once where it runs) and record them
    Set(machine::SetArgs),
    /// Start a machine at boot through rmach@.service
    Enable(machine::UnitArgs),
    /// Stop starting a machine at boot
    Disable(machine::UnitArgs),
    /// Copy a file or tree from the host into a machine
    CopyTo(machine::CopyArgs),
    /// Copy a file or tree out of a machine
    CopyFrom(machine::CopyArgs),
    /// Mount a host path into a started machine
    Bind(machine::BindArgs),
    #[command(name = "__supervise", hide = true)]
    Supervise(machine::SuperviseArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    pub(crate) shell: clap_complete::Shell,
}

/// What every verb handler gets: the global options, resolved.
pub(crate) struct Context {
    pub(crate) global: GlobalArgs,
    pub(crate) out: Output,
    /// The verb creates images (an import, a pull, bootstrap): a missing store is created.
    pub(crate) creates_images: bool,
}

impl Context {
    /// The store; a missing one is an error naming the path, except for verbs that create
    /// images, which create it.
    pub(crate) fn store(&self) -> anyhow::Result<crate::store::Store> {
        let (root, state) = (&self.global.store, &self.global.state_dir);
        Ok(if self.creates_images {
            crate::store::Store::open(root, state)?
        } else {
            crate::store::Store::open_existing(root, state)?
        })
    }
}

/// Whether verb `name` only prints information, so a closed stdout is no failure.
fn prints_a_listing(name: &str) -> bool {
    matches!(name, "list" | "show" | "completions" | "status")
}

/// Whether verb `name` creates images (and so may create a missing store).
fn creates_images(name: &str) -> bool {
    name.starts_with("import-") || name.starts_with("pull-") || name == "bootstrap"
}

/// What a verb hands back: success, or a status the payload chose (run, boot).
pub(crate) type Status = u8;

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses argv, runs the verb and maps the outcome to an exit status: 0, the payload's status
/// for run/boot, 1 for a failure, 2 for a usage error. A closed stdout (`| head`) ends a
/// listing verb quietly with status 0.
pub fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err)
            if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = err.print();
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("rmach: {}", output::one_line_usage_error(&err));
            return ExitCode::from(2);
        }
    };
    let out = Output::new(cli.global.quiet, cli.global.verbose);
    let verb = matches.subcommand_name().unwrap_or_default().to_string();
    let ctx = Context {
        global: cli.global,
        out,
        creates_images: creates_images(&verb),
    };
    match dispatch(&ctx, cli.command) {
        Ok(status) => ExitCode::from(status),
        // A reader that stopped early (`| head`) got what it wanted from a listing. An export
        // cut short is not a success: it fails as any other write would.
        Err(err) if output::is_broken_pipe(&err) && prints_a_listing(&verb) => ExitCode::SUCCESS,
        Err(err) => {
            ctx.out.error(&err);
            ExitCode::from(if output::is_usage_error(&err) { 2 } else { 1 })
        }
    }
}

fn dispatch(ctx: &Context, verb: Command) -> anyhow::Result<Status> {
    if let Command::Completions(a) = verb {
        std::io::stdout().write_all(&complete::script(a.shell))?;
        return Ok(0);
    }
    if !rustix::process::geteuid().is_root() {
        anyhow::bail!(
            "rmach needs root: images hold files of every owner, and machines need namespaces \
             and mounts; run it as root (sudo rmach ...)"
        );
    }
    if matches!(
        verb,
        Command::Clone(_)
            | Command::ImportFs(_)
            | Command::ImportTar(_)
            | Command::ImportRaw(_)
            | Command::ExportRaw(_)
            | Command::PullTar(_)
            | Command::PullRaw(_)
            | Command::ImportOci(_)
            | Command::PullOci(_)
            | Command::Bootstrap(_)
    ) {
        crate::sys::interrupt::exit_on_interrupt(
            "rmach: interrupted: nothing was created; `rmach clean` (or the next operation on the name) removes what was left\n",
        )?;
    }
    let result = match verb {
        Command::Start(a) => machine::start(ctx, a),
        Command::Stop(a) => machine::stop(ctx, a),
        Command::Kill(a) => machine::kill(ctx, a),
        Command::Reboot(a) => machine::reboot(ctx, a),
        Command::Status(a) => machine::status(ctx, a),
        Command::Shell(a) => machine::shell(ctx, a),
        Command::Login(a) => machine::login(ctx, a),
        Command::Set(a) => machine::set(ctx, a),
        Command::Enable(a) => machine::enable(ctx, a),
        Command::Disable(a) => machine::disable(ctx, a),
        Command::CopyTo(a) => machine::copy_to(ctx, a),
        Command::CopyFrom(a) => machine::copy_from(ctx, a),
        Command::Bind(a) => machine::bind(ctx, a),
        Command::Supervise(a) => machine::supervise_hidden(ctx, a),
        Command::List(a) => images::list(ctx, a),
        Command::Show(a) => images::show(ctx, a),
        Command::Remove(a) => images::remove(ctx, a),
        Command::Rename(a) => images::rename(ctx, a),
        Command::Clone(a) => images::clone(ctx, a),
        Command::ReadOnly(a) => images::read_only(ctx, a),
        Command::Clean(a) => images::clean(ctx, a),
        Command::ImportFs(a) => images::import_fs(ctx, a),
        Command::ImportTar(a) => tar::import_tar(ctx, a),
        Command::ExportTar(a) => tar::export_tar(ctx, a),
        Command::ImportRaw(a) => raw::import_raw(ctx, a),
        Command::ExportRaw(a) => raw::export_raw(ctx, a),
        Command::PullTar(a) => pull::pull_tar(ctx, a),
        Command::PullRaw(a) => pull::pull_raw(ctx, a),
        Command::ImportOci(a) => oci::import_oci(ctx, a),
        Command::PullOci(a) => oci::pull_oci(ctx, a),
        Command::PushOci(a) => oci::push_oci(ctx, a),
        Command::ExportOci(a) => oci::export_oci(ctx, a),
        Command::Bootstrap(a) => bootstrap::bootstrap(ctx, a),
        Command::Run(a) => run::run(ctx, a),
        Command::Boot(a) => run::boot(ctx, a),
        Command::Completions(_) => Ok(0),
    };
    result.map_err(machine::explain_running)
}
