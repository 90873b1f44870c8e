//! Restoring a regular file's data and metadata by descriptor, and a small pool of writer
//! threads that does it off the reading thread: the reader creates each file (names, order and
//! safety stay on one thread) and hands the open descriptor with the file's bytes to a writer,
//! which writes them and restores owner → mode → xattrs (capabilities last) → mtime. So the
//! decompressor, the parser and the file system work at once, as `zstd -dc | tar -x` cannot.
//! Memory is bounded by the queue: at most [`QUEUE`] files of at most [`POOLED_MAX`] bytes.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::io::Errno;

use super::error::shown;
use super::ArchiveError;
use crate::fs::{Metadata, RestoreError, CAPABILITY_XATTR};

/// Files up to this size are handed to a writer with their bytes; larger ones are written by
/// the reading thread as they stream.
pub(crate) const POOLED_MAX: u64 = 1 << 20;
/// Files queued for the writers at most.
const QUEUE: usize = 16;

/// The metadata to restore on one member, resolved ahead (ids checked, ACL text converted,
/// capabilities last), with what names the member in messages.
pub(crate) struct Restore {
    pub(crate) meta: Metadata,
    /// The path in the tree, for errors, and the archive's name and offset, for warnings.
    pub(crate) rel: Vec<u8>,
    pub(crate) member: Vec<u8>,
    pub(crate) offset: u64,
}

impl Restore {
    /// An xattr the file system or kernel does not take (user.* on a symlink, say) is a
    /// warning naming the member; a capability never is.
    fn tolerate<'w>(
        &'w self,
        warnings: &'w mut Vec<String>,
    ) -> impl FnMut(&[u8], Errno) -> bool + 'w {
        move |name, e| {
            let ok = matches!(e, Errno::NOTSUP | Errno::PERM) && name != CAPABILITY_XATTR;
            if ok {
                // The member as the archive names it: the staging path means nothing to the user.
                warnings.push(format!(
                    "member {} (at byte {}): extended attribute {} not restored: {e}",
                    shown(&self.member),
                    self.offset,
                    shown(name)
                ));
            }
            ok
        }
    }

    fn error(&self, e: RestoreError) -> ArchiveError {
        let source = match &e.xattr {
            Some(name) => std::io::Error::other(format!("{}: {}", shown(name), e.source)),
            None => e.source.into(),
        };
        member_err(e.op, &self.rel, source)
    }

    /// Restores on the open file `fd`.
    pub(crate) fn on_fd(
        &self,
        fd: BorrowedFd<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ArchiveError> {
        let done = self.meta.restore_fd(fd, &mut self.tolerate(warnings));
        done.map_err(|e| self.error(e))
    }

    /// Restores on `name` in `dir` without following it.
    pub(crate) fn at(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        warnings: &mut Vec<String>,
    ) -> Result<(), ArchiveError> {
        let done = self
            .meta
            .restore_at(dir, name, &mut self.tolerate(warnings));
        done.map_err(|e| self.error(e))
    }
}

fn member_err(op: &'static str, rel: &[u8], e: impl Into<std::io::Error>) -> ArchiveError {
    ArchiveError::Member {
        op,
        member: if rel.is_empty() {
            "the root directory".into()
        } else {
            format!("member {}", shown(rel))
        },
        source: e.into(),
    }
}

/// One file for a writer: created and empty, its bytes, and what to restore.
pub(crate) struct FileJob {
    pub(crate) file: File,
    pub(crate) data: Vec<u8>,
    pub(crate) restore: Restore,
}

type Outcome = Result<Vec<String>, ArchiveError>;

pub(crate) struct WriterPool {
    jobs: Option<SyncSender<FileJob>>,
    outcomes: Receiver<Outcome>,
    workers: Vec<JoinHandle<()>>,
}

impl WriterPool {
    /// `writeback`: start each file's writeback once its data is written (see
    /// [`super::ExtractOptions::writeback`]).
    pub(crate) fn new(threads: usize, writeback: bool) -> Result<WriterPool, ArchiveError> {
        let (jobs, job_rx) = sync_channel::<FileJob>(QUEUE);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done, outcomes) = channel::<Outcome>();
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            let rx = Arc::clone(&job_rx);
            let tx: Sender<Outcome> = done.clone();
            let w = std::thread::Builder::new()
                .name("rmach-write".into())
                .spawn(move || work(rx, tx, writeback))
                .map_err(|e| ArchiveError::Write { source: e })?;
            workers.push(w);
        }
        Ok(WriterPool {
            jobs: Some(jobs),
            outcomes,
            workers,
        })
    }

    /// Queues a file (waiting while the queue is full); returns the warnings of files done
    /// since, or the first error a writer met.
    pub(crate) fn submit(&mut self, job: FileJob) -> Result<Vec<String>, ArchiveError> {
        let warnings = self.collect()?;
        let gone = || ArchiveError::Write {
            source: std::io::Error::other("a writer thread stopped"),
        };
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        Ok(warnings)
    }

    fn collect(&mut self) -> Result<Vec<String>, ArchiveError> {
        let mut warnings = Vec::new();
        while let Ok(outcome) = self.outcomes.try_recv() {
            warnings.extend(outcome?);
        }
        Ok(warnings)
    }

    /// Waits until every queued file is written and restored.
    pub(crate) fn finish(mut self) -> Result<Vec<String>, ArchiveError> {
        self.stop();
        self.collect()
    }

    fn stop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for WriterPool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn work(rx: Arc<Mutex<Receiver<FileJob>>>, tx: Sender<Outcome>, writeback: bool) {
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let mut warnings = Vec::new();
        let outcome = job
            .file
            .write_all(&job.data)
            .map_err(|e| member_err("write", &job.restore.rel, e))
            .inspect(|_| {
                if writeback {
                    // A hint: where it fails, the sync does the writing.
                    let _ = crate::sys::writeback::start(&job.file, 0, 0);
                }
            })
            .and_then(|_| job.restore.on_fd(job.file.as_fd(), &mut warnings))
            .map(|_| warnings);
        let failed = outcome.is_err();
        if (failed || outcome.as_ref().is_ok_and(|w| !w.is_empty())) && tx.send(outcome).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(file: File, data: &[u8], rel: &str) -> FileJob {
        FileJob {
            file,
            data: data.to_vec(),
            restore: Restore {
                meta: Metadata {
                    mode: Some(0o640),
                    mtime: (1_000_000_000, 5),
                    ..Metadata::default()
                },
                rel: rel.as_bytes().to_vec(),
                member: rel.as_bytes().to_vec(),
                offset: 0,
            },
        }
    }

    #[test]
    fn files_are_written_and_a_writer_error_surfaces() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let mut pool = WriterPool::new(2, true).unwrap();
        for i in 0..40 {
            let f = File::create(dir.path().join(format!("f{i}"))).unwrap();
            pool.submit(job(f, format!("data {i}").as_bytes(), "f"))
                .unwrap();
        }
        // A descriptor opened read-only: the writer's write fails.
        std::fs::write(dir.path().join("ro"), b"").unwrap();
        let ro = File::open(dir.path().join("ro")).unwrap();
        let _ = pool.submit(job(ro, b"x", "etc/ro"));
        let err = pool.finish().unwrap_err();
        assert!(err.to_string().contains("member \"etc/ro\""), "{err}");
        for i in 0..40 {
            let p = dir.path().join(format!("f{i}"));
            assert_eq!(std::fs::read(&p).unwrap(), format!("data {i}").as_bytes());
            let md = std::fs::metadata(&p).unwrap();
            assert_eq!(md.permissions().mode() & 0o7777, 0o640);
            assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 5));
        }
    }
}
