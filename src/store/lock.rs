//! Image locks. An operation on image NAME holds, for its whole length:
//!
//! - rmach's own lock `STATE/locks/NAME.lock`, with the holder's PID and [`LockPurpose`]
//!   written inside so a refused second operation can name them;
//! - systemd's image locks, as systemd-nspawn and machinectl take them: `STORE/.#NAME.lck`
//!   (and `.#NAME.raw.lck`), plus `/run/systemd/nspawn/locks/inode-DEV:INO` of an existing
//!   image where that directory exists (taken by a running machine, as nspawn takes it;
//!   checked, not created, by short operations). A shared lock for operations that only read the image
//!   (export, the source of a clone), an exclusive one otherwise, as nspawn does with and
//!   without `--read-only`.
//!
//! All are open file description locks (`F_OFD_SETLK`, what systemd uses; `flock` would not
//! conflict with them). Each lock file is created on demand and unlinked by its last exclusive
//! holder when released; an acquirer that finds its file unlinked under it tries again.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::IoContext;
use super::layout::Layout;
use super::{ImageName, StoreError};
use crate::sys::ofd::{self, Conflict};

/// Where systemd-nspawn keeps its global (device and inode) image locks.
const NSPAWN_LOCKS: &str = "/run/systemd/nspawn/locks";

/// Why an image is locked. `is_running` is what `list` calls running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockPurpose {
    Run,
    Boot,
    Import,
    Bootstrap,
    Pull,
    Export,
    Remove,
    Rename,
    /// The source of a clone.
    Clone,
    /// A new image made from another (the destination of a clone).
    Create,
    /// Flags or settings changed.
    Modify,
    /// Held by another program through systemd's image locks: systemd-nspawn running the image
    /// (machinectl and machined hold them only for a moment).
    Foreign,
}

const PURPOSES: [LockPurpose; 12] = [
    LockPurpose::Run,
    LockPurpose::Boot,
    LockPurpose::Import,
    LockPurpose::Bootstrap,
    LockPurpose::Pull,
    LockPurpose::Export,
    LockPurpose::Remove,
    LockPurpose::Rename,
    LockPurpose::Clone,
    LockPurpose::Create,
    LockPurpose::Modify,
    LockPurpose::Foreign,
];

impl LockPurpose {
    /// The word written in rmach's lock file and in JSON (`lock.verb`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LockPurpose::Run => "run",
            LockPurpose::Boot => "booted",
            LockPurpose::Import => "imported",
            LockPurpose::Bootstrap => "bootstrapped",
            LockPurpose::Pull => "pulled",
            LockPurpose::Export => "exported",
            LockPurpose::Remove => "removed",
            LockPurpose::Rename => "renamed",
            LockPurpose::Clone => "cloned",
            LockPurpose::Create => "created",
            LockPurpose::Modify => "modified",
            LockPurpose::Foreign => "foreign",
        }
    }

    fn parse(word: &str) -> Option<LockPurpose> {
        PURPOSES.into_iter().find(|p| p.as_str() == word)
    }

    /// Whether a holder with this purpose means the image is running.
    pub(crate) fn is_running(self) -> bool {
        matches!(
            self,
            LockPurpose::Run | LockPurpose::Boot | LockPurpose::Foreign
        )
    }

    /// Operations that only read the image share systemd's lock (as `nspawn --read-only`).
    fn reads_only(self) -> bool {
        matches!(self, LockPurpose::Export | LockPurpose::Clone)
    }

    fn doing(self) -> &'static str {
        match self {
            LockPurpose::Run | LockPurpose::Boot => "running",
            LockPurpose::Import => "being imported",
            LockPurpose::Bootstrap => "being bootstrapped",
            LockPurpose::Pull => "being pulled",
            LockPurpose::Export => "being exported",
            LockPurpose::Remove => "being removed",
            LockPurpose::Rename => "being renamed",
            LockPurpose::Clone => "being cloned",
            LockPurpose::Create => "being created",
            LockPurpose::Modify => "being modified",
            LockPurpose::Foreign => "in use",
        }
    }
}

impl serde::Serialize for LockPurpose {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Who holds an image's lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    /// The holder's PID, when known (rmach writes it; another program's is looked up in /proc).
    pub(crate) pid: Option<u32>,
    #[serde(rename = "verb")]
    pub(crate) purpose: LockPurpose,
    /// The holding program's name (`rmach`, `systemd-nspawn`), when known.
    pub(crate) program: Option<String>,
}

impl fmt::Display for LockHolder {
    /// `being exported by PID 4242`, `running (PID 4242)`, `in use by systemd-nspawn (PID 7)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let doing = self.purpose.doing();
        match (self.purpose, &self.program, self.pid) {
            (LockPurpose::Foreign, Some(program), Some(pid)) => {
                write!(f, "{doing} by {program} (PID {pid})")
            }
            (LockPurpose::Foreign, Some(program), None) => write!(f, "{doing} by {program}"),
            (LockPurpose::Foreign, None, _) => write!(f, "{doing} by another program"),
            (p, _, Some(pid)) if p.is_running() => write!(f, "{doing} (PID {pid})"),
            (_, _, Some(pid)) => write!(f, "{doing} by PID {pid}"),
            (_, _, None) => f.write_str(doing),
        }
    }
}

/// One held lock file; unlinked on release when no one else shares it.
#[derive(Debug)]
struct Held {
    file: File,
    path: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        // A shared holder becomes the last one if it can take the lock exclusively.
        if ofd::try_lock(&self.file, true).unwrap_or(false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A held lock on an image name; released (and its files removed) when dropped.
#[derive(Debug)]
pub struct NameLock {
    // Held only to be released on drop, fields in order: systemd's locks, then rmach's.
    _image: Vec<Held>,
    _state: Held,
}

impl NameLock {
    pub(crate) fn acquire(
        state_dir: &Path,
        layout: &Layout,
        name: &ImageName,
        purpose: LockPurpose,
        image_path: Option<&Path>,
        shared: bool,
    ) -> Result<NameLock, StoreError> {
        let busy = |holder: LockHolder| StoreError::Busy {
            name: name.to_string(),
            holder,
        };
        let path = state_path(state_dir, name.as_str());
        let mut state = match take(&path, true)? {
            Ok(held) => held,
            Err(mut file) => return Err(busy(rmach_holder(&mut file))),
        };
        state.file.set_len(0).at(&path)?;
        writeln!(state.file, "{} {}", std::process::id(), purpose.as_str()).at(&path)?;
        let mut image = Vec::new();
        let exclusive = !(shared || purpose.reads_only());
        let global = image_path.and_then(global_lock_path);
        // nspawn's global lock is taken by a running machine (as nspawn takes it); a short
        // operation only honours it, so that a killed export or clone leaves nothing in /run.
        if let Some(path) = global.as_ref().filter(|_| !purpose.is_running()) {
            if conflicts(path, exclusive) {
                return Err(busy(foreign_holder(path)));
            }
        }
        let mut paths = layout.lock_paths(name).to_vec();
        paths.extend(global.filter(|_| purpose.is_running()));
        for path in paths {
            match take(&path, exclusive) {
                Ok(Ok(held)) => image.push(held),
                Ok(Err(_)) => return Err(busy(foreign_holder(&path))),
                // A read-only store: nothing can change the image, a shared lock is moot.
                Err(_) if !exclusive => {}
                Err(e) => return Err(e),
            }
        }
        Ok(NameLock {
            _image: image,
            _state: state,
        })
    }
}

pub(crate) fn state_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("locks").join(format!("{name}.lock"))
}

/// nspawn's global lock of an existing image: by device and inode, so a tree reached through
/// another path (a bind mount) is the same image. Only where nspawn's directory exists.
pub(crate) fn global_lock_path(image: &Path) -> Option<PathBuf> {
    if !Path::new(NSPAWN_LOCKS).is_dir() {
        return None;
    }
    let meta = std::fs::metadata(image).ok()?;
    Some(Path::new(NSPAWN_LOCKS).join(format!("inode-{}:{}", meta.dev(), meta.ino())))
}

/// Creates and locks `path` without waiting; when another holder has it, the open file (to
/// read who). A file unlinked by its previous holder between our open and our lock is useless:
/// open it again.
fn take(path: &Path, exclusive: bool) -> Result<Result<Held, File>, StoreError> {
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)
            .at(path)?;
        if !ofd::try_lock(&file, exclusive).at(path)? {
            return Ok(Err(file));
        }
        if file.metadata().at(path)?.nlink() > 0 {
            return Ok(Ok(Held {
                file,
                path: path.to_path_buf(),
            }));
        }
    }
}

/// Removes a lock file nobody holds (left by a process that was killed); true if removed.
/// Taking it first keeps this safe against a concurrent acquirer, which re-checks the link.
pub(crate) fn remove_if_free(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) || !ofd::try_lock(&file, true).unwrap_or(false) {
        return false;
    }
    std::fs::remove_file(path).is_ok()
}

/// Whether an existing lock file is held in a way that conflicts with taking it (`exclusive`:
/// any holder; shared: an exclusive holder).
fn conflicts(path: &Path, exclusive: bool) -> bool {
    let Some(file) = held(path) else {
        return false;
    };
    exclusive || ofd::conflict(&file).is_ok_and(|c| c == Conflict::Exclusive)
}

/// Whether an existing lock file is held by someone (None when absent or free).
fn held(path: &Path) -> Option<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    match ofd::conflict(&file) {
        Ok(Conflict::Shared | Conflict::Exclusive) => Some(file),
        _ => None,
    }
}

/// The holder of an image's locks, or None when nobody holds them. rmach's own lock names
/// the purpose; systemd's alone mean another program (nspawn) has the image.
pub(crate) fn holder(
    state_dir: &Path,
    layout: &Layout,
    name: &str,
    image_path: Option<&Path>,
) -> Option<LockHolder> {
    let path = state_path(state_dir, name);
    if let Some(mut file) = held(&path) {
        return Some(rmach_holder(&mut file));
    }
    let name = ImageName::parse(name).ok()?;
    let mut paths = layout.lock_paths(&name).to_vec();
    paths.extend(image_path.and_then(global_lock_path));
    paths
        .iter()
        .find(|p| held(p).is_some())
        .map(|p| foreign_holder(p))
}

/// Reads "PID PURPOSE" from rmach's lock file, through the descriptor that found it held (the
/// holder may unlink the path meanwhile); it may not have written it yet, so wait a little.
fn rmach_holder(file: &mut File) -> LockHolder {
    for _ in 0..50 {
        let mut text = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        if let Some((pid, purpose)) = text.trim_end().split_once(' ') {
            if let (Ok(pid), Some(purpose)) = (pid.parse(), LockPurpose::parse(purpose)) {
                return LockHolder {
                    pid: Some(pid),
                    purpose,
                    program: Some("rmach".into()),
                };
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    LockHolder {
        pid: None,
        purpose: LockPurpose::Foreign,
        program: Some("rmach".into()),
    }
}

/// Another program's hold on a systemd lock file: found by the open file in /proc (OFD locks
/// carry no PID).
fn foreign_holder(path: &Path) -> LockHolder {
    let target = path
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .map(|d| d.join(path.file_name().unwrap_or_default()));
    let me = std::process::id();
    let pid = target.and_then(|target| {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|proc_entry| {
                let pid: u32 = proc_entry.file_name().to_str()?.parse().ok()?;
                if pid == me {
                    return None;
                }
                let fds = std::fs::read_dir(proc_entry.path().join("fd")).ok()?;
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == target))
                    .then_some(pid)
            })
    });
    LockHolder {
        pid,
        purpose: LockPurpose::Foreign,
        program: pid.and_then(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|c| c.trim().to_string())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip_through_their_words() {
        for p in PURPOSES {
            assert_eq!(LockPurpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(LockPurpose::parse("running"), None);
    }

    #[test]
    fn holders_read_as_sentences() {
        let h = |pid, purpose, program: Option<&str>| LockHolder {
            pid,
            purpose,
            program: program.map(String::from),
        };
        assert_eq!(
            h(Some(42), LockPurpose::Export, Some("rmach")).to_string(),
            "being exported by PID 42"
        );
        assert_eq!(
            h(Some(42), LockPurpose::Boot, Some("rmach")).to_string(),
            "running (PID 42)"
        );
        assert_eq!(
            h(Some(7), LockPurpose::Foreign, Some("systemd-nspawn")).to_string(),
            "in use by systemd-nspawn (PID 7)"
        );
        assert_eq!(
            h(None, LockPurpose::Foreign, None).to_string(),
            "in use by another program"
        );
    }

    #[test]
    fn lock_files_go_away_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(dir.path().join("locks")).unwrap();
        std::fs::create_dir(&store).unwrap();
        let layout = Layout::new(&store);
        let name = ImageName::parse("x").unwrap();
        let lock = NameLock::acquire(dir.path(), &layout, &name, LockPurpose::Export, None, false)
            .unwrap();
        assert!(store.join(".#x.lck").exists());
        let h = holder(dir.path(), &layout, "x", None).unwrap();
        assert_eq!(
            (h.pid, h.purpose),
            (Some(std::process::id()), LockPurpose::Export)
        );
        let again = NameLock::acquire(dir.path(), &layout, &name, LockPurpose::Remove, None, false);
        assert!(matches!(again, Err(StoreError::Busy { .. })));
        drop(lock);
        assert!(holder(dir.path(), &layout, "x", None).is_none());
        let left: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .chain(std::fs::read_dir(dir.path().join("locks")).unwrap())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
