//! The blob cache: every verified blob (layers, configs, manifests) under
//! `CACHE/oci/blobs/sha256/HEX`, shared by all pulls, so a second pull of an image, or of one
//! sharing its base layers, downloads only what is new. A blob enters the cache only after its
//! size and digest checked out (written under a temporary name, then renamed).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::digest::{Digest, HashingReader};
use super::{io_err, OciError, Result};

pub(crate) struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// The cache under `cache_dir` (created when missing).
    pub(crate) fn open(cache_dir: &Path) -> Result<BlobCache> {
        let dir = cache_dir.join("oci/blobs/sha256");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        remove_orphans(&dir);
        Ok(BlobCache { dir })
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The cached blob when present with the right size (its digest was checked on entry).
    pub(crate) fn get(&self, digest: &Digest, size: u64) -> Option<PathBuf> {
        let path = self.path(digest);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => Some(path),
            _ => None,
        }
    }

    /// Stores what `reader` yields as `digest`, refusing it unless its size is `size` and its
    /// digest matches. `what` names the source in errors.
    pub(crate) fn put(
        &self,
        digest: &Digest,
        size: u64,
        reader: &mut dyn Read,
        what: &str,
    ) -> Result<PathBuf> {
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}-{:?}",
            digest.hex(),
            std::process::id(),
            std::thread::current().id()
        ));
        let result = self.put_at(&tmp, digest, size, reader, what);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn put_at(
        &self,
        tmp: &Path,
        digest: &Digest,
        size: u64,
        reader: &mut dyn Read,
        what: &str,
    ) -> Result<PathBuf> {
        let mut file = File::create(tmp).map_err(io_err(tmp))?;
        // One byte more than announced is enough to know it is too long.
        let mut hashing = HashingReader::new(reader.take(size + 1));
        std::io::copy(&mut hashing, &mut file).map_err(|source| {
            OciError::Http(crate::http::HttpError::Read {
                url: what.into(),
                source,
            })
        })?;
        check_read(hashing, what, Some(size), digest)?;
        file.flush().map_err(io_err(tmp))?;
        let path = self.path(digest);
        std::fs::rename(tmp, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Stores bytes made here (a config or manifest being written) and returns their digest.
    pub(crate) fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        self.put(
            &digest,
            bytes.len() as u64,
            &mut &bytes[..],
            "generated blob",
        )?;
        Ok(digest)
    }
}

/// Removes the partial downloads of pulls that were killed: `.tmp-*` files whose writer (the
/// PID in the name) is gone.
fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".tmp-") else {
            continue;
        };
        let pid = rest.split('-').find_map(|part| part.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Checks a file's size and digest against a descriptor's (for blobs read in place from a
/// layout).
pub(crate) fn verify_file(path: &Path, digest: &Digest, size: Option<u64>) -> Result<()> {
    let file = File::open(path).map_err(io_err(path))?;
    // A hostile archive may name a device or a FIFO (through a symlink) as a blob: only a
    // regular file is read, and never more than its announced size and a byte.
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(OciError::Invalid {
            what: path.display().to_string(),
            reason: "not a regular file".into(),
        });
    }
    let limit = size.map_or(u64::MAX, |s| s.saturating_add(1));
    let mut hashing = HashingReader::new(file.take(limit));
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io_err(path))?;
    check_read(hashing, &path.display().to_string(), size, digest)
}

/// Checks what `hashing` read of blob `what` against the size (where one was announced) and
/// the digest.
fn check_read<R>(
    hashing: HashingReader<R>,
    what: &str,
    size: Option<u64>,
    digest: &Digest,
) -> Result<()> {
    if let Some(size) = size.filter(|s| *s != hashing.count) {
        return Err(OciError::SizeMismatch {
            what: what.into(),
            expected: size,
            actual: hashing.count,
        });
    }
    let got = Digest::from_hash(hashing.hash);
    if &got != digest {
        return Err(OciError::DigestMismatch {
            what: what.into(),
            expected: digest.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}
