//! What the import verbs share on the command line: the image name (NAME, or the file's name
//! without its suffixes; `-` needs NAME), `--sha256 HEX`, opening FILE or standard input, and
//! the one-line failure that says nothing was imported.

use std::fs::File;
use std::path::Path;

use anyhow::Context as _;

use super::output::UsageError;
use crate::store::{name_from_path, ImageName};
use crate::transfer::{ImportRequest, TransferError};

/// What every verb that makes a new image from outside the store takes about it.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct NewImageArgs {
    /// Replace an existing image of that name
    #[arg(long)]
    pub(crate) force: bool,
    /// Mark the new image read-only
    #[arg(long)]
    pub(crate) read_only: bool,
}

/// The options import-tar and import-raw share after FILE.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The image name (default: the file's name without its suffixes)
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) new: NewImageArgs,
    /// Refuse the input unless its SHA-256 is HEX
    #[arg(long, value_name = "HEX")]
    pub(crate) sha256: Option<String>,
}

impl ImportArgs {
    /// The request for importing `file` with these options.
    pub(crate) fn request(&self, verb: &str, file: &Path) -> anyhow::Result<ImportRequest> {
        Ok(ImportRequest {
            name: image_name(verb, file, self.name.as_deref())?,
            force: self.new.force,
            read_only: self.new.read_only,
            sha256: parse_sha256(self.sha256.as_deref())?,
        })
    }
}

/// The input of an import: standard input, or an opened file that is not a directory.
pub(crate) struct Input {
    /// None for standard input.
    pub(crate) file: Option<File>,
    /// The file's length when it is a regular file.
    pub(crate) len: Option<u64>,
    /// How messages name it.
    pub(crate) shown: String,
}

/// The image name for `verb FILE [NAME]`.
fn image_name(verb: &str, file: &Path, name: Option<&str>) -> anyhow::Result<ImageName> {
    match name {
        Some(name) => Ok(ImageName::parse(name)?),
        None if file.as_os_str() == "-" => Err(UsageError(format!(
            "reading from - needs an explicit NAME: rmach {verb} - NAME"
        ))
        .into()),
        None => Ok(name_from_path(file)?),
    }
}

fn parse_sha256(hex_str: Option<&str>) -> anyhow::Result<Option<[u8; 32]>> {
    let Some(hex_str) = hex_str else {
        return Ok(None);
    };
    let bytes = hex::decode(hex_str.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    match bytes {
        Some(bytes) => Ok(Some(bytes)),
        None => {
            Err(UsageError(format!("--sha256 {hex_str:?} is not 64 hexadecimal digits")).into())
        }
    }
}

/// Opens `file` (`-`: standard input); a directory is refused with `not_a_dir`'s advice.
pub(crate) fn open(file: &Path, not_a_dir: &str) -> anyhow::Result<Input> {
    if file.as_os_str() == "-" {
        return Ok(Input {
            file: None,
            len: None,
            shown: "standard input".into(),
        });
    }
    let shown = file.display().to_string();
    let opened = File::open(file).with_context(|| format!("cannot open {shown}"))?;
    let meta = opened
        .metadata()
        .with_context(|| format!("cannot open {shown}"))?;
    if meta.is_dir() {
        anyhow::bail!("{shown} is a directory, {not_a_dir}");
    }
    Ok(Input {
        file: Some(opened),
        len: meta.is_file().then_some(meta.len()),
        shown,
    })
}

/// An import's failure, said as `cannot import FILE as NAME; nothing was imported: ...`
/// unless the store refused before anything began (a lock, an existing image).
pub(crate) fn failed(err: TransferError, shown: &str, name: &ImageName) -> anyhow::Error {
    match err {
        TransferError::Store(e) => e.into(),
        e => anyhow::Error::new(e).context(format!(
            "cannot import {shown} as {name}; nothing was imported"
        )),
    }
}
