//! pull-tar: options, name, progress bar and messages around [`crate::transfer::pull`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::{Context, Status};
use crate::store::ImageName;
use crate::transfer::pull::{self, Event, PullOptions, Verify};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyArg {
    No,
    Checksum,
    Signature,
}

#[derive(Debug, clap::Args)]
pub struct PullTarArgs {
    /// The tarball's http:// or https:// URL (compression is detected by content)
    pub url: String,
    /// The image name (default: the URL's last component without its suffixes)
    pub name: Option<String>,
    /// Check the download against SHA256SUMS (checksum), and that list against its signature
    /// (signature)
    #[arg(long, value_enum, default_value = "signature")]
    pub verify: VerifyArg,
    /// OpenPGP keyring for --verify=signature (default: /etc/rmach/import-pubring.gpg, else
    /// /etc/systemd/import-pubring.gpg, else /usr/lib/systemd/import-pubring.gpg)
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub read_only: bool,
}

pub fn pull_tar(ctx: &Context, args: PullTarArgs) -> anyhow::Result<Status> {
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
        keyring: args.keyring,
        force: args.force,
        read_only: args.read_only,
    };
    let store = ctx.store()?;
    let bar = ctx.out.progress(None, &format!("Pulling {name}"));
    let events = |event: Event| match event {
        Event::Verified(sums) => ctx.out.verbose(&format!("{sums}: signature good")),
        Event::Started(total) => {
            if let Some(total) = total {
                let styled = ctx.out.progress(Some(total), &format!("Pulling {name}"));
                bar.set_length(total);
                bar.set_style(styled.style());
            }
        }
    };
    let counter_bar = bar.clone();
    let counter: pull::ByteCounter = Arc::new(move |n| counter_bar.inc(n));
    let stats = pull::pull_tar(&store, &args.url, &name, &opts, &events, counter)
        .with_context(|| format!("cannot pull {} as {name}; nothing was imported", args.url))?;
    bar.finish_and_clear();
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
