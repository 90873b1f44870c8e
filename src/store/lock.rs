//! Per-name locks in `STATE/locks/NAME.lock`: `flock` held for the whole operation, with the
//! holder's PID and verb written inside so a refused second operation can name them.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use super::error::IoContext;
use super::{ImageName, StoreError};

/// A held lock on an image name; released when dropped.
#[derive(Debug)]
pub struct NameLock {
    file: File,
    path: PathBuf,
}

/// Who holds a lock, as written in its file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    pub pid: u32,
    pub verb: String,
}

pub(crate) fn lock_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{name}.lock"))
}

impl NameLock {
    pub(crate) fn acquire(
        state_dir: &Path,
        name: &ImageName,
        verb: &str,
    ) -> Result<NameLock, StoreError> {
        let path = lock_path(state_dir, name.as_str());
        let mut file = open_lock_file(&path)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                file.set_len(0).at(&path)?;
                file.rewind().at(&path)?;
                writeln!(file, "{} {}", std::process::id(), verb).at(&path)?;
                Ok(NameLock { file, path })
            }
            Err(Errno::WOULDBLOCK) => {
                let holder = read_holder(&mut file).unwrap_or(LockHolder {
                    pid: 0,
                    verb: "used".into(),
                });
                Err(StoreError::Busy {
                    name: name.to_string(),
                    verb: holder.verb,
                    pid: holder.pid,
                })
            }
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        // Cleared while still held, so nobody reads a finished holder as the current one.
        let _ = self.file.set_len(0);
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)
}

/// The holder of a name's lock, or None when nobody holds it.
pub(crate) fn holder(state_dir: &Path, name: &str) -> Option<LockHolder> {
    let path = lock_path(state_dir, name);
    let mut file = File::open(&path).ok()?;
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => None,
        Err(_) => Some(read_holder(&mut file).unwrap_or(LockHolder {
            pid: 0,
            verb: "used".into(),
        })),
    }
}

/// Reads "PID VERB"; the holder may not have written it yet, so wait a little for it.
fn read_holder(file: &mut File) -> Option<LockHolder> {
    for _ in 0..50 {
        let mut text = String::new();
        file.rewind().ok()?;
        file.read_to_string(&mut text).ok()?;
        if let Some((pid, verb)) = text.trim_end().split_once(' ') {
            if let Ok(pid) = pid.parse() {
                return Some(LockHolder {
                    pid,
                    verb: verb.to_string(),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}
