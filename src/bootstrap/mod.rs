//! Building a Debian or Ubuntu root filesystem from a mirror: suites, mirror access, signed
//! Release files, package indices, the resolver, .deb reading and the install stages. It does
//! not know where images are stored; it fills a directory it is given. It reproduces
//! debootstrap's package set and install order; it extracts through [`crate::archive`] and runs
//! the second stage through [`crate::runner`]. By stage: `plan.rs` (keyring, Release, indices,
//! set — nothing touched yet), `first.rs` (download and extract, merged /usr, /etc and /dev),
//! `second.rs` (dpkg inside the image), `dpkg_db.rs` (every write to dpkg's database),
//! `customize.rs` (finishing touches, settings, hooks), `reproducible.rs`; `paths.rs` names
//! the paths inside the image.

mod customize;
mod deb;
mod download;
mod dpkg_db;
mod extract;
mod fetch;
mod first;
pub(crate) mod foreign;
mod mirror;
mod packages;
pub mod paths;
mod plan;
mod release;
mod reproducible;
mod resolve;
mod second;
mod stage_runner;
pub mod suites;

use std::path::{Path, PathBuf};

pub use customize::Settings;
pub use mirror::{host_debian_mirror, select_mirror, MirrorSource};
pub use packages::Index;
pub use resolve::{resolve_set, PackageSet};
pub use suites::{Distro, Variant};

/// Everything that can go wrong while bootstrapping; each variant names the URL, path or
/// package concerned and, where there is one, the remedy.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("unknown suite {suite:?}: rmach has no rules for it; give --keyring FILE (and --mirror URL) to bootstrap it from a mirror that carries it")]
    UnknownSuite { suite: String },
    #[error("no mirror known for {suite}: give one with --mirror URL, the RMACH_MIRROR environment variable, or mirror = \"URL\" in /etc/rmach/rmach.toml (for Ubuntu, installing python-apt-common also names its archive)")]
    NoMirror { suite: String },
    #[error("bad mirror URL {url:?}: {reason} (use http://, https:// or file://)")]
    BadMirror { url: String, reason: String },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: not valid TOML")]
    ConfigSyntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot fetch {url} (check the mirror URL and the network)")]
    Fetch {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("reading {url} failed")]
    FetchRead {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: HTTP {status}; check the mirror URL and the network")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: the server does not resume downloads")]
    NoResume { url: String },
    #[error("{url}: got {got} bytes of {size}")]
    ShortDownload { url: String, got: u64, size: u64 },
    #[error("{url}: not found ({how}); check that the mirror carries this suite, component and architecture")]
    NotFound { url: String, how: &'static str },
    #[error("keyring {path} not found: install the {package} package or give --keyring FILE")]
    NoKeyring {
        path: PathBuf,
        package: &'static str,
    },
    #[error(transparent)]
    BadKeyring(crate::openpgp::OpenPgpError),
    #[error("{url}: signature does not verify against keyring {keyring}; the mirror may be tampered with, or give the right --keyring")]
    BadSignature {
        url: String,
        keyring: String,
        #[source]
        source: crate::openpgp::OpenPgpError,
    },
    #[error("{url}: Release file expired at {valid_until} (Valid-Until); the mirror is stale, use another one")]
    Expired { url: String, valid_until: String },
    #[error("{url}: the Release file is for {codename} (Suite {suite}), not {asked}; the mirror serves another suite under that name")]
    WrongSuite {
        url: String,
        asked: String,
        codename: String,
        suite: String,
    },
    #[error("{url}: Release dated {date} is older than the one verified before ({last}, recorded in {record}); the mirror may be replaying an old Release (remove the record to accept it)")]
    RolledBack {
        url: String,
        date: String,
        last: String,
        record: PathBuf,
    },
    #[error("{url}: malformed Release file: {reason}")]
    BadRelease { url: String, reason: String },
    #[error("{url}: malformed {what}")]
    Deb822 {
        url: String,
        what: &'static str,
        #[source]
        source: deb822_fast::Error,
    },
    #[error("{url}: {what} mismatch: expected {expected}, got {actual}; the mirror is inconsistent or tampered with")]
    Checksum {
        url: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{url}: malformed Packages index: {reason}")]
    BadIndex { url: String, reason: String },
    #[error("{url}: decompressing the index failed")]
    Decompress {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {names} not found in {suite} ({components}) for {arch}")]
    MissingPackages {
        what: &'static str,
        names: String,
        suite: String,
        components: String,
        arch: String,
    },
    #[error("{path}: reading the Debian package failed")]
    DebRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable Debian package: {reason}")]
    BadDeb { path: PathBuf, reason: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("extracting {path}: {reason}")]
    Extract { path: PathBuf, reason: String },
    #[error("extracting {path}")]
    Unpack {
        path: PathBuf,
        #[source]
        source: crate::archive::ArchiveError,
    },
    #[error("second stage: {step} failed: {reason}; no image was created")]
    Stage { step: String, reason: String },
    #[error("interrupted during the second stage ({step}); no image was created")]
    Interrupted { step: String },
    #[error("second stage: {step}: cannot run inside the image")]
    Runner {
        step: String,
        #[source]
        source: crate::runner::RunnerError,
    },
    #[error("cannot run {arch} programs on this host: {reason}")]
    ForeignArch { arch: String, reason: String },
    #[error("{option}: {reason}; no image was created")]
    Setting { option: String, reason: String },
    #[error("hook {command:?} failed: {reason}; no image was created")]
    Hook { command: String, reason: String },
    #[error("{path}: merged /usr: {reason}")]
    MergeUsr { path: PathBuf, reason: String },
}

pub(crate) type Result<T> = std::result::Result<T, BootstrapError>;

/// `url` is not on the mirror: HTTP said 404 (or 410), or a `file://` mirror lacks the file.
pub(crate) fn not_found(url: &str) -> BootstrapError {
    BootstrapError::NotFound {
        url: url.to_string(),
        how: if url.starts_with("file://") {
            "no such file"
        } else {
            "HTTP 404"
        },
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BootstrapError {
    let path = path.into();
    move |source| BootstrapError::Io { path, source }
}

/// What a bootstrap should build.
#[derive(Debug, Clone)]
pub struct Options {
    pub suite: String,
    /// The mirror URL, already chosen by [`select_mirror`].
    pub mirror: String,
    pub variant: Variant,
    pub arch: String,
    /// Empty means `main`.
    pub components: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// None: the suite's keyring on the host (or the shipped Ubuntu keys).
    pub keyring: Option<PathBuf>,
    /// Where packages and indices are kept between runs, keyed by SHA256.
    pub cache_dir: PathBuf,
    /// Written to /etc/hostname.
    pub hostname: String,
    /// Parallel downloads.
    pub jobs: usize,
    /// Root password, locale, time zone and hooks applied before the image is done.
    pub settings: Settings,
    /// Whether to make the image reproducible (see `reproducible.rs`).
    pub reproducible: Reproducible,
}

/// Reproducible builds: file times clamped to an epoch, logs and caches that vary removed or
/// fixed, the epoch given to maintainer scripts as SOURCE_DATE_EPOCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reproducible {
    #[default]
    No,
    /// At this epoch (SOURCE_DATE_EPOCH).
    At(i64),
    /// At the Release file's Date, so the same mirror state gives the same image.
    ReleaseDate,
}

/// What the library reports while it works; the cli turns it into progress bars.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A new phase starts (`"Verifying"`, `"Downloading"`, `"Extracting"` ...).
    Phase(&'a str),
    /// Downloads start: how many files and bytes are missing from the cache.
    DownloadStart { files: usize, bytes: u64 },
    /// Bytes arrived.
    Downloaded(u64),
    /// A fact worth telling (the keyring chosen, the codename an alias resolved to).
    Note(String),
}

pub(crate) type Progress<'a> = &'a (dyn Fn(Event<'_>) + Sync);

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub(crate) codename: String,
    pub distro: String,
    pub packages: Vec<String>,
    pub downloaded_bytes: u64,
}

/// Bootstraps `opts` into `target`, an empty directory. On error the directory holds a partial
/// tree that the caller throws away.
pub(crate) fn bootstrap(opts: &Options, target: &Path, progress: Progress<'_>) -> Result<Report> {
    let plan = plan::plan(opts, progress)?;
    // Before anything is downloaded: the second stage runs the image's programs.
    if let Some(entry) = foreign::check(&opts.arch)? {
        progress(Event::Note(format!(
            "{} programs run through {}",
            opts.arch,
            entry.display()
        )));
    }
    let (lists, downloaded_bytes) = first::first_stage(opts, &plan, target, progress)?;
    progress(Event::Phase("Installing packages in the image"));
    second::run(opts, &plan, target, lists, progress)?;
    customize::finish(target, &opts.hostname)?;
    customize::apply(opts, target, plan.epoch)?;
    if let Some(epoch) = plan.epoch {
        reproducible::finish(target, epoch)?;
    }
    Ok(Report {
        codename: plan.rules.codename.clone(),
        distro: format!("{:?}", plan.rules.distro).to_lowercase(),
        packages: plan.set.all(),
        downloaded_bytes,
    })
}

/// Only the first stage: verify, resolve, download, extract the required packages, merge /usr
/// and lay out /etc, /dev and the dpkg database, without running anything inside. For
/// inspecting a suite's layout (and for tests of foreign-architecture or fixture archives).
pub fn first_stage(opts: &Options, target: &Path, progress: Progress<'_>) -> Result<Report> {
    let plan = plan::plan(opts, progress)?;
    let (_, downloaded_bytes) = first::first_stage(opts, &plan, target, progress)?;
    Ok(Report {
        codename: plan.rules.codename.clone(),
        distro: format!("{:?}", plan.rules.distro).to_lowercase(),
        packages: plan.set.all(),
        downloaded_bytes,
    })
}

/// Resolves the package set without installing (the equivalent of `debootstrap --print-debs`).
pub fn print_debs(opts: &Options, progress: Progress<'_>) -> Result<Vec<String>> {
    let (_, _, set, _) = plan::resolve_only(opts, progress)?;
    Ok(set.all())
}
