//! import-raw's library half: any input (a file or a stream; raw, bare file system or qcow2;
//! uncompressed or gzip, zstd, xz, bzip2) into an empty raw file, sparse. `pull-raw` calls
//! [`import_raw`] with [`Source::Stream`] over the download.

use std::fs::File;
use std::io::{Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::qcow2::{self, Qcow2Info};
use super::sparse::{copy_file_sparse, copy_stream_sparse, fill};
use super::ImageError;
use crate::archive::{Compression, Decoder};

/// Where the image comes from. A regular file is read in place (qcow2 without a copy, raw by
/// reflink where possible); anything else is read once, front to back.
pub(crate) enum Source {
    File(File),
    Stream(Box<dyn Read + Send>),
}

/// What an import found.
#[derive(Debug, Clone)]
pub(crate) struct ImportReport {
    pub(crate) compression: Compression,
    /// Set when the input was qcow2.
    pub(crate) qcow2: Option<Qcow2Info>,
    /// Bytes of the raw image.
    pub(crate) size: u64,
    /// The SHA-256 of the input as given (compressed, if it was), when asked for.
    pub(crate) sha256: Option<[u8; 32]>,
}

/// Bytes looked at to tell formats apart.
const PEEK: usize = 4096;

/// Writes the raw image read from `source` into the empty file `dest`. A compressed qcow2 or
/// one read from a stream is first decompressed into an unnamed temporary file in
/// `scratch_dir` (the store, which has the room); it vanishes however the import ends.
pub(crate) fn import_raw(
    source: Source,
    dest: &File,
    scratch_dir: &Path,
    sha256: bool,
) -> Result<ImportReport, ImageError> {
    match source {
        Source::File(file) => {
            let magic = peek(|buf| file.read_at(buf, 0))?;
            if Compression::detect(&magic) == Compression::None {
                return import_file(file, &magic, dest, sha256);
            }
            import_stream(Box::new(file), dest, scratch_dir, sha256)
        }
        Source::Stream(stream) => import_stream(stream, dest, scratch_dir, sha256),
    }
}

fn import_file(
    file: File,
    magic: &[u8],
    dest: &File,
    sha256: bool,
) -> Result<ImportReport, ImageError> {
    refuse_other_formats(magic)?;
    let digest = if sha256 {
        Some(hash_file(&file)?)
    } else {
        None
    };
    let (qcow2, size) = if qcow2::is_qcow2(magic) {
        let info = qcow2::convert(&file, dest)?;
        (Some(info), info.virtual_size)
    } else {
        (None, copy_file_sparse(&file, dest)?)
    };
    Ok(ImportReport {
        compression: Compression::None,
        qcow2,
        size,
        sha256: digest,
    })
}

fn import_stream(
    stream: Box<dyn Read + Send>,
    dest: &File,
    scratch_dir: &Path,
    sha256: bool,
) -> Result<ImportReport, ImageError> {
    let mut decoder = Decoder::spawn(stream, sha256).map_err(|e| match e {
        crate::archive::ArchiveError::Empty => ImageError::Empty,
        e => ImageError::Decompress { source: e },
    })?;
    let compression = decoder.compression();
    let magic = peek(|buf| fill(&mut decoder, buf))?;
    refuse_other_formats(&magic)?;
    let mut input = Cursor::new(magic.clone()).chain(&mut decoder);
    let result = if qcow2::is_qcow2(&magic) {
        let spool = rustix::fs::open(
            scratch_dir,
            rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map(File::from)
        .map_err(|e| ImageError::io(scratch_dir, e))?;
        copy_stream_sparse(&mut input, &spool)
            .and_then(|_| qcow2::convert(&spool, dest))
            .map(|info| (Some(info), info.virtual_size))
    } else {
        copy_stream_sparse(&mut input, dest).map(|size| (None, size))
    };
    let (qcow2, size) = match result {
        Ok(r) => r,
        Err(e) => {
            // The decoder thread may wait on a stalled input: let it go instead of joining.
            drop(decoder);
            return Err(e);
        }
    };
    let digest = decoder
        .finish()
        .map_err(|e| ImageError::Decompress { source: e })?;
    Ok(ImportReport {
        compression,
        qcow2,
        size,
        sha256: digest,
    })
}

/// The first bytes of the input, read by `read` into a buffer of [`PEEK`] bytes; none at all
/// is an empty input.
fn peek(read: impl FnOnce(&mut [u8]) -> std::io::Result<usize>) -> Result<Vec<u8>, ImageError> {
    let mut magic = vec![0u8; PEEK];
    let n = read(&mut magic).map_err(|e| ImageError::Read {
        offset: 0,
        source: e,
    })?;
    if n == 0 {
        return Err(ImageError::Empty);
    }
    magic.truncate(n);
    Ok(magic)
}

fn hash_file(file: &File) -> Result<[u8; 32], ImageError> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = file.read_at(&mut buf, at).map_err(|e| ImageError::Read {
            offset: at,
            source: e,
        })?;
        if n == 0 {
            return Ok(hash.finalize().into());
        }
        hash.update(&buf[..n]);
        at += n as u64;
    }
}

/// Other formats that would otherwise be taken for a raw disk of garbage.
fn refuse_other_formats(magic: &[u8]) -> Result<(), ImageError> {
    let convert = "convert it to raw or qcow2 first with qemu-img convert";
    let what = if magic.len() > 262 && &magic[257..262] == b"ustar" {
        Some(("a tar archive", "import it with import-tar"))
    } else if magic.starts_with(b"KDMV") || magic.starts_with(b"# Disk DescriptorFile") {
        Some(("a VMDK image", convert))
    } else if magic.starts_with(b"vhdxfile") {
        Some(("a VHDX image", convert))
    } else if magic.len() >= 0x44 && magic[0x40..0x44] == [0x7f, 0x10, 0xda, 0xbe] {
        Some(("a VirtualBox VDI image", convert))
    } else {
        None
    };
    match what {
        Some((what, hint)) => Err(ImageError::NotADisk { what, hint }),
        None => Ok(()),
    }
}
