//! The plan: everything decided before the target is touched — the keyring, the verified
//! Release file, the package indices, the resolved set and the core packages the second stage
//! installs by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::openpgp::Keyring;

use super::fetch::Fetcher;
use super::packages::{Index, Pkg};
use super::release::{self, Release};
use super::resolve::{resolve_set, PackageSet};
use super::suites::{self, Distro, Rules, SuiteInfo, Variant};
use super::{download, packages, BootstrapError, Event, Options, Progress, Result};

/// Everything decided before the target is touched.
pub(super) struct Plan {
    pub(crate) rules: Rules,
    pub(crate) set: PackageSet,
    pub(crate) index: Index,
    pub(crate) pkgs: HashMap<String, Pkg>,
    pub(crate) deb_dir: PathBuf,
    pub(crate) components: Vec<String>,
    /// SOURCE_DATE_EPOCH for a reproducible image, resolved against the Release file.
    pub(crate) epoch: Option<i64>,
}

fn load_keyring(
    opts: &Options,
    info: Option<&SuiteInfo>,
    progress: Progress<'_>,
) -> Result<(Keyring, String)> {
    let read = |path: &Path| -> Result<(Keyring, String)> {
        let ring = Keyring::read(path).map_err(BootstrapError::BadKeyring)?;
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
        let ring = Keyring::from_bytes(suites::UBUNTU_KEYRING, &path)
            .map_err(BootstrapError::BadKeyring)?;
        return Ok((ring, "rmach's shipped Ubuntu archive keys".into()));
    }
    Err(BootstrapError::NoKeyring { path, package })
}

/// Verifies, loads the indices and resolves; returns the rules, the Release, the set and the index.
pub(crate) fn resolve_only(
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

pub(super) fn plan(opts: &Options, progress: Progress<'_>) -> Result<Plan> {
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
    check_core(opts, &pkgs)?;
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
pub(crate) fn deb_of(plan: &Plan, name: &str) -> PathBuf {
    download::cached_path(&plan.deb_dir, &plan.pkgs[name])
}

/// The packages the second stage installs by name must be in the set (`--exclude` can drop
/// them); checked before anything is downloaded.
fn check_core(opts: &Options, pkgs: &HashMap<String, Pkg>) -> Result<()> {
    let missing: Vec<&str> = core_packages(opts.variant)
        .into_iter()
        .filter(|p| !pkgs.contains_key(*p))
        .collect();
    if !missing.is_empty() {
        return Err(BootstrapError::Stage {
            step: "checking the core packages".into(),
            reason: format!(
                "{} not in the package set (left out with --exclude?)",
                missing.join(" ")
            ),
        });
    }
    Ok(())
}

/// debootstrap's core packages, installed one by one in this order before the rest.
pub(crate) fn core_packages(variant: Variant) -> Vec<&'static str> {
    let mut core = vec![
        "base-passwd",
        "base-files",
        "dpkg",
        "libc6",
        "perl-base",
        "mawk",
    ];
    if variant == Variant::Default {
        core.push("debconf");
    }
    core
}
