//! `rmach bootstrap`: chooses the mirror, creates the image all or nothing through the store,
//! and shows progress; the work is the library's [`crate::bootstrap`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use indicatif::ProgressBar;

use crate::bootstrap::{
    bootstrap as rmach_bootstrap, select_mirror, suites, BootstrapError, Distro, Event, Options,
};
use crate::store::ImageName;

use super::{Context, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Minbase,
    Buildd,
    Default,
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The suite: bookworm, trixie, sid, stable, jammy, noble, ...
    pub suite: String,
    /// The image name
    pub name: String,
    /// The mirror (default: RMACH_MIRROR, /etc/rmach/rmach.toml, then the host's apt sources)
    #[arg(long, env = "RMACH_MIRROR")]
    pub mirror: Option<String>,
    /// The package set, as debootstrap's --variant
    #[arg(long, value_enum, default_value = "default")]
    pub variant: Variant,
    /// The architecture (default: the host's)
    #[arg(long)]
    pub arch: Option<String>,
    /// Archive components, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// Extra packages, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// Packages to leave out, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// The OpenPGP keyring that signs the suite
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub disk: super::raw::DiskArgs,
}

pub fn bootstrap(ctx: &Context, args: BootstrapArgs) -> anyhow::Result<Status> {
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
        hostname: name.to_string(),
        jobs: 8,
    };
    let store = ctx.store()?;
    let staging = super::raw::TreeTarget::create(
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
    let report = rmach_bootstrap(&opts, staging.tree(), &progress)
        .with_context(|| format!("cannot bootstrap {} as {name}", args.suite))?;
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

/// The Debian name of the architecture rmach was built for.
fn host_arch() -> anyhow::Result<String> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "i386",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => anyhow::bail!("no Debian architecture known for {other}: give --arch ARCH"),
    }
    .to_string())
}
