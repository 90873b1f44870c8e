//! import-oci, pull-oci, push-oci and export-oci: names, temporary directories, the store's
//! staging and the image's run settings around [`crate::oci`]; and the hook that lets `run`
//! use those settings.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::output::UsageError;
use super::{Context, Status};
use crate::archive::{self, Compression, Decoder, ExtractOptions};
use crate::oci::image::{self, Resolved};
use crate::oci::layout::{self, Layout};
use crate::oci::registry::{Reference, Registry, RegistrySource};
use crate::oci::settings::RunSettings;
use crate::oci::{spec, BlobCache};
use crate::store::{name_from_path, ImageKind, ImageName, LockPurpose, Store};

#[derive(Debug, clap::Args)]
pub struct ImportOciArgs {
    /// An OCI image layout (directory or tar) or a `docker save` archive (tar or unpacked)
    pub path: PathBuf,
    /// The image name (default: the file's or directory's name without its suffixes)
    pub name: Option<String>,
    /// The image to take from a layout that holds several (its ref name in index.json)
    #[arg(long)]
    pub tag: Option<String>,
    /// The architecture to pick from a multi-architecture index (default: the host's)
    #[arg(long)]
    pub arch: Option<String>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullOciArgs {
    /// HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]
    pub reference: String,
    /// The image name (default: the repository's last component)
    pub name: Option<String>,
    /// The architecture to pick from a multi-architecture index (default: the host's)
    #[arg(long)]
    pub arch: Option<String>,
    /// false: accept any certificate, and plain HTTP from a registry without TLS
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerFormat {
    Gzip,
    Zstd,
}

#[derive(Debug, clap::Args)]
pub struct PushOciArgs {
    /// The image to push
    pub name: String,
    /// HOST[:PORT]/REPOSITORY[:TAG] (default tag: latest)
    pub reference: String,
    /// Layer compression (gzip is what every client reads)
    #[arg(long, value_enum, default_value = "gzip")]
    pub format: LayerFormat,
    /// false: accept any certificate, and plain HTTP from a registry without TLS
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportOciArgs {
    /// The image to export
    pub name: String,
    /// A new directory, or a FILE ending in .tar for the layout as a tarball
    pub path: PathBuf,
    /// Layer compression
    #[arg(long, value_enum, default_value = "gzip")]
    pub format: LayerFormat,
    /// The image's ref name in index.json
    #[arg(long, default_value = "latest")]
    pub tag: String,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path, what: &str) -> anyhow::Result<TempDir> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(".#rmach-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::sys::interrupt::remove_on_interrupt(&dir);
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The comment in NAME.nspawn that ties it to one image directory: its inode number and
/// birth time, which a rename keeps and a new image under the same name does not have.
const IDENTITY: &str = "# rmach-image-identity: ";

fn identity(path: &Path) -> Option<String> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::INO | StatxFlags::BTIME,
    )
    .ok()?;
    let born = if st.stx_mask & StatxFlags::BTIME.bits() != 0 {
        format!("{}.{:09}", st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
    } else {
        "-".into()
    };
    Some(format!("{} {born}", st.stx_ino))
}

/// Unpacks `image` into a new store image and writes its settings beside it.
fn unpack_into_store(
    ctx: &Context,
    image: &Resolved,
    name: &ImageName,
    origin: &str,
    purpose: LockPurpose,
    force: bool,
    read_only: bool,
) -> anyhow::Result<u64> {
    let store = ctx.store()?;
    let staging = store.create(name, purpose, ImageKind::Directory, force)?;
    let members = image::unpack(image, staging.path())?;
    let settings = RunSettings::from_config(&image.config.config);
    let target = store.nspawn_settings_path(name);
    let tmp = store.temp_path(name, "settings");
    let text = format!(
        "{}{IDENTITY}{}\n",
        settings.to_nspawn(origin),
        identity(staging.path()).unwrap_or_default()
    );
    let written = std::fs::write(&tmp, text)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| Ok(staging.commit(read_only)?))
        .and_then(|()| {
            std::fs::rename(&tmp, &target)
                .with_context(|| format!("cannot write {}", target.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| members)
}

pub fn import_oci(ctx: &Context, args: ImportOciArgs) -> anyhow::Result<Status> {
    let name = match &args.name {
        Some(n) => ImageName::parse(n)?,
        None => name_from_path(&args.path)?,
    };
    let shown = args.path.display().to_string();
    let fail = || format!("cannot import {shown} as {name}; nothing was imported");
    let meta = std::fs::metadata(&args.path).with_context(|| format!("cannot open {shown}"))?;
    // A tarball is unpacked to a temporary directory first (blobs must be read twice: once to
    // check, once to apply).
    let _unpacked;
    let dir = if meta.is_dir() {
        args.path.clone()
    } else {
        let tmp = TempDir::new(&ctx.global.cache_dir.join("oci/tmp"), "import")?;
        let file =
            std::fs::File::open(&args.path).with_context(|| format!("cannot open {shown}"))?;
        let mut decoder = Decoder::spawn(file, false).with_context(fail)?;
        let opts = ExtractOptions {
            chown: false,
            xattrs: false,
            acls: false,
            ..ExtractOptions::default()
        };
        archive::extract(&mut decoder, &tmp.0, &opts, None).with_context(fail)?;
        let dir = tmp.0.clone();
        _unpacked = tmp;
        dir
    };
    let arch = args.arch.as_deref().unwrap_or(spec::host_arch());
    let resolved = if dir.join("oci-layout").exists() {
        let layout = Layout::open(&dir).with_context(fail)?;
        let top = layout.top(args.tag.as_deref()).with_context(fail)?;
        let bytes = crate::oci::image::Source::manifest(&layout, &top).with_context(fail)?;
        image::resolve(&layout, bytes, Some(&top.media_type), arch, &shown).with_context(fail)?
    } else if dir.join("manifest.json").exists() {
        layout::docker_archive(&dir).with_context(fail)?
    } else {
        anyhow::bail!("{shown}: neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)");
    };
    let members = unpack_into_store(
        ctx,
        &resolved,
        &name,
        &shown,
        LockPurpose::Import,
        args.force,
        args.read_only,
    )
    .with_context(fail)?;
    ctx.out.info(&format!(
        "Imported {name} ({} layers, {members} members).",
        resolved.layers.len()
    ));
    Ok(0)
}

pub fn pull_oci(ctx: &Context, args: PullOciArgs) -> anyhow::Result<Status> {
    let reference = Reference::parse(&args.reference).map_err(|e| UsageError(e.to_string()))?;
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
    let members = unpack_into_store(
        ctx,
        &resolved,
        &name,
        &what,
        LockPurpose::Pull,
        args.force,
        args.read_only,
    )
    .with_context(fail)?;
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

pub fn push_oci(ctx: &Context, args: PushOciArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let reference = Reference::parse(&args.reference).map_err(|e| UsageError(e.to_string()))?;
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

pub fn export_oci(ctx: &Context, args: ExportOciArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let shown = args.path.display().to_string();
    if args.path.symlink_metadata().is_ok() {
        anyhow::bail!("{shown} already exists; give a new directory or file");
    }
    let fail = || format!("cannot export {name} to {shown}");
    let store = ctx.store()?;
    let _lock = store.lock(&name, LockPurpose::Export)?;
    let built = build(ctx, &name, args.format).with_context(fail)?;
    let parent = match args.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = TempDir::new(&parent, "export-oci")?;
    let blobs = [
        (built.layer.0.as_path(), &built.layer.1),
        (built.config.0.as_path(), &built.config.1),
    ];
    let is_tar = args.path.extension().is_some_and(|e| e == "tar");
    let layout_dir = if is_tar {
        tmp.0.join("layout")
    } else {
        tmp.0.clone()
    };
    layout::write_layout(&layout_dir, &blobs, &built.manifest, &args.tag).with_context(fail)?;
    if is_tar {
        let tar_tmp = tmp.0.join("layout.tar");
        let mut file = std::fs::File::create(&tar_tmp).with_context(fail)?;
        let mut warn = |msg: String| ctx.out.warn(&msg);
        archive::write_tree(
            &layout_dir,
            &mut file,
            &archive::WriteOptions::default(),
            &mut warn,
            None,
        )
        .with_context(fail)?;
        file.sync_all().with_context(fail)?;
        std::fs::rename(&tar_tmp, &args.path).with_context(fail)?;
    } else {
        std::fs::rename(&tmp.0, &args.path).with_context(fail)?;
    }
    ctx.out.info(&format!(
        "Exported {name} to {shown} (OCI layout, tag {}).",
        args.tag
    ));
    Ok(0)
}

/// The hook for `run NAME` with no command: the image's recorded settings (from its OCI
/// config) fill in the command, and the environment, directory and user the options leave
/// unset. Options given on the command line win.
pub fn apply_run_settings(
    store: &Store,
    name: &ImageName,
    command: &mut Vec<String>,
    user: &mut Option<String>,
    chdir: &mut Option<PathBuf>,
    setenv: &mut Vec<String>,
) {
    let Ok(text) = std::fs::read_to_string(store.nspawn_settings_path(name)) else {
        return;
    };
    // Settings left behind by an image that was removed or replaced (by a verb that does not
    // know about them) must not apply to the image now under the name.
    let recorded = text.lines().find_map(|l| l.strip_prefix(IDENTITY));
    let current = store.image(name).ok().and_then(|i| identity(i.path()));
    if recorded.is_none() || recorded != current.as_deref() {
        return;
    }
    let s = RunSettings::from_nspawn(&text);
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
