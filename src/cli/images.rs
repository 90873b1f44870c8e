//! The verbs that look at and rearrange the store: list, show, remove, rename, clone,
//! read-only, clean and import-fs.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{Context, Status};
use crate::store::{copy_tree, name_from_path, ImageName};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Show hidden images and unfinished operations too
    #[arg(long)]
    pub all: bool,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The image
    pub name: String,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The images to remove
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    /// The image's current name
    pub old: String,
    /// Its new name
    pub new: String,
}

#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    /// The image to copy
    pub source: String,
    /// The name of the copy
    pub destination: String,
    /// Mark the copy read-only
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReadOnlyArgs {
    /// The image
    pub name: String,
    /// yes or no (without: print the current setting)
    #[arg(value_parser = clap::builder::BoolishValueParser::new())]
    pub value: Option<bool>,
}

#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Remove hidden images too
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImportFsArgs {
    /// The directory tree to copy in
    pub directory: PathBuf,
    /// The image name (default: the directory's name)
    pub name: Option<String>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub read_only: bool,
    #[command(flatten)]
    pub disk: super::raw::DiskArgs,
}

fn image_name(name: &str) -> anyhow::Result<ImageName> {
    Ok(ImageName::parse(name)?)
}

pub fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let infos = store
        .images(args.all)?
        .iter()
        .map(|image| store.info(image, true))
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        ctx.out.json(&infos)?;
        return Ok(0);
    }
    if infos.is_empty() {
        ctx.out.info("No images.");
        return Ok(0);
    }
    let width = infos.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:width$}  {:9}  {:2}  {:>9}  {:20}  {:20}  STATE",
        "NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"
    );
    for info in &infos {
        println!(
            "{:width$}  {:9}  {:2}  {:>9}  {:20}  {:20}  {}",
            info.name,
            info.kind.as_str(),
            if info.read_only { "ro" } else { "" },
            human_bytes(info.usage),
            info.created.as_deref().unwrap_or("-"),
            info.modified.as_deref().unwrap_or("-"),
            info.state
        );
    }
    Ok(0)
}

pub fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let image = store.image(&image_name(&args.name)?)?;
    let mut info = store.info(&image, true)?;
    if info.os_release.is_none() && info.state != "running" {
        info.os_release = super::raw::os_release(ctx, &image);
    }
    if args.json {
        ctx.out.json(&info)?;
        return Ok(0);
    }
    println!("Name: {}", info.name);
    println!("Type: {}", info.kind.as_str());
    println!("Path: {}", info.path.display());
    println!("Read-only: {}", if info.read_only { "yes" } else { "no" });
    println!("Usage: {} ({} bytes)", human_bytes(info.usage), info.usage);
    println!("Created: {}", info.created.as_deref().unwrap_or("-"));
    println!("Modified: {}", info.modified.as_deref().unwrap_or("-"));
    println!("State: {}", info.state);
    if let Some(lock) = &info.lock {
        println!("Locked: {} by PID {}", lock.verb, lock.pid);
    }
    if let Some(os) = &info.os_release {
        let pretty = os.get("PRETTY_NAME").or_else(|| os.get("NAME"));
        if let Some(pretty) = pretty {
            println!("OS: {pretty}");
        }
        for (key, value) in os {
            println!("  {key}={value}");
        }
    }
    Ok(0)
}

pub fn remove(ctx: &Context, args: RemoveArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    // Every name is checked before anything is removed, so a typo removes nothing.
    let names = args
        .names
        .iter()
        .map(|n| image_name(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for name in &names {
        store.image(name)?;
    }
    for name in &names {
        store.remove(name)?;
        ctx.out.info(&format!("Removed {name}."));
    }
    Ok(0)
}

pub fn rename(ctx: &Context, args: RenameArgs) -> anyhow::Result<Status> {
    let (old, new) = (image_name(&args.old)?, image_name(&args.new)?);
    ctx.store()?.rename(&old, &new)?;
    Ok(0)
}

pub fn clone(ctx: &Context, args: CloneArgs) -> anyhow::Result<Status> {
    let (source, destination) = (image_name(&args.source)?, image_name(&args.destination)?);
    let store = ctx.store()?;
    let bar = ctx.out.progress(None, &format!("Cloning {source}"));
    let progress = |bytes: u64| bar.set_position(bytes);
    store.clone_image(&source, &destination, args.read_only, Some(&progress))?;
    bar.finish_and_clear();
    Ok(0)
}

pub fn read_only(ctx: &Context, args: ReadOnlyArgs) -> anyhow::Result<Status> {
    let name = image_name(&args.name)?;
    let store = ctx.store()?;
    match args.value {
        Some(value) => store.set_read_only(&name, value)?,
        None => println!(
            "{}",
            if store.is_read_only(&name)? {
                "yes"
            } else {
                "no"
            }
        ),
    }
    Ok(0)
}

pub fn clean(ctx: &Context, args: CleanArgs) -> anyhow::Result<Status> {
    for path in ctx.store()?.clean(args.all)? {
        ctx.out.info(&format!("Removed {}.", path.display()));
    }
    Ok(0)
}

pub fn import_fs(ctx: &Context, args: ImportFsArgs) -> anyhow::Result<Status> {
    let name = match &args.name {
        Some(name) => image_name(name)?,
        None => name_from_path(
            &std::fs::canonicalize(&args.directory).unwrap_or(args.directory.clone()),
        )?,
    };
    let meta = std::fs::metadata(&args.directory)
        .with_context(|| format!("cannot import {}", args.directory.display()))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "cannot import {}: not a directory",
            args.directory.display()
        );
    }
    let store = ctx.store()?;
    let staging =
        super::raw::TreeTarget::create(&store, &name, "imported", args.force, &args.disk)?;
    let bar = ctx.out.progress(None, &format!("Importing {name}"));
    let progress = |bytes: u64| bar.set_position(bytes);
    if staging.is_raw() {
        // The disk is built straight from the directory: no copy first.
        staging.commit(Some(&args.directory), args.read_only)?;
    } else {
        copy_tree(&args.directory, staging.tree(), Some(&progress))?;
        staging.commit(None, args.read_only)?;
    }
    bar.finish_and_clear();
    ctx.out.info(&format!("Imported {name}."));
    Ok(0)
}

fn human_bytes(bytes: u64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", units[unit])
    }
}
