//! The verbs that look at and rearrange the store: list, show, remove, rename, clone,
//! read-only, clean and import-fs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use super::output::UsageError;
use super::{Context, Status};
use crate::store::{name_from_path, ImageInfo, ImageName, LockPurpose};
use crate::transfer::{self, TransferError};

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Show hidden images and unfinished operations too
    #[arg(long)]
    pub(crate) all: bool,
    /// Print one JSON document
    #[arg(long, conflicts_with_all = ["names", "no_legend"])]
    pub(crate) json: bool,
    /// Print the names only, one a line
    #[arg(long)]
    pub(crate) names: bool,
    /// Print no column headings (and no "No images.")
    #[arg(long)]
    pub(crate) no_legend: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShowArgs {
    /// The image
    pub(crate) name: String,
    /// Print one JSON document
    #[arg(long, conflicts_with_all = ["property", "value"])]
    pub(crate) json: bool,
    /// Print only these properties as NAME=VALUE (repeat or separate with commas): Name, Type,
    /// Path, ReadOnly, Usage, Created, Modified, State, LockPID, LockVerb, or an os-release
    /// field such as PRETTY_NAME or VERSION_ID
    #[arg(short, long = "property", value_name = "NAME", value_delimiter = ',')]
    pub(crate) property: Vec<String>,
    /// With --property: print the values only, one a line
    #[arg(long)]
    pub(crate) value: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RemoveArgs {
    /// The images to remove
    #[arg(required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RenameArgs {
    /// The image's current name
    pub(crate) old: String,
    /// Its new name
    pub(crate) new: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CloneArgs {
    /// The image to copy
    pub(crate) source: String,
    /// The name of the copy
    pub(crate) destination: String,
    /// Mark the copy read-only
    #[arg(long)]
    pub(crate) read_only: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReadOnlyArgs {
    /// The image
    pub(crate) name: String,
    /// yes (the default) or no; also true/false, on/off, 1/0, y/n, t/f, as machinectl takes
    #[arg(value_name = "BOOL", value_parser = parse_boolean)]
    pub(crate) value: Option<bool>,
}

/// systemd's parse_boolean: what machinectl's `read-only NAME BOOL` accepts. A clap value
/// parser: clap prints the error's text after naming the argument.
fn parse_boolean(text: &str) -> Result<bool, NotABoolean> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Ok(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Ok(false),
        _ => Err(NotABoolean(text.to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a boolean: use yes or no (true/false, on/off, 1/0)")]
struct NotABoolean(String);

#[derive(Debug, clap::Args)]
pub(crate) struct CleanArgs {
    /// Remove hidden images too
    #[arg(long)]
    pub(crate) all: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ImportFsArgs {
    /// The directory tree to copy in
    pub(crate) directory: PathBuf,
    /// The image name (default: the directory's name)
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) new: super::import::NewImageArgs,
    #[command(flatten)]
    pub(crate) disk: super::raw::DiskArgs,
}

fn image_name(name: &str) -> anyhow::Result<ImageName> {
    Ok(ImageName::parse(name)?)
}

pub(crate) fn list(ctx: &Context, args: ListArgs) -> anyhow::Result<Status> {
    let store = ctx.store()?;
    let images = store.images(args.all)?;
    let mut out = std::io::stdout().lock();
    if args.names {
        for image in &images {
            writeln!(out, "{}", image.name())?;
        }
        return Ok(0);
    }
    let infos = images
        .iter()
        .map(|image| store.info(image, true))
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        drop(out);
        ctx.out.json(&infos)?;
        return Ok(0);
    }
    let legend = !args.no_legend;
    if infos.is_empty() {
        // As machinectl; only on a terminal, so a cron job's mail stays empty.
        if legend && !ctx.global.quiet && std::io::stdout().is_terminal() {
            writeln!(out, "No images.")?;
        }
        return Ok(0);
    }
    let width = infos.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    if legend {
        writeln!(
            out,
            "{:width$}  {:9}  {:2}  {:>9}  {:20}  {:20}  STATE",
            "NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"
        )?;
    }
    for info in &infos {
        writeln!(
            out,
            "{:width$}  {:9}  {:2}  {:>9}  {:20}  {:20}  {}",
            info.name,
            info.kind.as_str(),
            if info.read_only { "ro" } else { "" },
            human_bytes(info.usage),
            info.created.as_deref().unwrap_or("-"),
            info.modified.as_deref().unwrap_or("-"),
            info.state
        )?;
    }
    Ok(0)
}

/// A property of `show -p`: its value, or None when the image has no such property.
fn property(info: &ImageInfo, name: &str) -> Option<Option<String>> {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    Some(match name {
        "Name" => Some(info.name.clone()),
        "Type" => Some(info.kind.as_str().to_string()),
        "Path" => Some(info.path.display().to_string()),
        "ReadOnly" => Some(yes_no(info.read_only)),
        "Usage" => Some(info.usage.to_string()),
        "Created" => info.created.clone(),
        "Modified" => info.modified.clone(),
        "State" => Some(info.state.to_string()),
        "LockPID" => info
            .lock
            .as_ref()
            .and_then(|l| l.pid)
            .map(|p| p.to_string()),
        "LockVerb" => info.lock.as_ref().map(|l| l.purpose.as_str().to_string()),
        os if os
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
        {
            info.os_release.as_ref().and_then(|r| r.get(os).cloned())
        }
        _ => return None,
    })
}

/// `show --json`: the image, and the leader of the machine running from it.
#[derive(serde::Serialize)]
struct ShowDoc<'a> {
    #[serde(flatten)]
    info: &'a ImageInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<u32>,
}

/// The host PID of the init of the machine rmach runs from the image (machinectl's Leader),
/// not the PID of the rmach process holding its lock.
fn machine_leader(ctx: &Context, info: &ImageInfo) -> Option<u32> {
    let lock = info.lock.as_ref()?;
    if !matches!(lock.purpose, LockPurpose::Run | LockPurpose::Boot) {
        return None;
    }
    crate::machine::record::leader_of(&ctx.global.state_dir, &info.name, lock.pid)
}

pub(crate) fn show(ctx: &Context, args: ShowArgs) -> anyhow::Result<Status> {
    if args.value && args.property.is_empty() {
        return Err(UsageError("--value needs --property NAME".into()).into());
    }
    let name = image_name(&args.name)?;
    let store = ctx.store()?;
    let image = store.image(&name)?;
    let mut info = store.info(&image, true)?;
    if info.os_release.is_none() && info.state != crate::store::ImageState::Running {
        info.os_release = super::raw::os_release(ctx, &image);
    }
    let leader = machine_leader(ctx, &info);
    if args.json {
        ctx.out.json(&ShowDoc {
            info: &info,
            leader,
        })?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if !args.property.is_empty() {
        let mut lines = Vec::new();
        for name in &args.property {
            let value = match name.as_str() {
                "Leader" => Some(leader.map(|l| l.to_string())),
                _ => property(&info, name),
            };
            let value = value.ok_or_else(|| {
                UsageError(format!(
                    "unknown property {name:?}: use Name, Type, Path, ReadOnly, Usage, Created, \
                     Modified, State, LockPID, LockVerb, Leader or an os-release field \
                     (PRETTY_NAME)"
                ))
            })?;
            let value = value.unwrap_or_default();
            lines.push(if args.value {
                value
            } else {
                format!("{name}={value}")
            });
        }
        for line in lines {
            writeln!(out, "{line}")?;
        }
        return Ok(0);
    }
    writeln!(out, "Name: {}", info.name)?;
    writeln!(out, "Type: {}", info.kind.as_str())?;
    writeln!(out, "Path: {}", info.path.display())?;
    writeln!(
        out,
        "Read-only: {}",
        if info.read_only { "yes" } else { "no" }
    )?;
    writeln!(
        out,
        "Usage: {} ({} bytes)",
        human_bytes(info.usage),
        info.usage
    )?;
    writeln!(out, "Created: {}", info.created.as_deref().unwrap_or("-"))?;
    writeln!(out, "Modified: {}", info.modified.as_deref().unwrap_or("-"))?;
    writeln!(out, "State: {}", info.state)?;
    if let Some(lock) = &info.lock {
        writeln!(out, "Locked: {} is {lock}", info.name)?;
    }
    if let Some(leader) = leader {
        writeln!(out, "Leader: {leader}")?;
    }
    if let Some(os) = &info.os_release {
        let pretty = os.get("PRETTY_NAME").or_else(|| os.get("NAME"));
        if let Some(pretty) = pretty {
            writeln!(out, "OS: {pretty}")?;
        }
        for (key, value) in os {
            writeln!(out, "  {key}={value}")?;
        }
    }
    Ok(0)
}

pub(crate) fn remove(ctx: &Context, args: RemoveArgs) -> anyhow::Result<Status> {
    // Every name is checked before anything is removed, so a typo removes nothing.
    let names = args
        .names
        .iter()
        .map(|n| image_name(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = ctx.store()?;
    for name in &names {
        store.image(name)?;
    }
    for name in &names {
        store.remove(name)?;
        // Its settings file (docs/machines.md) goes with it.
        crate::machine::settings::forget(store.root(), name.as_str())?;
        ctx.out.info(&format!("Removed {name}."));
    }
    Ok(0)
}

pub(crate) fn rename(ctx: &Context, args: RenameArgs) -> anyhow::Result<Status> {
    let (old, new) = (image_name(&args.old)?, image_name(&args.new)?);
    let store = ctx.store()?;
    store.rename(&old, &new)?;
    // Its settings file (docs/machines.md) follows it.
    crate::machine::settings::rename(store.root(), old.as_str(), new.as_str())?;
    Ok(0)
}

pub(crate) fn clone(ctx: &Context, args: CloneArgs) -> anyhow::Result<Status> {
    let (source, destination) = (image_name(&args.source)?, image_name(&args.destination)?);
    if source == destination {
        return Err(UsageError(format!(
            "cannot clone {source} onto itself; give a new name"
        ))
        .into());
    }
    let store = ctx.store()?;
    let bar = ctx.out.progress(None, &format!("Cloning {source}"));
    let progress = |bytes: u64| bar.set_position(bytes);
    store
        .clone_image(&source, &destination, args.read_only, Some(&progress))
        .map_err(|e| store_full(e.into(), &store, format!("cannot clone {source}")))?;
    // Its settings file (docs/machines.md) is copied with it.
    crate::machine::settings::copy(store.root(), source.as_str(), destination.as_str())?;
    bar.finish_and_clear();
    Ok(0)
}

/// As machinectl: `read-only NAME` marks the image read-only, `read-only NAME no` lifts it.
/// (`show NAME -p ReadOnly --value` prints the setting.)
pub(crate) fn read_only(ctx: &Context, args: ReadOnlyArgs) -> anyhow::Result<Status> {
    let name = image_name(&args.name)?;
    ctx.store()?
        .set_read_only(&name, args.value.unwrap_or(true))?;
    Ok(0)
}

pub(crate) fn clean(ctx: &Context, args: CleanArgs) -> anyhow::Result<Status> {
    for path in ctx.store()?.clean(args.all)? {
        ctx.out.info(&format!("Removed {}.", path.display()));
    }
    Ok(0)
}

pub(crate) fn import_fs(ctx: &Context, args: ImportFsArgs) -> anyhow::Result<Status> {
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
    let disk = super::raw::disk_spec(&args.disk)?;
    let bar = ctx.out.progress(None, &format!("Importing {name}"));
    let progress = |bytes: u64| bar.set_position(bytes);
    let req = transfer::ImportRequest {
        name: name.clone(),
        force: args.new.force,
        read_only: args.new.read_only,
        sha256: None,
    };
    transfer::import_fs(&store, &args.directory, &req, disk, Some(&progress)).map_err(
        |e| match e {
            e @ TransferError::StoreFull { .. } => anyhow::Error::new(e).context(format!(
                "cannot import {} as {name}; nothing was imported",
                args.directory.display()
            )),
            e => e.into(),
        },
    )?;
    bar.finish_and_clear();
    ctx.out.info(&format!("Imported {name}."));
    Ok(0)
}

/// A full file system is said the same way by every verb that writes into the store:
/// `WHAT: the store STORE is full: ...` (as import-tar says it).
fn store_full(err: anyhow::Error, store: &crate::store::Store, what: String) -> anyhow::Error {
    if super::output::is_no_space(&err) {
        err.context(format!(
            "{what}: the store {} is full",
            store.root().display()
        ))
    } else {
        err
    }
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
