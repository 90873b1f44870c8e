//! An output file whose pages go to the disk while it is still being written: every
//! [`STEP`] bytes, the writeback of what came before is started (`sync_file_range`), so the
//! `fsync` that makes the finished output durable has only the tail left to wait for.

use std::fs::File;
use std::io::{self, Write};

use crate::sys::writeback;

/// How much is written between two starts of writeback: large enough that the disk gets big
/// requests, small enough that the tail left for `fsync` is short.
const STEP: u64 = 8 << 20;

pub(crate) struct WritebackFile {
    file: File,
    written: u64,
    queued: u64,
}

impl WritebackFile {
    /// `file` is written from its current offset, taken as 0.
    pub(crate) fn new(file: File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            queued: 0,
        }
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.queued >= STEP {
            // Only a hint: where it fails (a pipe, an odd file system), fsync does it all.
            let _ = writeback::start(&self.file, self.queued, self.written - self.queued);
            self.queued = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
