//! import-raw and export-raw: arguments, files and messages around [`crate::transfer`],
//! which stages, converts (through the image library), checks and commits; and the
//! `--format raw` options of the verbs that build a tree.

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context as _;

use super::output::UsageError;
use super::{Context, Status};
use crate::archive::Compression;
use crate::image::{self, DiskFs, ExportFormat, Source};
use crate::store::{ImageKind, ImageName, LockPurpose, Store};
use crate::transfer::{self, DiskSpec, ExportTarget, TransferError, TreeTarget};

#[derive(Debug, clap::Args)]
pub(crate) struct ImportRawArgs {
    /// The disk image (raw or qcow2, any compression), or - for standard input
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) import: super::import::ImportArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RawFormat {
    Raw,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    Qcow2,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportRawArgs {
    /// The image to export
    pub(crate) name: String,
    /// The output file, or - for standard output (default: standard output)
    pub(crate) file: Option<PathBuf>,
    /// Output format (default: from the file's suffix: .qcow2, .gz, .zst, .xz, .bz2, else raw)
    #[arg(long)]
    pub(crate) format: Option<RawFormat>,
    /// Replace an existing output file
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn import_raw(ctx: &Context, args: ImportRawArgs) -> anyhow::Result<Status> {
    let req = args.import.request("import-raw", &args.file)?;
    let name = &req.name;
    let input = super::import::open(&args.file, "not a disk image; import it with import-fs")?;
    let source = match (input.file, input.len) {
        (Some(file), Some(_)) => Source::File(file),
        (Some(file), None) => Source::Stream(Box::new(file)),
        (None, _) => Source::Stream(Box::new(std::io::stdin())),
    };
    let store = ctx.store()?;
    let report = transfer::import_raw(&store, source, &req)
        .map_err(|e| super::import::failed(e, &input.shown, name))?;
    let format = match report.qcow2 {
        Some(q) => format!("qcow2 v{}", q.version),
        None => "raw".into(),
    };
    let compression = match report.compression {
        Compression::None => String::new(),
        c => format!(", {}", c.name()),
    };
    ctx.out.info(&format!(
        "Imported {name} ({format}{compression}, {} bytes).",
        report.size
    ));
    Ok(0)
}

fn export_format(f: RawFormat) -> ExportFormat {
    match f {
        RawFormat::Raw => ExportFormat::Raw,
        RawFormat::Qcow2 => ExportFormat::Qcow2,
        RawFormat::Gzip => ExportFormat::Compressed(Compression::Gzip),
        RawFormat::Zstd => ExportFormat::Compressed(Compression::Zstd),
        RawFormat::Xz => ExportFormat::Compressed(Compression::Xz),
        RawFormat::Bzip2 => ExportFormat::Compressed(Compression::Bzip2),
    }
}

pub(crate) fn export_raw(ctx: &Context, args: ExportRawArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let path = args.file.as_deref().filter(|f| f.as_os_str() != "-");
    let format = match (args.format, path) {
        (Some(f), _) => export_format(f),
        (None, Some(p)) => ExportFormat::from_file_name(p.as_os_str().as_bytes()),
        (None, None) => ExportFormat::Raw,
    };
    if path.is_none() && std::io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write a disk image to a terminal; give a FILE or redirect standard output"
                .into(),
        )
        .into());
    }
    let store = ctx.store()?;
    let shown = path.map_or("standard output".into(), |p| p.display().to_string());
    let target = match path {
        Some(path) => ExportTarget::File {
            path,
            force: args.force,
        },
        // The descriptor itself: std's stdout scans every byte for newlines.
        None => ExportTarget::Stream(Box::new(File::from(
            std::os::fd::AsFd::as_fd(&std::io::stdout())
                .try_clone_to_owned()
                .context("cannot write to standard output")?,
        ))),
    };
    transfer::export_raw(&store, &name, target, format).map_err(|e| match e {
        // Refusals (a lock, no such image, a directory image) are said as they are.
        e @ (TransferError::Store(_)
        | TransferError::NotRaw { .. }
        | TransferError::OutputExists { .. }) => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("cannot export {name} to {shown}")),
    })?;
    ctx.out.info(&format!(
        "Exported {name} to {shown} ({} format).",
        format.name()
    ));
    Ok(0)
}

/// For a raw image, its file systems mounted (see [`image::mount_image`]) where the runner,
/// `show` or `export-tar` can read them; `None` for a directory image. The mounts last until
/// this process ends.
pub(crate) fn mount_for_run(
    ctx: &Context,
    image: &crate::store::Image,
    read_only: bool,
) -> anyhow::Result<Option<image::MountedImage>> {
    if image.kind() != ImageKind::Raw {
        return Ok(None);
    }
    let base = ctx.global.state_dir.join("raw-mounts");
    // As systemd's SYSTEMD_LOOP_DIRECT_IO: direct I/O unless the environment says 0.
    let direct_io = std::env::var_os("RMACH_LOOP_DIRECT_IO").is_none_or(|v| v != "0");
    let mounted = image::mount_image(image.path(), &base, read_only, direct_io)
        .with_context(|| format!("cannot mount the raw image {}", image.name()))?;
    for skipped in mounted.skipped() {
        ctx.out.warn(skipped);
    }
    Ok(Some(mounted))
}

/// The os-release of a raw image, read from its root file system mounted read-only; `None`
/// for directory images (the store reads theirs) and for disks rmach cannot mount.
pub(super) fn os_release(
    ctx: &Context,
    image: &crate::store::Image,
) -> Option<crate::store::OsRelease> {
    let mounted = mount_for_run(ctx, image, true).ok()??;
    crate::store::os_release(mounted.root())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ImageFormat {
    Directory,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FsArg {
    Ext4,
    Btrfs,
    Xfs,
    Erofs,
}

/// `--format raw [--size S] [--fs FS]` for the verbs that build a tree.
#[derive(Debug, clap::Args)]
pub(crate) struct DiskArgs {
    /// Store a directory tree (default) or a raw disk: GPT with a discoverable root partition
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) format: Option<ImageFormat>,
    /// With --format raw: the disk's size (bytes or with K, M, G, T; default: the tree's size, a
    /// quarter more, and 64M)
    #[arg(long, value_name = "SIZE")]
    pub(crate) size: Option<String>,
    /// With --format raw: the root file system (default ext4)
    #[arg(long, value_enum, value_name = "FS")]
    pub(crate) fs: Option<FsArg>,
}

/// The disk `--format raw [--size S] [--fs FS]` asks for; None for a directory image.
pub(crate) fn disk_spec(args: &DiskArgs) -> anyhow::Result<Option<DiskSpec>> {
    let raw = args.format == Some(ImageFormat::Raw);
    if !raw && (args.size.is_some() || args.fs.is_some()) {
        return Err(UsageError("--size and --fs need --format raw".into()).into());
    }
    let size = args
        .size
        .as_deref()
        .map(crate::runner::parse_size)
        .transpose()
        .map_err(super::output::invalid)?;
    let fs = match args.fs.unwrap_or(FsArg::Ext4) {
        FsArg::Ext4 => DiskFs::Ext4,
        FsArg::Btrfs => DiskFs::Btrfs,
        FsArg::Xfs => DiskFs::Xfs,
        FsArg::Erofs => DiskFs::Erofs,
    };
    Ok(raw.then_some(DiskSpec { fs, size }))
}

/// A new image built from a tree, as `--format` says: a directory, or a raw disk built
/// from the tree at commit.
pub(crate) fn tree_target(
    store: &Store,
    name: &ImageName,
    purpose: LockPurpose,
    force: bool,
    args: &DiskArgs,
) -> anyhow::Result<TreeTarget> {
    let disk = disk_spec(args)?;
    Ok(TreeTarget::create(store, name, purpose, force, disk)?)
}
