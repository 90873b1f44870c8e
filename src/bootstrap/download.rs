//! Parallel downloads of the package set into the cache, keyed by SHA256, so a second
//! bootstrap of the same suite downloads nothing. Every file, fresh or cached, is checked by
//! size and SHA256 before it is used; partial files are resumed with HTTP Range requests.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::fetch::Fetcher;
use super::packages::Pkg;
use super::{io_err, BootstrapError, Event, Progress, Result};

/// Where a package's verified .deb sits in the cache.
pub(crate) fn cached_path(dir: &Path, pkg: &Pkg) -> PathBuf {
    dir.join(format!("{}.deb", pkg.sha256))
}

/// Makes every package of `pkgs` present and verified in `dir`, calling `ready` with the index
/// of each as soon as it is; returns the bytes downloaded. Setting `stop` ends the work after the files
/// being fetched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch_all(
    fetcher: &Fetcher,
    mirror: &str,
    pkgs: &[Pkg],
    dir: &Path,
    jobs: usize,
    stop: &AtomicBool,
    ready: &(dyn Fn(usize) + Sync),
    progress: Progress<'_>,
) -> Result<u64> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Cached files are verified in the same parallel pass as the downloads.
    let missing: Vec<&Pkg> = pkgs
        .iter()
        .filter(|p| !cached_path(dir, p).exists())
        .collect();
    progress(Event::DownloadStart {
        files: missing.len(),
        bytes: missing.iter().map(|p| p.size).sum(),
    });
    let next = AtomicUsize::new(0);
    let downloaded = AtomicU64::new(0);
    let failure: Mutex<Option<BootstrapError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, 32) {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed)
                    || failure.lock().map(|f| f.is_some()).unwrap_or(true)
                {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(pkg) = pkgs.get(i) else { return };
                let on_bytes = |n: u64| {
                    downloaded.fetch_add(n, Ordering::Relaxed);
                    progress(Event::Downloaded(n));
                };
                if let Err(e) = fetch_one(fetcher, mirror, pkg, dir, &on_bytes) {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                    return;
                }
                ready(i);
            });
        }
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(downloaded.into_inner())
}

fn fetch_one(
    fetcher: &Fetcher,
    mirror: &str,
    pkg: &Pkg,
    dir: &Path,
    on_bytes: &dyn Fn(u64),
) -> Result<()> {
    let url = format!("{mirror}/{}", pkg.filename);
    if pkg.sha256.len() != 64 || pkg.filename.is_empty() || pkg.filename.contains("..") {
        return Err(BootstrapError::BadIndex {
            url,
            reason: format!("bad Filename or SHA256 for {}", pkg.name),
        });
    }
    let path = cached_path(dir, pkg);
    if path.exists() {
        if verify_file(&path, &url, pkg).is_ok() {
            return Ok(());
        }
        let _ = std::fs::remove_file(&path);
    }
    let part = dir.join(format!("{}.part", pkg.sha256));
    // Bootstraps that share a cache (two at once, or tests in parallel) must not write one
    // partial file together: the first holds a lock on it while it downloads, the others wait
    // and then find the file in place, or a fresh partial file to take over.
    let _lock = loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(io_err(&part))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err(&part)(e.into()))?;
        // Locked the partial file that is still there, not one renamed or removed meanwhile.
        let live = same_file(&file, &part);
        if path.exists() && verify_file(&path, &url, pkg).is_ok() {
            if live {
                // Made by this open after the holder before us renamed its file into place.
                let _ = std::fs::remove_file(&part);
            }
            return Ok(());
        }
        if live {
            break file;
        }
    };
    for attempt in 0..2 {
        fetcher.download(&url, &part, pkg.size, on_bytes)?;
        match verify_file(&part, &url, pkg) {
            Ok(()) => return std::fs::rename(&part, &path).map_err(io_err(&path)),
            // A stale partial from an earlier run may be the culprit: once more from zero.
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                if attempt == 1 {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Whether `path` still names the file open as `file`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Size, then SHA256, streamed.
pub(crate) fn verify_file(path: &Path, url: &str, pkg: &Pkg) -> Result<()> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mismatch = |what, expected: String, actual: String| BootstrapError::Checksum {
        url: url.to_string(),
        what,
        expected,
        actual,
    };
    if len != pkg.size {
        return Err(mismatch("size", pkg.size.to_string(), len.to_string()));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != pkg.sha256 {
        return Err(mismatch("SHA256", pkg.sha256.clone(), actual));
    }
    Ok(())
}
