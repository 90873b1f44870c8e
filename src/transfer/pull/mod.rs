//! pull-tar and pull-raw: a tarball (or a disk image) downloaded over HTTP(S), checked against a SHA256SUMS list (itself
//! checked against an OpenPGP signature) and imported into the store as it arrives, with no
//! copy of the download on disk. The image is committed only after the digest (and, before
//! the download starts, the signature) checked out; on any mismatch the staging directory is
//! removed. HTTP details (redirects, retries, resume) live in [`http`]; this module does not
//! print: progress goes to a callback.

pub(crate) mod http;
mod sums;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use crate::http::HttpError;
use crate::image::Source;
use crate::openpgp::{verify_detached, Keyring, OpenPgpError};
use crate::store::{ImageKind, ImageName, LockPurpose, Store, StoreError};
use crate::transfer::{self, TransferError, TreeTarget};

pub(crate) use http::{Client, Download};

/// Keyrings tried, in order, when none is given: rmach's own, then systemd-importd's (the
/// administrator's, then the vendor's), as machinectl looks for its own.
pub(crate) const DEFAULT_KEYRINGS: [&str; 3] = [
    "/etc/rmach/import-pubring.gpg",
    "/etc/systemd/import-pubring.gpg",
    "/usr/lib/systemd/import-pubring.gpg",
];

/// Checksum and signature lists are small; a larger answer is refused.
const SUMS_LIMIT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("{url}: not a URL rmach can pull: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("no checksum list for {url} (tried {tried}); use --verify=no to pull without one")]
    NoChecksums { url: String, tried: String },
    #[error("{sums} does not list {file}")]
    NotListed { sums: String, file: String },
    #[error("no signature for {sums} (tried {tried}); use --verify=checksum to skip the signature check")]
    NoSignature { sums: String, tried: String },
    #[error("{sums}: bad signature (keyring {keyring})")]
    BadSignature {
        sums: String,
        keyring: PathBuf,
        #[source]
        source: OpenPgpError,
    },
    #[error(transparent)]
    Keyring(OpenPgpError),
    #[error("no keyring: none of {tried} exists; give --keyring FILE or use --verify=checksum")]
    NoKeyring { tried: String },
    #[error("{url}: its SHA-256 is {actual} but {sums} says {expected}")]
    Checksum {
        url: String,
        sums: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: cannot import the {what}")]
    Import {
        url: String,
        what: &'static str,
        #[source]
        source: Box<TransferError>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How much of the download is checked (machinectl's `--verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    No,
    Checksum,
    Signature,
}

#[derive(Debug, Clone)]
pub(crate) struct PullOptions {
    pub(crate) verify: Verify,
    /// None: the first of [`DEFAULT_KEYRINGS`] that exists.
    pub(crate) keyring: Option<PathBuf>,
    pub(crate) force: bool,
    pub(crate) read_only: bool,
}

/// The SHA-256 a verified checksum list gives for the download, and the list's URL; None
/// with `--verify=no`.
pub(crate) type Expected = Option<([u8; 32], String)>;

/// What the caller hears about while a pull runs.
pub(crate) enum Event<'a> {
    /// A checksum list or signature was found and checked.
    Verified(&'a str),
    /// The download started; its size when the server said.
    Started(Option<u64>),
}

/// Bytes as they arrive, from the decoding thread.
pub(crate) type ByteCounter = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, Default)]
pub(crate) struct PullStats {
    pub(crate) members: u64,
    pub(crate) sha256: String,
    pub(crate) compression: &'static str,
    pub(crate) warnings: Vec<String>,
    pub(crate) stripped_top_dir: Option<std::ffi::OsString>,
}

#[derive(Debug)]
pub(crate) struct PullRawStats {
    pub(crate) sha256: String,
    pub(crate) compression: &'static str,
    pub(crate) qcow2: bool,
    /// Bytes of the raw image.
    pub(crate) size: u64,
}

/// The directory URL (with its trailing slash) and the file name of `url`.
pub(crate) fn split_url(url: &str) -> Result<(&str, &str), PullError> {
    let bad = |reason| PullError::BadUrl {
        url: url.into(),
        reason,
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("only http:// and https:// URLs are supported"))?;
    if rest.contains(['?', '#']) {
        return Err(bad("a query or fragment cannot name a file"));
    }
    let slash = rest.find('/').ok_or_else(|| bad("it names no file"))?;
    let file_start = url.len() - rest.len() + slash + rest[slash..].rfind('/').unwrap_or(0) + 1;
    let (dir, file) = url.split_at(file_start);
    if file.is_empty() {
        return Err(bad("it ends in /, so it names no file"));
    }
    Ok((dir, file))
}

/// The image name a URL gives: its last component with the store's suffix rules.
pub(crate) fn name_from_url(url: &str) -> Result<ImageName, PullError> {
    let (_, file) = split_url(url)?;
    Ok(crate::store::name_from_path(Path::new(file))?)
}

/// The keyring `opts` names, or the first default that exists.
pub(crate) fn load_keyring(path: Option<&Path>) -> Result<(Keyring, PathBuf), PullError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => DEFAULT_KEYRINGS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| PullError::NoKeyring {
                tried: DEFAULT_KEYRINGS.join(", "),
            })?,
    };
    let keyring = Keyring::read(&path).map_err(PullError::Keyring)?;
    Ok((keyring, path))
}

/// The SHA-256 the server's checksum list gives for `url`, checked as `verify` asks; None
/// for `Verify::No`. Tries `SHA256SUMS` beside the file, then `FILE.sha256`; signatures are
/// the list's name with `.gpg`, then `.asc`.
pub(crate) fn expected_digest(
    client: &Client,
    url: &str,
    verify: Verify,
    keyring: Option<&(Keyring, PathBuf)>,
    events: &dyn Fn(Event),
) -> Result<Expected, PullError> {
    if verify == Verify::No {
        return Ok(None);
    }
    let (dir, file) = split_url(url)?;
    let candidates = [
        (format!("{dir}SHA256SUMS"), false),
        (format!("{url}.sha256"), true),
    ];
    let mut found = None;
    for (sums_url, single) in &candidates {
        if let Some(list) = client.get_small(sums_url, SUMS_LIMIT)? {
            found = Some((sums_url.clone(), *single, list));
            break;
        }
    }
    let (sums_url, single, list) = found.ok_or_else(|| PullError::NoChecksums {
        url: url.into(),
        tried: candidates
            .iter()
            .map(|(u, _)| u.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if verify == Verify::Signature {
        let (keyring, keyring_path) = keyring.ok_or_else(|| PullError::NoKeyring {
            tried: DEFAULT_KEYRINGS.join(", "),
        })?;
        let sig_urls = [format!("{sums_url}.gpg"), format!("{sums_url}.asc")];
        let mut signature = None;
        for sig_url in &sig_urls {
            if let Some(sig) = client.get_small(sig_url, SUMS_LIMIT)? {
                signature = Some(sig);
                break;
            }
        }
        let signature = signature.ok_or_else(|| PullError::NoSignature {
            sums: sums_url.clone(),
            tried: sig_urls.join(", "),
        })?;
        verify_detached(keyring, &list, &signature).map_err(|source| PullError::BadSignature {
            sums: sums_url.clone(),
            keyring: keyring_path.clone(),
            source,
        })?;
        events(Event::Verified(&sums_url));
    }
    let text = String::from_utf8_lossy(&list);
    let digest = sums::find(&text, file, single).ok_or_else(|| PullError::NotListed {
        sums: sums_url.clone(),
        file: file.into(),
    })?;
    Ok(Some((digest, sums_url)))
}

/// What every pull does before the download: the URL checked, the keyring loaded, the
/// checksum list (and its signature) fetched and checked, as `opts.verify` asks.
fn verify_first(
    url: &str,
    opts: &PullOptions,
    events: &dyn Fn(Event),
) -> Result<(Client, Expected), PullError> {
    split_url(url)?;
    let keyring = match opts.verify {
        Verify::Signature => Some(load_keyring(opts.keyring.as_deref())?),
        _ => None,
    };
    let client = Client::new();
    let expected = expected_digest(&client, url, opts.verify, keyring.as_ref(), events)?;
    Ok((client, expected))
}

/// The download's digest against the list's, when there is one; the digest, for the report.
fn check_digest(
    url: &str,
    expected: Expected,
    digest: Option<[u8; 32]>,
) -> Result<[u8; 32], PullError> {
    // Always asked for; an empty input never gets this far.
    let digest = digest.unwrap_or_else(|| sha2::Sha256::digest(b"").into());
    match expected {
        Some((want, sums)) if want != digest => Err(PullError::Checksum {
            url: url.into(),
            sums,
            expected: hex::encode(want),
            actual: hex::encode(digest),
        }),
        _ => Ok(digest),
    }
}

/// One pull: where from, into which image, checked how, and who hears of its progress.
pub(crate) struct PullRequest<'a> {
    pub(crate) url: &'a str,
    pub(crate) name: &'a ImageName,
    pub(crate) opts: &'a PullOptions,
    pub(crate) events: &'a dyn Fn(Event),
    /// Sees every byte downloaded.
    pub(crate) bytes: ByteCounter,
}

/// Pulls the tarball at `req.url` into the store as `req.name`.
pub(crate) fn pull_tar(store: &Store, req: PullRequest<'_>) -> Result<PullStats, PullError> {
    let url = req.url;
    let (client, expected) = verify_first(url, req.opts, req.events)?;
    let target = TreeTarget::create(store, req.name, LockPurpose::Pull, req.opts.force, None)
        .map_err(|e| import_failed(url, "tarball", e))?;
    let (counted, failure) = start(&client, &req)?;
    let imported = transfer::extract_tar(target.tree(), store.root(), counted, true, &mut |_| {})
        .map_err(|e| {
        download_failed(&failure).unwrap_or_else(|| import_failed(url, "tarball", e))
    })?;
    let digest = check_digest(url, expected, imported.sha256)?;
    target
        .commit(None, req.opts.read_only)
        .map_err(|e| import_failed(url, "tarball", e))?;
    Ok(PullStats {
        members: imported.members,
        sha256: hex::encode(digest),
        compression: imported.compression.name(),
        warnings: imported.warnings,
        stripped_top_dir: imported.lifted,
    })
}

/// Pulls the disk image at `req.url` (raw or qcow2, any compression) into the store as the
/// raw image `req.name`, through the same verification as [`pull_tar`] and import-raw's
/// conversion.
pub(crate) fn pull_raw(store: &Store, req: PullRequest<'_>) -> Result<PullRawStats, PullError> {
    let url = req.url;
    let (client, expected) = verify_first(url, req.opts, req.events)?;
    let staging = store.create(req.name, LockPurpose::Pull, ImageKind::Raw, req.opts.force)?;
    let (counted, failure) = start(&client, &req)?;
    let report = transfer::write_raw(&staging, store, Source::Stream(Box::new(counted)), true)
        .map_err(|e| {
            download_failed(&failure).unwrap_or_else(|| import_failed(url, "disk image", e))
        })?;
    let digest = check_digest(url, expected, report.sha256)?;
    staging.commit(req.opts.read_only)?;
    Ok(PullRawStats {
        sha256: hex::encode(digest),
        compression: report.compression.name(),
        qcow2: report.qcow2.is_some(),
        size: report.size,
    })
}

/// Opens the download and says so; the slot keeps why it failed for good, if it does.
fn start(client: &Client, req: &PullRequest<'_>) -> Result<(Counted, FailureSlot), PullError> {
    let download = client.open(req.url)?;
    (req.events)(Event::Started(download.total()));
    let failure = download.failure_slot();
    Ok((
        Counted {
            inner: download,
            bytes: req.bytes.clone(),
        },
        failure,
    ))
}

type FailureSlot = Arc<Mutex<Option<HttpError>>>;

/// A download that failed for good says why through its slot, not through the io::Error
/// the importer saw.
fn download_failed(failure: &FailureSlot) -> Option<PullError> {
    let err = failure.lock().ok().and_then(|mut slot| slot.take())?;
    Some(PullError::Http(err))
}

fn import_failed(url: &str, what: &'static str, source: TransferError) -> PullError {
    match source {
        // Lock and staging problems are said as the store says them.
        TransferError::Store(e) | TransferError::Commit(e) => PullError::Store(e),
        source => PullError::Import {
            url: url.into(),
            what,
            source: Box::new(source),
        },
    }
}

struct Counted {
    inner: Download,
    bytes: ByteCounter,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.bytes)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://h:1/a/b/img.tar.zst").unwrap(),
            ("http://h:1/a/b/", "img.tar.zst")
        );
        assert_eq!(
            split_url("https://h/x.tar").unwrap(),
            ("https://h/", "x.tar")
        );
        assert!(split_url("ftp://h/x.tar").is_err());
        assert!(split_url("http://h/").is_err());
        assert!(split_url("http://h").is_err());
        assert!(split_url("http://h/x.tar?y").is_err());
        assert_eq!(
            name_from_url("http://h/d/dev.tar.zst").unwrap().as_str(),
            "dev"
        );
    }
}
