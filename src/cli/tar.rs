//! import-tar and export-tar: arguments, names, files, progress and messages around
//! [`crate::transfer`], which does the import and export (staging, digests, output files).

use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context as _;

use super::output::UsageError;
use super::{Context, Status};
use crate::archive::{Compression, Packing};
use crate::store::ImageName;
use crate::transfer;

#[derive(Debug, clap::Args)]
pub(crate) struct ImportTarArgs {
    /// The tarball, or - for standard input (compression is detected by content)
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) import: super::import::ImportArgs,
    #[command(flatten)]
    pub(crate) disk: super::raw::DiskArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TarFormat {
    Uncompressed,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExportTarArgs {
    /// The image to export
    pub(crate) name: String,
    /// The output file, or - for standard output (default: standard output)
    pub(crate) file: Option<PathBuf>,
    /// Compression (default: from the file's suffix)
    #[arg(long)]
    pub(crate) format: Option<TarFormat>,
    /// Compression level (zstd also takes negative fast levels: --level -5)
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) level: Option<i32>,
    /// Compression threads, 1 or more (default: all cores)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) threads: Option<u32>,
    /// Replace an existing output file
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn import_tar(ctx: &Context, args: ImportTarArgs) -> anyhow::Result<Status> {
    let req = args.import.request("import-tar", &args.file)?;
    let name = &req.name;
    let input = super::import::open(
        &args.file,
        "not a tarball; import a directory with import-fs",
    )?;
    let shown = &input.shown;
    let disk = super::raw::disk_spec(&args.disk)?;
    let store = ctx.store()?;
    let bar = ctx.out.progress(input.len, &format!("Importing {name}"));
    let counted = Counted {
        inner: match input.file {
            Some(file) => Box::new(file),
            None => Box::new(std::io::stdin()),
        },
        bar: bar.clone(),
    };
    let mut detected = |c: Compression| {
        ctx.out
            .verbose(&format!("{shown}: {} tar archive", c.name()))
    };
    // A directory image, or with --format raw a disk built from the extracted tree.
    let imported = transfer::import_tar(&store, counted, &req, disk, &mut detected)
        .map_err(|e| super::import::failed(e, shown, name))?;
    for w in &imported.warnings {
        ctx.out.warn(w);
    }
    if let Some(top) = &imported.lifted {
        ctx.out.verbose(&format!(
            "{shown}: used its single top-level directory {top:?} as the root"
        ));
    }
    bar.finish_and_clear();
    ctx.out
        .info(&format!("Imported {name} ({} members).", imported.members));
    Ok(0)
}

/// Counts input bytes for the progress bar (hidden unless stderr is a terminal).
struct Counted {
    inner: Box<dyn Read + Send>,
    bar: indicatif::ProgressBar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn compression(format: TarFormat) -> Compression {
    match format {
        TarFormat::Uncompressed => Compression::None,
        TarFormat::Gzip => Compression::Gzip,
        TarFormat::Zstd => Compression::Zstd,
        TarFormat::Xz => Compression::Xz,
        TarFormat::Bzip2 => Compression::Bzip2,
    }
}

pub(crate) fn export_tar(ctx: &Context, args: ExportTarArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let to_stdout = args.file.as_ref().is_none_or(|f| f.as_os_str() == "-");
    let file = args.file.as_deref().filter(|_| !to_stdout);
    let suffix = file.and_then(|f| Compression::from_file_name(f.as_os_str().as_bytes()));
    let format = match (args.format.map(compression), file, suffix) {
        (Some(f), Some(path), Some(s)) if f != s => {
            return Err(UsageError(format!(
                "--format {} does not match the name {}, which says {}; rename the file or drop --format",
                f.name(),
                path.display(),
                s.name()
            ))
            .into())
        }
        (Some(f), _, _) => f,
        (None, Some(_), Some(s)) => s,
        (None, Some(path), None) => {
            return Err(UsageError(format!(
                "cannot tell the compression from the name {}; use a .tar, .tar.gz, .tar.zst, .tar.xz or .tar.bz2 suffix or --format",
                path.display()
            ))
            .into())
        }
        (None, None, _) => Compression::None,
    };
    if let Some(level) = args.level {
        check_level(format, level)?;
    }
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write an archive to a terminal; give a FILE or redirect standard output"
                .into(),
        )
        .into());
    }
    // The temporary output is removed by the handler itself, so nothing is left to clean.
    crate::sys::interrupt::exit_on_interrupt(if to_stdout {
        "rmach: interrupted: the archive on standard output is incomplete\n"
    } else {
        "rmach: interrupted: the export was stopped and its partial output removed\n"
    })?;
    let store = ctx.store()?;
    // Held for the whole export: a machine running from this image (lock "run"/"booted"),
    // or any other operation on it, makes the export fail at once instead of tearing.
    // A machine started with `rmach start` is exported live instead: frozen (or snapshotted)
    // for a consistent tree, and thawed when the export ends (src/machine/live.rs).
    let hold =
        crate::machine::live::lock_or_freeze(&store, &name, crate::store::LockPurpose::Export)?;
    let image = store.image(&name)?;
    // A raw image's tree is read from its file systems, mounted read-only for this process.
    let mounted = super::raw::mount_for_run(ctx, &image, true)?;
    let shown = file
        .map(|p| p.display().to_string())
        .unwrap_or("standard output".into());
    let packing = Packing {
        format,
        level: args.level,
        threads: args.threads.unwrap_or(0),
    };
    let target = match file {
        Some(path) => transfer::ExportTarget::File {
            path,
            force: args.force,
        },
        None => transfer::ExportTarget::Stream(Box::new(std::io::stdout())),
    };
    let bar = ctx.out.progress(None, &format!("Exporting {name}"));
    let progress = |bytes: u64| bar.set_position(bytes);
    let mut warn = |msg: String| ctx.out.warn(&msg);
    if let Some(how) = hold.how() {
        ctx.out.verbose(how);
    }
    let tree = mounted
        .as_ref()
        .map_or(hold.source(image.path()), |m| m.root());
    let exported = transfer::export_tar(tree, packing, target, &mut warn, Some(&progress))
        .with_context(|| format!("cannot export {name} to {shown}"))?;
    bar.finish_and_clear();
    ctx.out.info(&format!(
        "Exported {name} to {shown} ({} members, {} format).",
        exported.members,
        format.name()
    ));
    Ok(0)
}

/// `--level` must be within the compressor's range (zstd's negative fast levels included).
fn check_level(format: Compression, level: i32) -> anyhow::Result<()> {
    let range = match format {
        Compression::None => {
            return Err(
                UsageError("--level needs a compressed --format or file suffix".into()).into(),
            )
        }
        Compression::Gzip | Compression::Xz => 0..=9,
        Compression::Zstd => zstd::compression_level_range(),
        Compression::Bzip2 => 1..=9,
    };
    if !range.contains(&level) {
        return Err(UsageError(format!(
            "--level {level} is out of range for {}: use {} to {}",
            format.name(),
            range.start(),
            range.end()
        ))
        .into());
    }
    Ok(())
}
