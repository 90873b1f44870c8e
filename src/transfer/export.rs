//! export-tar's orchestration: an image out as a (compressed) tar stream, into a file that
//! appears only when complete, or into any writer.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::TransferError;
use crate::archive::{self, Compression};
use crate::store::{ImageName, LockPurpose, Store};

#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub name: ImageName,
    pub format: Compression,
    /// The compressor's level; `None` takes the tool's default.
    pub level: Option<i32>,
    /// Compression threads; 0 means all cores.
    pub threads: u32,
}

#[derive(Debug)]
pub struct Exported {
    pub members: u64,
}

/// Where the archive goes: a file (written beside it and renamed when complete) or a stream.
pub enum ExportTarget<'a> {
    File { path: &'a Path, force: bool },
    Stream(Box<dyn Write + Send>),
}

/// Writes image `req.name` as a tar archive. The image's lock is held throughout, so a running
/// machine or another operation on it makes the export fail at once instead of tearing.
pub fn export_tar(
    store: &Store,
    req: &ExportRequest,
    target: ExportTarget<'_>,
    warn: &mut dyn FnMut(String),
    progress: Option<&dyn Fn(u64)>,
) -> Result<Exported, TransferError> {
    let _lock = store.lock(&req.name, LockPurpose::Export)?;
    let image = store.image(&req.name)?;
    if !image.kind().is_tree() {
        return Err(TransferError::NotATree {
            name: req.name.to_string(),
        });
    }
    export_tree(image.path(), req, target, warn, progress)
}

/// The work of [`export_tar`] on a tree the caller holds (locked, perhaps mounted from a raw
/// image): `req.name` is only for messages.
pub fn export_tree(
    tree: &Path,
    req: &ExportRequest,
    target: ExportTarget<'_>,
    warn: &mut dyn FnMut(String),
    progress: Option<&dyn Fn(u64)>,
) -> Result<Exported, TransferError> {
    let (mut temp, writer): (Option<TempOutput>, Box<dyn Write + Send>) = match target {
        ExportTarget::File { path, force } => {
            let t = TempOutput::create(path, force)?;
            let w = t.file.try_clone().map_err(|e| t.fs_err("write", e))?;
            // Written back while the export runs, so the commit's fsync waits for the tail only.
            (Some(t), Box::new(archive::WritebackFile::new(w)))
        }
        ExportTarget::Stream(w) => (None, w),
    };
    let packing = archive::Packing {
        format: req.format,
        level: req.level,
        threads: req.threads,
    };
    let (_, members) = archive::write_compressed_tree(tree, writer, packing, warn, progress)
        .map_err(TransferError::Archive)?;
    if let Some(t) = &mut temp {
        t.commit()?;
    }
    Ok(Exported { members })
}

/// An output file written beside its target under a hidden name and renamed over it only when
/// complete; removed if the export fails or is interrupted (SIGINT, SIGTERM, SIGHUP).
pub struct TempOutput {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl TempOutput {
    pub fn create(target: &Path, force: bool) -> Result<TempOutput, TransferError> {
        if !force && target.symlink_metadata().is_ok() {
            return Err(TransferError::OutputExists {
                path: target.to_path_buf(),
            });
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = target.file_name().ok_or_else(|| TransferError::Fs {
            op: "write to",
            path: target.to_path_buf(),
            source: std::io::Error::other("it is not a file name"),
        })?;
        let mut temp_name = std::ffi::OsString::from(".#rmach-export-");
        temp_name.push(base);
        temp_name.push(format!(".{}", std::process::id()));
        let temp = dir.join(temp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| TransferError::Fs {
                op: "create",
                path: temp.clone(),
                source: e,
            })?;
        crate::sys::interrupt::remove_on_interrupt(&temp);
        Ok(TempOutput {
            file,
            temp,
            target: target.to_path_buf(),
            done: false,
        })
    }

    fn fs_err(&self, op: &'static str, e: std::io::Error) -> TransferError {
        TransferError::Fs {
            op,
            path: self.temp.clone(),
            source: e,
        }
    }

    pub fn commit(&mut self) -> Result<(), TransferError> {
        self.file.sync_all().map_err(|e| self.fs_err("write", e))?;
        std::fs::rename(&self.temp, &self.target).map_err(|e| TransferError::Fs {
            op: "rename the finished output to",
            path: self.target.clone(),
            source: e,
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
