//! The whole bootstrap in debootstrap's order: verify the Release file, load the indices,
//! resolve, download, then the first stage (extract the required packages, merge /usr, static
//! /etc and /dev) and the second stage (dpkg inside the image), then the finishing touches.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::fetch::Fetcher;
use super::packages::{Index, Pkg};
use super::release::{self, Release};
use super::resolve::{resolve_set, PackageSet};
use super::suites::{self, Distro, Rules, SuiteInfo};
use super::verify::Keyring;
use super::{
    deb, download, io_err, packages, second, BootstrapError, Event, Options, Progress, Result,
};

/// Everything decided before the target is touched.
pub struct Plan {
    pub rules: Rules,
    pub set: PackageSet,
    pub index: Index,
    pub pkgs: HashMap<String, Pkg>,
    pub deb_dir: PathBuf,
    pub components: Vec<String>,
    /// SOURCE_DATE_EPOCH for a reproducible image, resolved against the Release file.
    pub epoch: Option<i64>,
}

fn load_keyring(
    opts: &Options,
    info: Option<&SuiteInfo>,
    progress: Progress<'_>,
) -> Result<(Keyring, String)> {
    let read = |path: &Path| -> Result<(Keyring, String)> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let ring = Keyring::from_bytes(&bytes).map_err(|reason| BootstrapError::BadKeyring {
            path: path.into(),
            reason,
        })?;
        Ok((ring, path.display().to_string()))
    };
    if let Some(path) = &opts.keyring {
        return read(path);
    }
    let Some(info) = info else {
        return Err(BootstrapError::UnknownSuite {
            suite: opts.suite.clone(),
        });
    };
    let (path, package) = suites::default_keyring(info.distro);
    if path.exists() {
        return read(&path);
    }
    if info.distro == Distro::Ubuntu {
        progress(Event::Note(format!(
            "{} not found: using the Ubuntu archive keys shipped with rmach",
            path.display()
        )));
        let ring = Keyring::from_bytes(suites::UBUNTU_KEYRING).map_err(|reason| {
            BootstrapError::BadKeyring {
                path: path.clone(),
                reason,
            }
        })?;
        return Ok((ring, "rmach's shipped Ubuntu archive keys".into()));
    }
    Err(BootstrapError::NoKeyring { path, package })
}

/// Verifies, loads the indices and resolves; returns the rules, the Release, the set and the index.
pub fn resolve_only(
    opts: &Options,
    progress: Progress<'_>,
) -> Result<(Rules, Release, PackageSet, Index)> {
    let info = suites::lookup(&opts.suite);
    let (keyring, keyring_name) = load_keyring(opts, info.as_ref(), progress)?;
    let fetcher = Fetcher::new();
    progress(Event::Phase("Verifying the Release file"));
    let release = release::fetch(&fetcher, &opts.mirror, &opts.suite, &keyring, &keyring_name)?;
    release::check_not_rolled_back(&opts.cache_dir, &opts.mirror, &opts.suite, &release)?;
    let codename = match info.as_ref().and_then(|i| i.codename) {
        Some(c) => c.to_string(),
        None if !release.codename.is_empty() => release.codename.clone(),
        None => opts.suite.clone(),
    };
    if codename != opts.suite {
        progress(Event::Note(format!("{} is {codename}", opts.suite)));
    }
    let distro = match suites::lookup(&codename).or(info) {
        Some(i) => i.distro,
        None => suites::distro_of_origin(&release.origin),
    };
    let rules = Rules::new(distro, &codename, opts.variant);
    let components = if opts.components.is_empty() {
        vec!["main".to_string()]
    } else {
        opts.components.clone()
    };
    if let Some(c) = components
        .iter()
        .find(|c| !release.components.is_empty() && !release.components.contains(c))
    {
        return Err(BootstrapError::MissingPackages {
            what: "component",
            names: c.clone(),
            suite: opts.suite.clone(),
            components: release.components.join(","),
            arch: opts.arch.clone(),
        });
    }
    progress(Event::Phase("Reading the package indices"));
    let index = packages::load(
        &fetcher,
        &release,
        &components,
        &opts.arch,
        &opts.cache_dir.join("bootstrap/indices"),
    )?;
    let set = resolve_set(
        &index,
        &rules,
        opts.variant,
        &opts.include,
        &opts.exclude,
        opts.mirror.starts_with("https://"),
    );
    let missing: Vec<String> = set
        .all()
        .into_iter()
        .filter(|p| !index.contains(p))
        .collect();
    if !missing.is_empty() {
        return Err(BootstrapError::MissingPackages {
            what: "packages",
            names: missing.join(" "),
            suite: opts.suite.clone(),
            components: components.join(","),
            arch: opts.arch.clone(),
        });
    }
    Ok((rules, release, set, index))
}

pub fn plan(opts: &Options, progress: Progress<'_>) -> Result<Plan> {
    let (rules, release, set, index) = resolve_only(opts, progress)?;

    let epoch = match opts.reproducible {
        super::Reproducible::No => None,
        super::Reproducible::At(epoch) => Some(epoch),
        super::Reproducible::ReleaseDate => Some(release.date),
    };
    let pkgs: HashMap<String, Pkg> = set
        .all()
        .into_iter()
        .filter_map(|n| index.pkg(&n).map(|p| (n, p)))
        .collect();
    second::check_core(opts, &pkgs)?;
    let components = if opts.components.is_empty() {
        vec!["main".to_string()]
    } else {
        opts.components.clone()
    };
    Ok(Plan {
        rules,
        set,
        index,
        pkgs,
        deb_dir: opts.cache_dir.join("bootstrap/debs"),
        components,
        epoch,
    })
}

/// The .deb of `name` in the cache.
pub fn deb_of(plan: &Plan, name: &str) -> PathBuf {
    download::cached_path(&plan.deb_dir, &plan.pkgs[name])
}

/// What each package put in the tree, in archive order: the paths of its data.tar members
/// (relative, without "./"), from which its dpkg file list is written.
pub type FileLists = HashMap<String, Vec<Vec<u8>>>;

/// Installs `plan` into `target`; returns the bytes downloaded.
pub fn install(opts: &Options, plan: &Plan, target: &Path, progress: Progress<'_>) -> Result<u64> {
    let (lists, downloaded) = first_stage(opts, plan, target, progress)?;
    progress(Event::Phase("Installing packages in the image"));
    second::run(opts, plan, target, lists, progress)?;
    super::first::finish(target, &opts.hostname)?;
    super::customize::apply(opts, target, plan.epoch)?;
    if let Some(epoch) = plan.epoch {
        super::reproducible::finish(target, epoch)?;
    }
    Ok(downloaded)
}

/// Downloads the package set and, at the same time, extracts each required package as soon as
/// it is in the cache and verified; then merges /usr and lays out /etc, /dev and the dpkg
/// database. Returns the file lists and the bytes downloaded.
pub fn first_stage(
    opts: &Options,
    plan: &Plan,
    target: &Path,
    progress: Progress<'_>,
) -> Result<(FileLists, u64)> {
    let required: std::collections::HashSet<&str> =
        plan.set.required.iter().map(String::as_str).collect();
    let mut list: Vec<Pkg> = plan.pkgs.values().cloned().collect();
    // The required set first, for the extraction waiting on it; largest first keeps all
    // download workers busy to the end.
    list.sort_by_key(|p| {
        (
            !required.contains(p.name.as_str()),
            std::cmp::Reverse(p.size),
        )
    });
    progress(Event::Phase(
        "Downloading and extracting the required packages",
    ));
    // No two required packages ship the same non-directory path (debootstrap extracts them
    // with `tar -k`, which would fail), so the order of extraction does not change the tree.
    let (ready, queue) = std::sync::mpsc::channel::<&str>();
    let queue = std::sync::Mutex::new(queue);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lists = std::sync::Mutex::new(FileLists::new());
    let failure = std::sync::Mutex::new(None);
    let no_divert = HashMap::new();
    let downloaded = std::thread::scope(|scope| {
        let download = scope.spawn(|| {
            let ready = ready;
            let result = download::fetch_all(
                &Fetcher::new(),
                &opts.mirror,
                &list,
                &plan.deb_dir,
                opts.jobs,
                &stop,
                &|i| {
                    if required.contains(list[i].name.as_str()) {
                        let _ = ready.send(list[i].name.as_str());
                    }
                },
                progress,
            );
            if result.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            result
        });
        for _ in 0..workers() {
            scope.spawn(|| loop {
                let next = queue.lock().ok().and_then(|q| q.recv().ok());
                let Some(name) = next else { return };
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                match extract_one(plan, name, target, &no_divert) {
                    Ok(paths) => {
                        if let Ok(mut l) = lists.lock() {
                            l.insert(name.to_string(), paths);
                        }
                    }
                    Err(e) => {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                    }
                }
            });
        }
        download.join().unwrap_or_else(|_| {
            Err(BootstrapError::Extract {
                path: plan.deb_dir.clone(),
                reason: "the download thread panicked".into(),
            })
        })
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    let downloaded = downloaded?;
    let lists = lists.into_inner().unwrap_or_default();
    if let Some(missing) = plan.set.required.iter().find(|n| !lists.contains_key(*n)) {
        return Err(BootstrapError::Extract {
            path: deb_of(plan, missing),
            reason: "downloaded but not extracted".into(),
        });
    }
    super::first::merge_usr(target, &plan.rules)?;
    super::first::setup(target, opts, &plan.components)?;
    Ok((lists, downloaded))
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
}

/// Extracts the data of one package; returns its member paths in archive order.
fn extract_one(
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
    super::extract::extract(tar, target, &path, &opts)
}

/// Extracts the data of `names` into `target` in parallel, member paths found in `divert`
/// (per package) written under their diverted name. Where two of the packages ship the same
/// non-directory path, the later one in `names` wins, as with `dpkg --unpack` of them in order.
pub fn extract_packages(
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
