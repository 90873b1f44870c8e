//! OCI images: the spec's JSON documents ([`spec`]), content digests ([`digest`]), the shared
//! blob cache ([`blobs`]), applying layers with whiteouts and opaque directories through the
//! safe extractor ([`layers`]), OCI image layouts and `docker save` archives ([`layout`]), the
//! distribution registry API with anonymous, basic and token auth ([`registry`]), and the
//! image's run settings kept beside it ([`settings`]). It does not know the store's layout or
//! names: callers hand it a directory to fill or read. It never prints.

pub(crate) mod blobs;
pub(crate) mod digest;
pub(crate) mod image;
pub(crate) mod layers;
pub(crate) mod layout;
pub(crate) mod registry;
pub(crate) mod settings;
pub(crate) mod spec;

use std::path::PathBuf;

pub(crate) use blobs::BlobCache;
pub(crate) use digest::Digest;

#[derive(Debug, thiserror::Error)]
pub(crate) enum OciError {
    #[error("{digest:?} is not a sha256 digest")]
    BadDigest { digest: String },
    #[error("{what}: digest is {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {actual} bytes, expected {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not valid JSON for an OCI document")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("bad image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("the registry's TLS was refused; for a registry with a self-signed certificate or without TLS use --tls-verify=false")]
    Tls {
        #[source]
        source: crate::http::HttpError,
    },
    /// An answer the registry gave instead of what was asked, with its own message.
    #[error("{url}: {reason}")]
    Status { url: String, reason: String },
    #[error("{url}: not found (HTTP 404)")]
    NotFound { url: String },
    #[error("{url}: access denied (HTTP {status}); log in with skopeo login or podman login, or check the credentials in auth.json")]
    Denied { url: String, status: u16 },
    #[error("{what}: no image for {arch}/linux (it has: {available}); choose one with --arch")]
    NoPlatform {
        what: String,
        arch: String,
        available: String,
    },
    #[error("layer {digest}: cannot apply it")]
    Layer {
        digest: String,
        #[source]
        source: crate::archive::ArchiveError,
    },
    #[error("layer {digest}: cannot apply whiteout {path:?}")]
    Whiteout {
        digest: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) type Result<T, E = OciError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> OciError {
    let path = path.into();
    move |source| OciError::Io { path, source }
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| OciError::Json {
        what: what.into(),
        source,
    })
}
