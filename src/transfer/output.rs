//! An output file that appears only when complete: written beside its target under a hidden
//! name and renamed over it at the end, as every export verb writes its file.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::TransferError;

/// An output file written beside its target under a hidden name and renamed over it only when
/// complete; removed if the export fails or is interrupted (SIGINT, SIGTERM, SIGHUP).
pub(crate) struct TempOutput {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl TempOutput {
    pub(crate) fn create(target: &Path, force: bool) -> Result<TempOutput, TransferError> {
        if !force && target.symlink_metadata().is_ok() {
            return Err(TransferError::OutputExists {
                path: target.to_path_buf(),
            });
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = target
            .file_name()
            .ok_or_else(|| TransferError::NotAFileName {
                path: target.to_path_buf(),
            })?;
        let mut temp_name = std::ffi::OsString::from(".#rmach-export-");
        temp_name.push(base);
        temp_name.push(format!(".{}", std::process::id()));
        let temp = dir.join(temp_name);
        let file = std::fs::OpenOptions::new()
            .read(true)
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

    /// The open temporary file, to write the output into.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn fs_err(&self, op: &'static str, e: std::io::Error) -> TransferError {
        TransferError::Fs {
            op,
            path: self.temp.clone(),
            source: e,
        }
    }

    pub(crate) fn commit(&mut self) -> Result<(), TransferError> {
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
