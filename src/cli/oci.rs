//! import-oci, pull-oci, push-oci and export-oci: arguments, names, progress and messages
//! around [`crate::transfer::oci`] (layouts, staging, run settings) and [`crate::oci`] (the
//! registry, building an image); and the hook that lets `run` use the recorded settings.

use std::path::PathBuf;

use anyhow::Context as _;

use super::output::{invalid, UsageError};
use super::{Context, Status};
use crate::archive::Compression;
use crate::oci::image::{self, Resolved};
use crate::oci::registry::{Reference, Registry, RegistrySource};
use crate::oci::settings::RunSettings;
use crate::oci::{spec, BlobCache};
use crate::store::{name_from_path, ImageName, LockPurpose, Store};
use crate::transfer::oci::{self, OciImport};

#[derive(Debug, clap::Args)]
pub(crate) struct ImportOciArgs {
    /// An OCI image layout (directory or tar) or a `docker save` archive (tar or unpacked)
    pub(crate) path: PathBuf,
    /// The image name (default: the file's or directory's name without its suffixes)
    pub(crate) name: Option<String>,
    /// The image to take from a layout that holds several (its ref name in index.json)
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// The architecture to pick from a multi-architecture index (default: the host's)
    #[arg(long)]
    pub(crate) arch: Option<String>,
    #[command(flatten)]
    pub(crate) new: super::import::NewImageArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PullOciArgs {
    /// HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]
    pub(crate) reference: String,
    /// The image name (default: the repository's last component)
    pub(crate) name: Option<String>,
    /// The architecture to pick from a multi-architecture index (default: the host's)
    #[arg(long)]
    pub(crate) arch: Option<String>,
    /// false: accept any certificate, and plain HTTP from a registry without TLS
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) tls_verify: bool,
    #[command(flatten)]
    pub(crate) new: super::import::NewImageArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LayerFormat {
    Gzip,
    Zstd,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PushOciArgs {
    /// The image to push
    pub(crate) name: String,
    /// HOST[:PORT]/REPOSITORY[:TAG] (default tag: latest)
    pub(crate) reference: String,
    /// Layer compression (gzip is what every client reads)
    #[arg(long, value_enum, default_value = "gzip")]
    pub(crate) format: LayerFormat,
    /// false: accept any certificate, and plain HTTP from a registry without TLS
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) tls_verify: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportOciArgs {
    /// The image to export
    pub(crate) name: String,
    /// A new directory, or a FILE ending in .tar for the layout as a tarball
    pub(crate) path: PathBuf,
    /// Layer compression
    #[arg(long, value_enum, default_value = "gzip")]
    pub(crate) format: LayerFormat,
    /// The image's ref name in index.json
    #[arg(long, default_value = "latest")]
    pub(crate) tag: String,
}

pub(crate) fn import_oci(ctx: &Context, args: ImportOciArgs) -> anyhow::Result<Status> {
    let name = match &args.name {
        Some(n) => ImageName::parse(n)?,
        None => name_from_path(&args.path)?,
    };
    let shown = args.path.display().to_string();
    let fail = || format!("cannot import {shown} as {name}; nothing was imported");
    let dir =
        oci::open_layout(&args.path, &ctx.global.cache_dir.join("oci/tmp"))?.with_context(fail)?;
    let Some(kind) = oci::layout_kind(dir.path()) else {
        anyhow::bail!("{shown}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)");
    };
    let arch = args.arch.as_deref().unwrap_or(spec::host_arch());
    let resolved = oci::resolve_layout(dir.path(), kind, args.tag.as_deref(), arch, &shown)
        .with_context(fail)?;
    let req = OciImport {
        name: &name,
        origin: &shown,
        purpose: LockPurpose::Import,
        force: args.new.force,
        read_only: args.new.read_only,
    };
    let members = unpack(ctx, &resolved, &req).with_context(fail)?;
    ctx.out.info(&format!(
        "Imported {name} ({} layers, {members} members).",
        resolved.layers.len()
    ));
    Ok(0)
}

/// `resolved` into the store as `req` says; the members unpacked.
fn unpack(ctx: &Context, resolved: &Resolved, req: &OciImport<'_>) -> anyhow::Result<u64> {
    let store = ctx.store()?;
    Ok(oci::unpack_into_store(&store, resolved, req)?)
}

pub(crate) fn pull_oci(ctx: &Context, args: PullOciArgs) -> anyhow::Result<Status> {
    let reference = Reference::parse(&args.reference).map_err(invalid)?;
    let name = match &args.name {
        Some(n) => ImageName::parse(n)?,
        None => ImageName::parse(reference.short_name())?,
    };
    let fail = || format!("cannot pull {reference} as {name}; nothing was imported");
    let cache = BlobCache::open(&ctx.global.cache_dir).with_context(fail)?;
    let registry = Registry::connect(&reference, args.tls_verify).with_context(fail)?;
    let (bytes, media_type) = registry.manifest(&reference.target()).with_context(fail)?;
    let bar = ctx.out.progress(None, &format!("Pulling {name}"));
    let on_bytes = |n: u64| bar.inc(n);
    let source = RegistrySource {
        registry: &registry,
        cache: &cache,
        on_bytes: Some(&on_bytes),
    };
    let arch = args.arch.as_deref().unwrap_or(spec::host_arch());
    let what = reference.to_string();
    let resolved =
        image::resolve(&source, bytes, media_type.as_deref(), arch, &what).with_context(fail)?;
    bar.set_message(format!("Unpacking {name}"));
    let req = OciImport {
        name: &name,
        origin: &what,
        purpose: LockPurpose::Pull,
        force: args.new.force,
        read_only: args.new.read_only,
    };
    let members = unpack(ctx, &resolved, &req).with_context(fail)?;
    bar.finish_and_clear();
    ctx.out.info(&format!(
        "Pulled {name} ({} layers, {members} members, config {}).",
        resolved.layers.len(),
        resolved.config_digest
    ));
    Ok(0)
}

/// The image as one layer with its config, in the blob cache.
fn build(ctx: &Context, name: &ImageName, format: LayerFormat) -> anyhow::Result<image::Built> {
    let store = ctx.store()?;
    let image = store.image(name)?;
    if !image.kind().is_tree() {
        anyhow::bail!("image {name} is a raw disk image; only directory images become OCI images");
    }
    let settings = std::fs::read_to_string(store.nspawn_settings_path(name))
        .map(|t| RunSettings::from_nspawn(&t))
        .unwrap_or_default();
    let cache = BlobCache::open(&ctx.global.cache_dir)?;
    let compression = match format {
        LayerFormat::Gzip => Compression::Gzip,
        LayerFormat::Zstd => Compression::Zstd,
    };
    let mut warn = |msg: String| ctx.out.warn(&msg);
    Ok(image::build(
        image.path(),
        &cache,
        compression,
        settings.to_config(),
        &mut warn,
    )?)
}

pub(crate) fn push_oci(ctx: &Context, args: PushOciArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let reference = Reference::parse(&args.reference).map_err(invalid)?;
    if reference.digest.is_some() {
        return Err(UsageError("push to a tag, not a digest".into()).into());
    }
    let fail = || format!("cannot push {name} to {reference}");
    let store = ctx.store()?;
    let _lock = store.lock(&name, LockPurpose::Export)?;
    let built = build(ctx, &name, args.format).with_context(fail)?;
    let registry = Registry::connect(&reference, args.tls_verify).with_context(fail)?;
    for (path, desc) in [&built.layer, &built.config] {
        let digest = crate::oci::Digest::parse(&desc.digest)?;
        registry.push_blob(&digest, path).with_context(fail)?;
    }
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
    registry
        .put_manifest(&tag, spec::OCI_MANIFEST, &built.manifest)
        .with_context(fail)?;
    ctx.out.info(&format!(
        "Pushed {name} to {reference} (manifest {}).",
        crate::oci::Digest::of(&built.manifest)
    ));
    Ok(0)
}

pub(crate) fn export_oci(ctx: &Context, args: ExportOciArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let shown = args.path.display().to_string();
    if args.path.symlink_metadata().is_ok() {
        anyhow::bail!("{shown} already exists; give a new directory or file");
    }
    let fail = || format!("cannot export {name} to {shown}");
    let store = ctx.store()?;
    let _lock = store.lock(&name, LockPurpose::Export)?;
    let built = build(ctx, &name, args.format).with_context(fail)?;
    let mut warn = |msg: String| ctx.out.warn(&msg);
    oci::write_layout(&args.path, &built, &args.tag, &mut warn).with_context(fail)?;
    ctx.out.info(&format!(
        "Exported {name} to {shown} (OCI layout, tag {}).",
        args.tag
    ));
    Ok(0)
}

/// The hook for `run NAME` with no command: the image's recorded settings (from its OCI
/// config) fill in the command, and the environment, directory and user the options leave
/// unset. Options given on the command line win.
pub(crate) fn apply_run_settings(
    store: &Store,
    name: &ImageName,
    command: &mut Vec<String>,
    user: &mut Option<String>,
    chdir: &mut Option<PathBuf>,
    setenv: &mut Vec<String>,
) {
    let Some(s) = oci::recorded_settings(store, name) else {
        return;
    };
    if command.is_empty() {
        *command = s.command;
    }
    if user.is_none() {
        *user = s.user;
    }
    if chdir.is_none() {
        *chdir = s.working_dir.map(PathBuf::from);
    }
    let given: Vec<String> = setenv.clone();
    *setenv = s.env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    setenv.extend(given);
}
