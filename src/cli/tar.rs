//! import-tar and export-tar: names, files, locks, progress and messages around the archive
//! library. The archive module does the tar work; the store does staging and commit.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::output::UsageError;
use super::{Context, Status};
use crate::archive::{
    self, Compression, Decoder, Encoder, ExtractOptions, ThreadedWriter, WriteOptions,
};
use crate::store::{name_from_path, ImageName};

#[derive(Debug, clap::Args)]
pub struct ImportTarArgs {
    /// The tarball, or - for standard input (compression is detected by content)
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
    #[command(flatten)]
    pub disk: super::raw::DiskArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TarFormat {
    Uncompressed,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

#[derive(Debug, clap::Args)]
pub struct ExportTarArgs {
    /// The image to export
    pub name: String,
    /// The output file, or - for standard output (default: standard output)
    pub file: Option<PathBuf>,
    /// Compression (default: from the file's suffix)
    #[arg(long)]
    pub format: Option<TarFormat>,
    /// Compression level
    #[arg(long)]
    pub level: Option<i32>,
    /// Compression threads (default: all cores)
    #[arg(long)]
    pub threads: Option<u32>,
    /// Replace an existing output file
    #[arg(long)]
    pub force: bool,
}

pub fn import_tar(ctx: &Context, args: ImportTarArgs) -> anyhow::Result<Status> {
    let stdin = args.file.as_os_str() == "-";
    let name = match (&args.name, stdin) {
        (Some(name), _) => ImageName::parse(name)?,
        (None, true) => {
            return Err(UsageError(
                "reading from - needs an explicit NAME: rmach import-tar - NAME".into(),
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
    let (input, total): (Box<dyn Read + Send>, Option<u64>) = if stdin {
        (Box::new(std::io::stdin()), None)
    } else {
        let file = File::open(&args.file).with_context(|| format!("cannot open {shown}"))?;
        let meta = file
            .metadata()
            .with_context(|| format!("cannot open {shown}"))?;
        if meta.is_dir() {
            anyhow::bail!(
                "{shown} is a directory, not a tarball; import a directory with import-fs"
            );
        }
        let len = meta.is_file().then_some(meta.len());
        (Box::new(file), len)
    };
    let store = ctx.store()?;
    let staging = super::raw::TreeTarget::create(
        &store,
        &name,
        crate::store::LockPurpose::Import,
        args.force,
        &args.disk,
    )?;
    let bar = ctx.out.progress(total, &format!("Importing {name}"));
    let counted = Counted {
        inner: input,
        bar: bar.clone(),
    };
    let fail = || format!("cannot import {shown} as {name}; nothing was imported");
    let mut decoder = Decoder::spawn(counted, want.is_some()).with_context(fail)?;
    ctx.out.verbose(&format!(
        "{shown}: {} tar archive",
        decoder.compression().name()
    ));
    let extracted = archive::extract(
        &mut decoder,
        staging.tree(),
        &ExtractOptions::default(),
        None,
    );
    // After a failure the decoder thread may be blocked reading a stalled pipe: let it go
    // rather than wait for it.
    let digest = match &extracted {
        Ok(_) => decoder.finish(),
        Err(_) => {
            drop(decoder);
            Ok(None)
        }
    };
    let stats = match extracted {
        Err(e) if e.is_no_space() => {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: the store {} is full",
                fail(),
                ctx.global.store.display()
            )))
        }
        other => other.with_context(fail)?,
    };
    let digest = digest.with_context(fail)?;
    if let (Some(want), Some(got)) = (want, digest) {
        if want != got {
            anyhow::bail!(
                "{}: its SHA-256 is {} but --sha256 says {}",
                fail(),
                hex::encode(got),
                hex::encode(want)
            );
        }
    }
    for w in &stats.warnings {
        ctx.out.warn(w);
    }
    if let Some(top) = archive::strip_single_top_dir(staging.tree()).with_context(fail)? {
        ctx.out.verbose(&format!(
            "{shown}: using its single top-level directory {:?} as the root",
            top
        ));
    }
    staging.commit(None, args.read_only).with_context(fail)?;
    bar.finish_and_clear();
    ctx.out
        .info(&format!("Imported {name} ({} members).", stats.members));
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

pub fn export_tar(ctx: &Context, args: ExportTarArgs) -> anyhow::Result<Status> {
    let name = ImageName::parse(&args.name)?;
    let to_stdout = args.file.as_ref().is_none_or(|f| f.as_os_str() == "-");
    let format = match (args.format, &args.file) {
        (Some(f), _) => compression(f),
        (None, Some(file)) if !to_stdout => Compression::from_file_name(file.as_os_str().as_bytes()).ok_or_else(|| {
            UsageError(format!(
                "cannot tell the compression from the name {}; use a .tar, .tar.gz, .tar.zst, .tar.xz or .tar.bz2 suffix or --format",
                file.display()
            ))
        })?,
        _ => Compression::None,
    };
    if let Some(level) = args.level {
        let range = match format {
            Compression::None => None,
            Compression::Gzip | Compression::Xz => Some(0..=9),
            Compression::Zstd => Some(zstd::compression_level_range()),
            Compression::Bzip2 => Some(1..=9),
        };
        match range {
            Some(r) if !r.contains(&level) => {
                return Err(UsageError(format!(
                    "--level {level} is out of range for {}: use {} to {}",
                    format.name(),
                    r.start(),
                    r.end()
                ))
                .into())
            }
            None => {
                return Err(
                    UsageError("--level needs a compressed --format or file suffix".into()).into(),
                )
            }
            _ => {}
        }
    }
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write an archive to a terminal; give a FILE or redirect standard output"
                .into(),
        )
        .into());
    }
    let store = ctx.store()?;
    // Held for the whole export: a machine running from this image (lock "run"/"booted"),
    // or any other operation on it, makes the export fail at once instead of tearing.
    let _lock = store.lock(&name, crate::store::LockPurpose::Export)?;
    let image = store.image(&name)?;
    // A raw image's tree is read from its file systems, mounted read-only for this process.
    let mounted = super::raw::mount_for_run(ctx, &image, true)?;
    let tree = mounted.as_ref().map_or(image.path(), |m| m.root());
    let threads = args.threads.unwrap_or(0);
    let mut output = match args.file.as_deref().filter(|_| !to_stdout) {
        Some(path) => Output::File(TempOutput::create(path, args.force)?),
        None => Output::Stdout,
    };
    let shown = args
        .file
        .as_ref()
        .filter(|_| !to_stdout)
        .map(|p| p.display().to_string())
        .unwrap_or("standard output".into());
    let fail = || format!("cannot export {name} to {shown}");
    let writer: Box<dyn Write + Send> = match &output {
        Output::File(t) => Box::new(t.file.try_clone().with_context(fail)?),
        Output::Stdout => Box::new(std::io::stdout()),
    };
    let buffered = std::io::BufWriter::with_capacity(1 << 20, writer);
    let encoder = Encoder::new(buffered, format, args.level, threads).with_context(fail)?;
    // The tree is read on this thread and compressed on another, as `tar | zstd` does.
    let mut encoder = ThreadedWriter::new(encoder).with_context(fail)?;
    let bar = ctx.out.progress(None, &format!("Exporting {name}"));
    let progress = |bytes: u64| bar.set_position(bytes);
    let mut warn = |msg: String| ctx.out.warn(&msg);
    let stats = archive::write_tree(
        tree,
        &mut encoder,
        &WriteOptions::default(),
        &mut warn,
        Some(&progress),
    )
    .with_context(fail)?;
    let encoder = encoder.finish().with_context(fail)?;
    let mut buffered = encoder.finish().with_context(fail)?;
    buffered.flush().with_context(fail)?;
    drop(buffered);
    if let Output::File(t) = &mut output {
        t.commit().with_context(fail)?;
    }
    bar.finish_and_clear();
    ctx.out.info(&format!(
        "Exported {name} to {shown} ({} members, {} format).",
        stats.members,
        format.name()
    ));
    Ok(0)
}

enum Output {
    File(TempOutput),
    Stdout,
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
