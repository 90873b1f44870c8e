//! import-tar and export-tar.

use std::path::PathBuf;

use super::{Context, Status};

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

pub fn import_tar(_ctx: &Context, _args: ImportTarArgs) -> anyhow::Result<Status> {
    anyhow::bail!("import-tar is not implemented yet")
}

pub fn export_tar(_ctx: &Context, _args: ExportTarArgs) -> anyhow::Result<Status> {
    anyhow::bail!("export-tar is not implemented yet")
}
