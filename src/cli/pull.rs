//! pull-tar and pull-raw: options, name, progress bar and messages around
//! [`crate::transfer::pull`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::{Context, Status};
use crate::store::{ImageName, Store};
use crate::transfer::pull::{self, Event, PullOptions, PullRequest, Verify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum VerifyArg {
    No,
    Checksum,
    Signature,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PullArgs {
    /// The http:// or https:// URL of the tarball (pull-tar) or disk image, raw or qcow2
    /// (pull-raw); compression is detected by content
    pub(crate) url: String,
    /// The image name (default: the URL's last component without its suffixes)
    pub(crate) name: Option<String>,
    /// Check the download against SHA256SUMS (checksum), and that list against its signature
    /// (signature)
    #[arg(long, value_enum, default_value = "signature")]
    pub(crate) verify: VerifyArg,
    /// OpenPGP keyring for --verify=signature (default: /etc/rmach/import-pubring.gpg, else
    /// /etc/systemd/import-pubring.gpg, else /usr/lib/systemd/import-pubring.gpg)
    #[arg(long, value_name = "FILE")]
    pub(crate) keyring: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) new: super::import::NewImageArgs,
}

fn options(args: &PullArgs) -> anyhow::Result<(ImageName, PullOptions)> {
    let name = match &args.name {
        Some(name) => ImageName::parse(name)?,
        None => pull::name_from_url(&args.url)?,
    };
    let opts = PullOptions {
        verify: match args.verify {
            VerifyArg::No => Verify::No,
            VerifyArg::Checksum => Verify::Checksum,
            VerifyArg::Signature => Verify::Signature,
        },
        keyring: args.keyring.clone(),
        force: args.new.force,
        read_only: args.new.read_only,
    };
    Ok((name, opts))
}

/// A progress bar that learns the download's length when it starts.
fn progress_events<'a>(
    ctx: &'a Context,
    bar: &'a indicatif::ProgressBar,
    name: &'a ImageName,
) -> impl Fn(Event) + 'a {
    move |event: Event| match event {
        Event::Verified(sums) => ctx.out.verbose(&format!("{sums}: signature good")),
        Event::Started(Some(total)) => {
            let styled = ctx.out.progress(Some(total), &format!("Pulling {name}"));
            bar.set_length(total);
            bar.set_style(styled.style());
        }
        Event::Started(None) => {}
    }
}

/// The pull both verbs make: name and options from `args`, a progress bar fed by every byte
/// downloaded, and `pull` (pull_tar or pull_raw) run under them; its failure is said as
/// `cannot pull URL as NAME; nothing was imported`.
fn pulled<T>(
    ctx: &Context,
    args: &PullArgs,
    pull: impl FnOnce(&Store, PullRequest<'_>) -> Result<T, pull::PullError>,
) -> anyhow::Result<(ImageName, PullOptions, T)> {
    let (name, opts) = options(args)?;
    let store = ctx.store()?;
    let bar = ctx.out.progress(None, &format!("Pulling {name}"));
    let events = progress_events(ctx, &bar, &name);
    let counter_bar = bar.clone();
    let req = PullRequest {
        url: &args.url,
        name: &name,
        opts: &opts,
        events: &events,
        bytes: Arc::new(move |n| counter_bar.inc(n)),
    };
    let stats = pull(&store, req)
        .with_context(|| format!("cannot pull {} as {name}; nothing was imported", args.url))?;
    bar.finish_and_clear();
    drop(events);
    Ok((name, opts, stats))
}

pub(crate) fn pull_raw(ctx: &Context, args: PullArgs) -> anyhow::Result<Status> {
    let (name, _, stats) = pulled(ctx, &args, pull::pull_raw)?;
    let format = if stats.qcow2 { "qcow2" } else { "raw" };
    ctx.out.info(&format!(
        "Pulled {name} ({format}, {} compression, {} bytes, sha256 {}).",
        stats.compression, stats.size, stats.sha256
    ));
    Ok(0)
}

pub(crate) fn pull_tar(ctx: &Context, args: PullArgs) -> anyhow::Result<Status> {
    let (name, opts, stats) = pulled(ctx, &args, pull::pull_tar)?;
    for w in &stats.warnings {
        ctx.out.warn(w);
    }
    if let Some(top) = &stats.stripped_top_dir {
        ctx.out.verbose(&format!(
            "{}: using its single top-level directory {top:?} as the root",
            args.url
        ));
    }
    if opts.verify == Verify::No {
        ctx.out
            .verbose(&format!("{}: not verified (--verify=no)", args.url));
    }
    ctx.out.info(&format!(
        "Pulled {name} ({} members, {} tar, sha256 {}).",
        stats.members, stats.compression, stats.sha256
    ));
    Ok(0)
}
