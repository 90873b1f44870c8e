//! Starting the writeback of a file's dirty pages early (`sync_file_range`), so that the
//! `fsync` that makes an output durable waits for the last few megabytes instead of all of
//! them: the disk writes while the rest is still being produced.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Queues the dirty pages of `fd` in `offset..offset + len` for writing and returns without
/// waiting for them. A hint: durability still needs `fsync`.
pub(crate) fn start(fd: impl AsFd, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: sync_file_range reads no memory of ours; the fd is borrowed for the call.
    let r = unsafe {
        libc::sync_file_range(
            fd.as_fd().as_raw_fd(),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn starting_writeback_of_a_written_range_succeeds() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 1 << 16]).unwrap();
        super::start(&f, 0, 1 << 16).unwrap();
        f.sync_all().unwrap();
        assert!(super::start(&f, u64::MAX, 1).is_err());
    }
}
