//! export-raw's library half: a raw image out as the same bytes (sparse into a file, a plain
//! stream otherwise), compressed, or as qcow2.

use std::fs::File;
use std::io::Write;

use super::sparse::{copy_file_sparse, file_size, write_stream};
use super::ImageError;
use crate::archive::{Compression, Encoder};

/// The formats export-raw writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Raw,
    Compressed(Compression),
    Qcow2,
}

impl ExportFormat {
    /// The format a file name asks for; any other name gets the plain bytes.
    pub(crate) fn from_file_name(name: &[u8]) -> ExportFormat {
        let ends = |s: &str| name.ends_with(s.as_bytes());
        if ends(".qcow2") {
            ExportFormat::Qcow2
        } else if ends(".gz") {
            ExportFormat::Compressed(Compression::Gzip)
        } else if ends(".zst") {
            ExportFormat::Compressed(Compression::Zstd)
        } else if ends(".xz") {
            ExportFormat::Compressed(Compression::Xz)
        } else if ends(".bz2") {
            ExportFormat::Compressed(Compression::Bzip2)
        } else {
            ExportFormat::Raw
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ExportFormat::Raw => "raw",
            ExportFormat::Qcow2 => "qcow2",
            ExportFormat::Compressed(c) => c.name(),
        }
    }
}

/// Where the export goes: an empty regular file (written sparse, positioned writes allowed)
/// or any stream.
pub(crate) enum Target<'a> {
    File(&'a File),
    Stream(Box<dyn Write + Send + 'a>),
}

/// Exports the raw image `source`; returns the image's size in bytes.
pub(crate) fn export_raw(
    source: &File,
    target: Target<'_>,
    format: ExportFormat,
    threads: u32,
) -> Result<u64, ImageError> {
    let size = file_size(source)?;
    let io = |e| ImageError::io("the output", e);
    match (format, target) {
        (ExportFormat::Raw, Target::File(f)) => copy_file_sparse(source, f),
        (format, Target::File(f)) => {
            let file = f.try_clone().map_err(io)?;
            let file = crate::archive::WritebackFile::new(file);
            export_stream(source, Box::new(file), format, threads)?;
            Ok(size)
        }
        (format, Target::Stream(w)) => {
            export_stream(source, w, format, threads)?;
            Ok(size)
        }
    }
}

fn export_stream(
    source: &File,
    out: Box<dyn Write + Send + '_>,
    format: ExportFormat,
    threads: u32,
) -> Result<(), ImageError> {
    let io = |e| ImageError::io("the output", e);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    match format {
        ExportFormat::Raw => {
            write_stream(source, &mut out)?;
        }
        ExportFormat::Qcow2 => {
            super::qcow2::write::write_qcow2(source, &mut out)?;
        }
        ExportFormat::Compressed(c) => {
            // The encoder wants an owned 'static writer: hand it a pipe's worth of chunks.
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
            let sink = ChannelWriter { tx };
            let mut encoder = Encoder::new(sink, c, None, threads)
                .map_err(|e| ImageError::Decompress { source: e })?;
            std::thread::scope(|s| -> Result<(), ImageError> {
                let reader = s.spawn(move || -> Result<(), ImageError> {
                    write_stream(source, &mut encoder)?;
                    encoder
                        .finish()
                        .map_err(|e| ImageError::Decompress { source: e })?;
                    Ok(())
                });
                for chunk in rx {
                    out.write_all(&chunk).map_err(io)?;
                }
                reader
                    .join()
                    .map_err(|_| ImageError::io("the output", std::io::Error::other("panicked")))?
            })?;
        }
    }
    out.flush().map_err(io)?;
    Ok(())
}

struct ChannelWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
