//! `rmach bootstrap`: chooses the mirror, creates the image all or nothing through the store,
//! and shows progress; the work is the library's [`crate::bootstrap`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use indicatif::ProgressBar;

use crate::bootstrap::{
    bootstrap as rmach_bootstrap, select_mirror, suites, BootstrapError, Distro, Event, Options,
    Reproducible,
};
use crate::store::ImageName;

use super::{Context, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Variant {
    Minbase,
    Buildd,
    Default,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BootstrapArgs {
    /// The suite: bookworm, trixie, sid, stable, jammy, noble, ...
    pub(crate) suite: String,
    /// The image name
    pub(crate) name: String,
    /// The mirror (default: RMACH_MIRROR, /etc/rmach/rmach.toml, then the host's apt sources)
    #[arg(long, env = "RMACH_MIRROR")]
    pub(crate) mirror: Option<String>,
    /// The package set, as debootstrap's --variant
    #[arg(long, value_enum, default_value = "default")]
    pub(crate) variant: Variant,
    /// The architecture (default: the host's)
    #[arg(long)]
    pub(crate) arch: Option<String>,
    /// Archive components, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub(crate) components: Vec<String>,
    /// Extra packages, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub(crate) include: Vec<String>,
    /// Packages to leave out, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub(crate) exclude: Vec<String>,
    /// The OpenPGP keyring that signs the suite
    #[arg(long)]
    pub(crate) keyring: Option<PathBuf>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub(crate) force: bool,
    /// Run CMD with /bin/sh inside the finished image before it is committed (repeatable, in
    /// order); a failing hook means no image
    #[arg(long = "hook", value_name = "CMD")]
    pub(crate) hooks: Vec<String>,
    /// Set root's password from the first line of FILE (a crypt(3) hash starting with `$` is
    /// used as it is)
    #[arg(long, value_name = "FILE")]
    pub(crate) root_password_file: Option<PathBuf>,
    /// The image's host name (default: the image name)
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// The image's LANG, e.g. C.UTF-8 or de_DE.UTF-8 (needs --include locales)
    #[arg(long)]
    pub(crate) locale: Option<String>,
    /// The image's time zone, e.g. Europe/Berlin
    #[arg(long)]
    pub(crate) timezone: Option<String>,
    /// Build a reproducible image: as if SOURCE_DATE_EPOCH were set to the Release file's date
    /// (SOURCE_DATE_EPOCH, when set, is used instead)
    #[arg(long)]
    pub(crate) reproducible: bool,
    /// On failure, keep the unfinished tree in the store as the hidden image .NAME.failed
    /// (shown by `list --all`, removed by `clean --all`)
    #[arg(long)]
    pub(crate) keep_failed: bool,
    #[command(flatten)]
    pub(crate) disk: super::raw::DiskArgs,
}

pub(crate) fn bootstrap(ctx: &Context, args: BootstrapArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let arch = match args.arch.clone() {
        Some(a) => a,
        None => host_arch()?,
    };
    let distro = suites::lookup(&args.suite)
        .map(|i| i.distro)
        .unwrap_or(Distro::Debian);
    if suites::lookup(&args.suite).is_none() && args.keyring.is_none() {
        return Err(BootstrapError::UnknownSuite {
            suite: args.suite.clone(),
        }
        .into());
    }
    let (mirror, source) = select_mirror(
        args.mirror.as_deref(),
        &args.suite,
        distro,
        &arch,
        Path::new("/etc/rmach/rmach.toml"),
        Path::new("/etc/apt"),
    )?;
    ctx.out.verbose(&format!("mirror {mirror} ({source:?})"));
    // Everything the user gave is checked before anything is created.
    let hostname = match &args.hostname {
        Some(h) => ImageName::parse(h)
            .map_err(|_| anyhow::anyhow!("--hostname {h:?}: not a valid host name (letters, digits, '-' and '.', 1-64 characters)"))?
            .to_string(),
        None => name.to_string(),
    };
    let root_password = match &args.root_password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    let reproducible = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Reproducible::At(v.trim().parse::<i64>().map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?}: not a number of seconds since 1970")
        })?),
        _ if args.reproducible => Reproducible::ReleaseDate,
        _ => Reproducible::No,
    };
    let opts = Options {
        suite: args.suite.clone(),
        mirror,
        variant: match args.variant {
            Variant::Minbase => suites::Variant::Minbase,
            Variant::Buildd => suites::Variant::Buildd,
            Variant::Default => suites::Variant::Default,
        },
        arch,
        components: args.components.clone(),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        keyring: args.keyring.clone(),
        cache_dir: ctx.global.cache_dir.clone(),
        hostname,
        jobs: 8,
        settings: crate::bootstrap::Settings {
            root_password,
            locale: args.locale.clone(),
            timezone: args.timezone.clone(),
            hooks: args.hooks.clone(),
        },
        reproducible,
    };
    let store = ctx.store()?;
    let staging = super::raw::tree_target(
        &store,
        &name,
        crate::store::LockPurpose::Bootstrap,
        args.force,
        &args.disk,
    )?;
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let started = std::time::Instant::now();
    let progress = |event: Event<'_>| match event {
        Event::Phase(phase) => {
            if let Ok(mut b) = bar.lock() {
                if let Some(b) = b.take() {
                    b.finish_and_clear();
                }
            }
            ctx.out.info(&format!("{phase}..."));
            ctx.out
                .verbose(&format!("  at {:.1} s", started.elapsed().as_secs_f64()));
        }
        Event::DownloadStart { files, bytes } if files > 0 => {
            if let Ok(mut b) = bar.lock() {
                *b = Some(ctx.out.progress(Some(bytes), &format!("{files} packages")));
            }
        }
        Event::DownloadStart { .. } => ctx.out.verbose("every package is in the cache"),
        Event::Downloaded(n) => {
            if let Ok(b) = bar.lock() {
                if let Some(b) = b.as_ref() {
                    b.inc(n);
                }
            }
        }
        Event::Note(note) => ctx.out.verbose(&note),
    };
    let report = match rmach_bootstrap(&opts, staging.tree(), &progress) {
        Ok(report) => report,
        Err(err) => {
            let interrupted = matches!(err, BootstrapError::Interrupted { .. });
            let kept = keep_failed(ctx, &args, &name, staging.tree());
            let err = anyhow::Error::new(err)
                .context(format!("cannot bootstrap {} as {name}{kept}", args.suite));
            if interrupted {
                // Ctrl-C: 128 + SIGINT, as every verb exits when interrupted.
                drop(staging);
                ctx.out.error(&err);
                return Ok(130);
            }
            return Err(err);
        }
    };
    if let Ok(mut b) = bar.lock() {
        if let Some(b) = b.take() {
            b.finish_and_clear();
        }
    }
    staging.commit(None, false)?;
    ctx.out.info(&format!(
        "Bootstrapped {name}: {} {} ({} packages).",
        report.distro,
        report.codename,
        report.packages.len()
    ));
    Ok(0)
}

/// The first line of a root password file; refused when unreadable, empty or not text.
fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read(path)
        .with_context(|| format!("--root-password-file {}: cannot read it", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("--root-password-file {}: not UTF-8 text", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() || line.contains(':') {
        anyhow::bail!(
            "--root-password-file {}: the first line must hold the password (not empty, no ':')",
            path.display()
        );
    }
    Ok(line.to_string())
}

/// What a failed bootstrap leaves for a post-mortem: the image's bootstrap log copied to the
/// state directory, and with `--keep-failed` the whole tree as a hidden image. Returns the
/// words naming them for the error message (empty when there is nothing).
fn keep_failed(ctx: &Context, args: &BootstrapArgs, name: &ImageName, tree: &Path) -> String {
    let mut kept = Vec::new();
    let log = tree.join(crate::bootstrap::paths::LOG.trim_start_matches('/'));
    if log.exists() {
        let copy = ctx.global.state_dir.join(format!("bootstrap-{name}.log"));
        let copied =
            std::fs::create_dir_all(&ctx.global.state_dir).and_then(|_| std::fs::copy(&log, &copy));
        if copied.is_ok() {
            kept.push(format!("its log is {}", copy.display()));
        }
    }
    if args.keep_failed {
        let failed = tree.with_file_name(format!(".{name}.failed"));
        if failed.exists() {
            let _ = std::fs::remove_dir_all(&failed);
        }
        if std::fs::rename(tree, &failed).is_ok() {
            kept.push(format!(
                "the unfinished tree is kept in {}",
                failed.display()
            ));
        }
    }
    if kept.is_empty() {
        String::new()
    } else {
        format!(" ({})", kept.join("; "))
    }
}

/// The Debian name of the architecture rmach was built for.
fn host_arch() -> anyhow::Result<String> {
    let Some(arch) = crate::bootstrap::foreign::native_arch() else {
        anyhow::bail!(
            "no Debian architecture known for {}: give --arch ARCH",
            std::env::consts::ARCH
        )
    };
    Ok(arch.to_string())
}
