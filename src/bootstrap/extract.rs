//! The one place a package's data tar is written into the target: the archive module's safe
//! extractor (paths resolved inside the root, full metadata, in-root directory symlinks
//! followed as `tar --keep-directory-symlink` does, so merged-/usr suites extract into place).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::archive::{self, ExtractOptions};

use super::plan::{deb_of, Plan};
use super::{deb, BootstrapError, Result};

/// Extracts `tar` (an uncompressed tar stream) under `root`; returns the member paths when
/// `opts` records them.
pub(super) fn extract(
    tar: Box<dyn Read + Send>,
    root: &Path,
    deb: &Path,
    opts: &ExtractOptions,
) -> Result<Vec<Vec<u8>>> {
    archive::extract(tar, root, opts, None)
        .map(|stats| stats.paths)
        .map_err(|source| BootstrapError::Unpack {
            path: deb.into(),
            source,
        })
}

/// What each package put in the tree, in archive order: the paths of its data.tar members
/// (relative, without "./"), from which its dpkg file list is written.
pub(crate) type FileLists = HashMap<String, Vec<Vec<u8>>>;

pub(crate) fn workers() -> usize {
    crate::parallel::cpu_workers()
}

/// Extracts the data of one package; returns its member paths in archive order.
pub(crate) fn extract_one(
    plan: &Plan,
    name: &str,
    target: &Path,
    divert: &HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
) -> Result<Vec<Vec<u8>>> {
    let path = deb_of(plan, name);
    let opts = crate::archive::ExtractOptions {
        record_paths: true,
        divert: divert.get(name).cloned().unwrap_or_default(),
        ..Default::default()
    };
    let tar = deb::data_tar(&path)?;
    extract(tar, target, &path, &opts)
}

/// Extracts the data of `names` into `target` in parallel, member paths found in `divert`
/// (per package) written under their diverted name. Where two of the packages ship the same
/// non-directory path, the later one in `names` wins, as with `dpkg --unpack` of them in order.
pub(crate) fn extract_packages(
    plan: &Plan,
    names: &[String],
    target: &Path,
    divert: &HashMap<String, HashMap<Vec<u8>, Vec<u8>>>,
) -> Result<FileLists> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers() {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(name) = names.get(i) else {
                    return;
                };
                let done = extract_one(plan, name, target, divert);
                let failed = done.is_err();
                if let Ok(mut r) = results.lock() {
                    r.push((i, done));
                }
                if failed {
                    next.store(usize::MAX / 2, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    let mut lists = FileLists::new();
    for (i, done) in results {
        lists.insert(names[i].clone(), done?);
    }
    // Shared non-directory paths: extract their owners again in order, so the last one wins.
    let mut owners: HashMap<&[u8], usize> = HashMap::new();
    let mut again = std::collections::BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        for path in &lists[name] {
            if let Some(first) = owners.insert(path.as_slice(), i) {
                let on_disk = target.join(std::ffi::OsStr::from_bytes(path));
                if !on_disk.is_dir() {
                    again.insert(first);
                    again.insert(i);
                }
            }
        }
    }
    for i in again {
        extract_one(plan, &names[i], target, divert)?;
    }
    Ok(lists)
}
