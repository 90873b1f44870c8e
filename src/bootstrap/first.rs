//! The first stage, as debootstrap does it: download the package set while extracting the
//! required packages, then merged /usr (its `merge_usr`), the empty dpkg database, /etc basics,
//! static device nodes and apt sources. Nothing runs inside the image yet.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use rustix::fs::{FileType, Mode};

use std::collections::HashMap;

use super::extract::{extract_one, workers, FileLists};
use super::fetch::Fetcher;
use super::packages::Pkg;
use super::paths;
use super::plan::{deb_of, Plan};
use super::suites::Rules;
use super::{download, io_err, BootstrapError, Event, Options, Progress, Result};

/// Downloads the package set and, at the same time, extracts each required package as soon as
/// it is in the cache and verified; then merges /usr and lays out /etc, /dev and the dpkg
/// database. Returns the file lists and the bytes downloaded.
pub(crate) fn first_stage(
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
    merge_usr(target, &plan.rules)?;
    setup(target, opts, &plan.components)?;
    Ok((lists, downloaded))
}

/// debootstrap's `merge_usr`: every top-level library or binary directory moves into /usr and
/// becomes a symlink there.
pub(crate) fn merge_usr(target: &Path, rules: &Rules) -> Result<()> {
    if !rules.merged_usr {
        if rules.skip_usrmerge_flag {
            let flag = target.join("etc/unsupported-skip-usrmerge-conversion");
            fs::create_dir_all(target.join("etc")).map_err(io_err(target.join("etc")))?;
            fs::write(&flag, "this system will not be supported in the future\n")
                .map_err(io_err(&flag))?;
        }
        return Ok(());
    }
    for dir in ["bin", "lib", "lib32", "lib64", "libo32", "libx32", "sbin"] {
        let top = target.join(dir);
        match fs::symlink_metadata(&top) {
            Ok(m) if m.file_type().is_symlink() => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        merge_entry(&top, &target.join("usr").join(dir))?;
        symlink(format!("usr/{dir}"), &top).map_err(io_err(&top))?;
    }
    Ok(())
}

fn merge_entry(from: &Path, to: &Path) -> Result<()> {
    let err = |reason: &str| BootstrapError::MergeUsr {
        path: from.into(),
        reason: reason.into(),
    };
    match fs::symlink_metadata(to) {
        Err(_) => return fs::rename(from, to).map_err(io_err(from)),
        Ok(m) if m.file_type().is_symlink() => {
            return Err(err("its destination in /usr exists as a symlink"))
        }
        Ok(m) if !m.is_dir() => return Err(err("its destination in /usr is not a directory")),
        Ok(_) => {}
    }
    if !fs::symlink_metadata(from).map_err(io_err(from))?.is_dir() {
        return Err(err("a non-directory whose destination in /usr exists"));
    }
    for entry in fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        merge_entry(&entry.path(), &to.join(entry.file_name()))?;
    }
    fs::remove_dir(from).map_err(io_err(from))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    fs::write(path, text).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// The empty dpkg database, /etc basics, device nodes and sources.list.
pub(crate) fn setup(target: &Path, opts: &Options, components: &[String]) -> Result<()> {
    super::dpkg_db::create_empty(&paths::rel(target, paths::DPKG_ADMIN))?;
    let etc = target.join("etc");
    fs::create_dir_all(&etc).map_err(io_err(&etc))?;
    // The one host file a user expects inside: name resolution for apt.
    // Copied as debootstrap's `cp` does: the host file's mode under the usual umask (what a
    // postinst copies it on to, systemd's stub-resolv.conf, keeps it).
    if let (Ok(resolv), Ok(meta)) = (
        fs::read(paths::RESOLV_CONF),
        fs::metadata(paths::RESOLV_CONF),
    ) {
        let dst = paths::rel(target, paths::RESOLV_CONF);
        if fs::symlink_metadata(&dst).is_err() {
            fs::write(&dst, resolv).map_err(io_err(&dst))?;
            let mode = meta.permissions().mode() & 0o755;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(io_err(&dst))?;
        }
    }
    write(
        &paths::rel(target, paths::HOSTNAME),
        &format!("{}\n", opts.hostname),
        0o644,
    )?;
    let fstab = paths::rel(target, paths::FSTAB);
    if fs::symlink_metadata(&fstab).is_err() {
        write(&fstab, "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n", 0o644)?;
    }
    devices(&target.join("dev"))?;
    let sources = format!(
        "deb {} {} {}\n",
        opts.mirror,
        opts.suite,
        components.join(" ")
    );
    write(&paths::rel(target, paths::APT_SOURCES), &sources, 0o644)
}

/// debootstrap's `setup_devices_simple`.
fn devices(dev: &Path) -> Result<()> {
    fs::create_dir_all(dev).map_err(io_err(dev))?;
    let dir = fs::File::open(dev).map_err(io_err(dev))?;
    // The memory devices (major 1) and the terminals (major 5), by minor number.
    let memory = [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ];
    let terminals = [("tty", 0), ("console", 1), ("ptmx", 2)];
    let nodes = (memory.map(|(name, minor)| (name, 1, minor)).into_iter())
        .chain(terminals.map(|(name, minor)| (name, 5, minor)));
    for (name, major, minor) in nodes {
        let path = dev.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        rustix::fs::mknodat(
            &dir,
            name,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| BootstrapError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(io_err(&path))?;
    }
    for sub in ["pts", "shm"] {
        fs::create_dir_all(dev.join(sub)).map_err(io_err(dev.join(sub)))?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(name);
        let _ = fs::remove_file(&path);
        symlink(to, &path).map_err(io_err(&path))?;
    }
    Ok(())
}
