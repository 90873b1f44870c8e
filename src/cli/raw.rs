//! import-raw and export-raw: names, files, locks and messages around the image library,
//! which converts; the store stages and commits.

use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::output::UsageError;
use super::{Context, Status};
use crate::archive::Compression;
use crate::image::{self, DiskFs, ExportFormat, Source, Target};
use crate::store::{
    name_from_path, ImageKind, ImageName, LockPurpose, Staging, Store, TreeScratch,
};

#[derive(Debug, clap::Args)]
pub struct ImportRawArgs {
    /// The disk image (raw or qcow2, any compression), or - for standard input
    pub file: PathBuf,
    /// The image name (default: the file's name without its suffixes)
    pub name: Option<String>,
    /// Replace an existing image of that name
    #[arg(long)]
    pub force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub read_only: bool,
    /// Refuse the input unless its SHA-256 is HEX
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RawFormat {
    Raw,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
    Qcow2,
}

#[derive(Debug, clap::Args)]
pub struct ExportRawArgs {
    /// The image to export
    pub name: String,
    /// The output file, or - for standard output (default: standard output)
    pub file: Option<PathBuf>,
    /// Output format (default: from the file's suffix: .qcow2, .gz, .zst, .xz, .bz2, else raw)
    #[arg(long)]
    pub format: Option<RawFormat>,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

pub fn import_raw(ctx: &Context, args: ImportRawArgs) -> anyhow::Result<Status> {
    let stdin = args.file.as_os_str() == "-";
    let name = match (&args.name, stdin) {
        (Some(name), _) => ImageName::parse(name)?,
        (None, true) => {
            return Err(UsageError(
                "reading from - needs an explicit NAME: rmach import-raw - NAME".into(),
            )
            .into())
        }
        (None, false) => name_from_path(&args.file)?,
    };
    let want = args.sha256.as_deref().map(parse_sha256).transpose()?;
    let shown = if stdin {
        "standard input".to_string()
    } else {
        args.file.display().to_string()
    };
    let source = if stdin {
        Source::Stream(Box::new(std::io::stdin()))
    } else {
        let file = File::open(&args.file).with_context(|| format!("cannot open {shown}"))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot open {shown}"))?;
        if meta.is_dir() {
            anyhow::bail!("{shown} is a directory, not a disk image; import it with import-fs");
        }
        if meta.is_file() {
            Source::File(file)
        } else {
            Source::Stream(Box::new(file))
        }
    };
    let store = ctx.store()?;
    let staging = store.create(&name, LockPurpose::Import, ImageKind::Raw, args.force)?;
    let fail = || format!("cannot import {shown} as {name}; nothing was imported");
    let dest = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(staging.path())
        .with_context(fail)?;
    let report = match image::import_raw(source, &dest, store.root(), want.is_some()) {
        Err(e) if e.is_no_space() => {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: the store {} is full",
                fail(),
                ctx.global.store.display()
            )))
        }
        other => other.with_context(fail)?,
    };
    if let (Some(want), Some(got)) = (want, report.sha256) {
        if want != got {
            anyhow::bail!(
                "{}: its SHA-256 is {} but --sha256 says {}",
                fail(),
                hex::encode(got),
                hex::encode(want)
            );
        }
    }
    dest.sync_all().with_context(fail)?;
    drop(dest);
    staging.commit(args.read_only).with_context(fail)?;
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

fn parse_sha256(hex_str: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_str.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| {
        UsageError(format!("--sha256 {hex_str:?} is not 64 hexadecimal digits")).into()
    })
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

pub fn export_raw(ctx: &Context, args: ExportRawArgs) -> anyhow::Result<Status> {
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
    let _lock = store.lock(&name, LockPurpose::Export)?;
    let image = store.image(&name)?;
    if image.kind() != ImageKind::Raw {
        anyhow::bail!("image {name} is a directory tree; export it with export-tar");
    }
    let shown = path.map_or("standard output".into(), |p| p.display().to_string());
    let fail = || format!("cannot export {name} to {shown}");
    let source = File::open(image.path()).with_context(fail)?;
    let size = match path {
        Some(p) => {
            let mut out = TempOutput::create(p, args.force)?;
            image::export_raw(&source, Target::File(&out.file), format, 0).with_context(fail)?;
            out.commit().with_context(fail)?;
            0
        }
        None => image::export_raw(
            &source,
            // The descriptor itself: std's stdout scans every byte for newlines.
            Target::Stream(Box::new(File::from(
                std::os::fd::AsFd::as_fd(&std::io::stdout())
                    .try_clone_to_owned()
                    .with_context(fail)?,
            ))),
            format,
            0,
        )
        .with_context(fail)?,
    };
    let _ = size;
    ctx.out.info(&format!(
        "Exported {name} to {shown} ({} format).",
        format.name()
    ));
    Ok(0)
}

/// An output file written beside its target under a hidden name and renamed over it only when
/// complete; removed if the export fails.
struct TempOutput {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl TempOutput {
    fn create(target: &Path, force: bool) -> anyhow::Result<TempOutput> {
        if !force && target.symlink_metadata().is_ok() {
            anyhow::bail!(
                "{} already exists; use --force to replace it",
                target.display()
            );
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = target
            .file_name()
            .ok_or_else(|| UsageError(format!("{} is not a file name", target.display())))?;
        let mut temp_name = std::ffi::OsString::from(".#rmach-export-");
        temp_name.push(base);
        temp_name.push(format!(".{}", std::process::id()));
        let temp = dir.join(temp_name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        crate::sys::interrupt::remove_on_interrupt(&temp);
        Ok(TempOutput {
            file,
            temp,
            target: target.to_path_buf(),
            done: false,
        })
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("cannot write {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// For a raw image, its file systems mounted (see [`image::mount_image`]) where the runner,
/// `show` or `export-tar` can read them; `None` for a directory image. The mounts last until
/// this process ends.
pub fn mount_for_run(
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
pub fn os_release(ctx: &Context, image: &crate::store::Image) -> Option<crate::store::OsRelease> {
    let mounted = mount_for_run(ctx, image, true).ok()??;
    crate::store::os_release(mounted.root())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    Directory,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsArg {
    Ext4,
    Btrfs,
    Xfs,
    Erofs,
}

/// `--format raw [--size S] [--fs FS]` for the verbs that build a tree.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    /// Store a directory tree (default) or a raw disk: GPT with a discoverable root partition
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<ImageFormat>,
    /// With --format raw: the disk's size (bytes or with K, M, G, T; default: the tree's size, a
    /// quarter more, and 64M)
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// With --format raw: the root file system (default ext4)
    #[arg(long, value_enum, value_name = "FS")]
    pub fs: Option<FsArg>,
}

/// A new image being built from a tree: a directory staging, or for `--format raw` a raw
/// staging with a scratch directory for the tree, turned into a disk at commit.
pub struct TreeTarget {
    staging: Staging,
    scratch: Option<TreeScratch>,
    disk: Option<(DiskFs, Option<u64>)>,
    mount_base: PathBuf,
}

impl TreeTarget {
    pub fn create(
        store: &Store,
        name: &ImageName,
        purpose: LockPurpose,
        force: bool,
        args: &DiskArgs,
    ) -> anyhow::Result<TreeTarget> {
        let raw = args.format == Some(ImageFormat::Raw);
        if !raw && (args.size.is_some() || args.fs.is_some()) {
            return Err(UsageError("--size and --fs need --format raw".into()).into());
        }
        let size = args
            .size
            .as_deref()
            .map(crate::runner::parse_size)
            .transpose()
            .map_err(|e| UsageError(e.to_string()))?;
        let fs = match args.fs.unwrap_or(FsArg::Ext4) {
            FsArg::Ext4 => DiskFs::Ext4,
            FsArg::Btrfs => DiskFs::Btrfs,
            FsArg::Xfs => DiskFs::Xfs,
            FsArg::Erofs => DiskFs::Erofs,
        };
        let kind = if raw {
            ImageKind::Raw
        } else {
            ImageKind::Directory
        };
        let staging = store.create(name, purpose, kind, force)?;
        let scratch = if raw {
            Some(staging.tree_scratch()?)
        } else {
            None
        };
        Ok(TreeTarget {
            staging,
            scratch,
            disk: raw.then_some((fs, size)),
            mount_base: store.state_dir().join("raw-mounts"),
        })
    }

    /// Where to build the tree.
    pub fn tree(&self) -> &Path {
        self.scratch
            .as_ref()
            .map_or(self.staging.path(), |s| s.path())
    }

    pub fn is_raw(&self) -> bool {
        self.disk.is_some()
    }

    /// Builds the disk from `source` (default: [`TreeTarget::tree`]) when raw, then commits.
    pub fn commit(self, source: Option<&Path>, read_only: bool) -> anyhow::Result<()> {
        if let Some((fs, size)) = self.disk {
            let tree = source.unwrap_or(self.tree());
            let size = size.unwrap_or_else(|| image::default_size(tree, fs));
            let path = self.staging.path();
            let disk = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            image::build_disk(tree, &disk, path, size, fs, &self.mount_base).with_context(
                || {
                    format!(
                        "cannot build a {} disk of {size} bytes for {}",
                        fs.name(),
                        self.staging.name()
                    )
                },
            )?;
        }
        drop(self.scratch);
        Ok(self.staging.commit(read_only)?)
    }
}
