//! Sparse files: where a file has data (SEEK_DATA/SEEK_HOLE), writing a stream with holes for
//! its zero blocks, copying a file with its holes (a reflink where the file system can), and
//! reading one out as a plain stream.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use rustix::fs::{seek, SeekFrom};
use rustix::io::Errno;

use super::ImageError;

const BLOCK: usize = 4096;
/// Bytes copied between two starts of writeback.
const WRITEBACK_STEP: u64 = 8 << 20;

/// The byte ranges of `file` (of length `size`) that hold data, in order. Where the file
/// system cannot say, the whole file is data.
pub(crate) fn data_ranges(file: &File, size: u64) -> Result<Vec<(u64, u64)>, ImageError> {
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < size {
        let data = match seek(file, SeekFrom::Data(offset)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => offset,
            Err(e) => {
                return Err(ImageError::Read {
                    offset,
                    source: e.into(),
                })
            }
        };
        let hole = seek(file, SeekFrom::Hole(data)).unwrap_or(size).min(size);
        if hole > data {
            ranges.push((data, hole));
        }
        offset = hole.max(data + 1);
    }
    Ok(ranges)
}

/// The length of the input `file`.
pub(crate) fn file_size(file: &File) -> Result<u64, ImageError> {
    let meta = file.metadata().map_err(|e| ImageError::Read {
        offset: 0,
        source: e,
    })?;
    Ok(meta.len())
}

/// Fills `buf` from the input `file` at `offset`.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
    file.read_exact_at(buf, offset)
        .map_err(|e| ImageError::Read { offset, source: e })
}

/// Writes a stream into a file, seeking over 4 KiB blocks of zeros so they stay holes.
pub(crate) struct SparseWriter<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> SparseWriter<'a> {
    pub(crate) fn new(file: &'a File) -> SparseWriter<'a> {
        SparseWriter { file, offset: 0 }
    }

    /// Writes `data` at the current offset.
    pub(crate) fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        write_sparse_at(self.file, data, self.offset)?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Sets the file's length to what was written (a trailing hole has no block to write).
    pub(crate) fn finish(self) -> std::io::Result<u64> {
        self.file.set_len(self.offset)?;
        Ok(self.offset)
    }
}

pub(crate) fn is_zero(b: &[u8]) -> bool {
    // 16 bytes at a time: several times faster than byte by byte on the all-zero case.
    let mut chunks = b.chunks_exact(16);
    chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && chunks.remainder().iter().all(|&x| x == 0)
}

/// Copies a whole stream into `file` sparsely; returns the bytes read.
pub(crate) fn copy_stream_sparse(input: &mut impl Read, file: &File) -> Result<u64, ImageError> {
    let mut w = SparseWriter::new(file);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = fill(input, &mut buf).map_err(|e| ImageError::Read {
            offset: total,
            source: e,
        })?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])
            .map_err(|e| ImageError::io("the new image", e))?;
        total += n as u64;
    }
    w.finish().map_err(|e| ImageError::io("the new image", e))
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Copies `src` into the empty file `dst`: a reflink where the file system can, else its
/// data ranges only, read and written back with 4 KiB blocks of zeros left as holes (as
/// `cp --sparse=always` does), so the copy is never less sparse than the source. The copy's
/// pages are sent to the disk as it goes, for the caller's fsync.
pub(crate) fn copy_file_sparse(src: &File, dst: &File) -> Result<u64, ImageError> {
    let size = file_size(src)?;
    if size == 0 || rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(size);
    }
    let mut buf = vec![0u8; 1 << 20];
    // Where the writeback of what is written was last started: the disk writes while the copy
    // goes on, so the fsync that makes the copy durable waits for the last step only (it
    // took as long again as the copy when it had to write everything).
    let mut queued = 0;
    for (start, end) in data_ranges(src, size)? {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            read_full_at(src, &mut buf[..n], at)?;
            write_sparse_at(dst, &buf[..n], at).map_err(|e| ImageError::io("the output", e))?;
            at += n as u64;
            if at - queued >= WRITEBACK_STEP {
                // A hint: where it fails, the fsync does all the writing.
                let _ = crate::sys::writeback::start(dst, queued, at - queued);
                queued = at;
            }
        }
    }
    dst.set_len(size)
        .map_err(|e| ImageError::io("the output", e))?;
    Ok(size)
}

/// Writes `data` at `offset`, skipping 4 KiB blocks of zeros.
pub(crate) fn write_sparse_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        let end = (at + BLOCK).min(data.len());
        if is_zero(&data[at..end]) {
            at = end;
            continue;
        }
        let mut run = end;
        while run < data.len() && !is_zero(&data[run..(run + BLOCK).min(data.len())]) {
            run = (run + BLOCK).min(data.len());
        }
        file.write_all_at(&data[at..run], offset + at as u64)?;
        at = run;
    }
    Ok(())
}

/// Writes every byte of `src` to `out`, holes as zeros without reading them.
pub(crate) fn write_stream(src: &File, out: &mut impl Write) -> Result<u64, ImageError> {
    let size = file_size(src)?;
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let io = |e| ImageError::io("the output", e);
    let mut at = 0u64;
    let zero_fill = |out: &mut dyn Write, mut len: u64| -> Result<(), ImageError> {
        while len > 0 {
            let n = len.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..n]).map_err(io)?;
            len -= n as u64;
        }
        Ok(())
    };
    for (start, end) in data_ranges(src, size)? {
        zero_fill(out, start - at)?;
        at = start;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            read_full_at(src, &mut buf[..n], at)?;
            out.write_all(&buf[..n]).map_err(io)?;
            at += n as u64;
        }
    }
    zero_fill(out, size - at)?;
    Ok(size)
}
