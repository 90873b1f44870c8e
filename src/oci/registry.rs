//! The distribution (registry v2) API: manifests and blobs in, uploads out. Auth follows the
//! registry's challenge: anonymous first; on a 401, `Basic` with the user's credentials, or
//! `Bearer` with a token fetched from the realm the challenge names (with the credentials,
//! when there are any). Credentials come from the standard files (see [`credentials_for`]).
//! `tls_verify: false` (skopeo's `--tls-verify=false`) accepts any certificate and falls back
//! to plain HTTP when the registry does not speak TLS.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;

use crate::http::{self, AgentOptions, HttpError};

use super::blobs::BlobCache;
use super::digest::Digest;
use super::spec::{Descriptor, ACCEPT_MANIFESTS};
use super::{io_err, OciError, Result};

mod auth;
mod reference;

pub(crate) use auth::{credentials_for, Credentials};
pub(crate) use reference::Reference;

pub(crate) struct Registry {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://host[:port]`.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The Authorization header that last worked.
    authorization: Mutex<Option<String>>,
}

/// A request body.
enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a Path),
}

type Response = ureq::http::Response<ureq::Body>;

fn agent(tls_verify: bool) -> ureq::Agent {
    http::agent(AgentOptions {
        tls_verify,
        response_timeout: Duration::from_secs(120),
    })
}

impl Registry {
    /// Opens the registry of `reference` for its repository.
    pub(crate) fn connect(reference: &Reference, tls_verify: bool) -> Result<Registry> {
        let agent = agent(tls_verify);
        let mut base = format!("https://{}", reference.registry);
        if !tls_verify {
            // Whether the registry speaks TLS at all: any HTTP answer (401 included) says yes.
            let probe = format!("{base}/v2/");
            if agent.get(&probe).call().is_err() {
                base = format!("http://{}", reference.registry);
            }
        }
        Ok(Registry {
            agent,
            base,
            repository: reference.repository.clone(),
            credentials: credentials_for(&reference.registry),
            authorization: Mutex::new(None),
        })
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    /// One request with auth (answering one 401 challenge) and retries of transport errors
    /// and 5xx answers.
    fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        scope: &str,
    ) -> Result<Response> {
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            let mut req = ureq::http::Request::builder()
                .method(method)
                .uri(url)
                .header("Accept-Encoding", "identity");
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(auth) = self.authorization.lock().ok().and_then(|a| a.clone()) {
                req = req.header("Authorization", auth);
            }
            let sent = match &body {
                Body::None => req.body(()).map(|r| self.agent.run(r)),
                Body::Bytes(b) => req.body(b.to_vec()).map(|r| self.agent.run(r)),
                Body::File(p) => {
                    let file = std::fs::File::open(p).map_err(io_err(*p))?;
                    req.body(file).map(|r| self.agent.run(r))
                }
            };
            let resp = match sent {
                Ok(Ok(resp)) => resp,
                Err(source) => {
                    return Err(HttpError::Transport {
                        url: url.to_string(),
                        source: source.into(),
                    }
                    .into())
                }
                // Connection failures and resets are worth another try; the last one is
                // reported.
                Ok(Err(e)) => {
                    let e = HttpError::transport(url, e);
                    if e.is_transient() && attempt + 1 < http::ATTEMPTS {
                        http::backoff(attempt);
                        attempt += 1;
                        continue;
                    }
                    return Err(transport_err(e));
                }
            };
            let status = resp.status().as_u16();
            if status == 401 && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let header = auth::answer(
                    &self.agent,
                    url,
                    &challenge,
                    scope,
                    self.credentials.as_ref(),
                )?;
                if let Ok(mut a) = self.authorization.lock() {
                    *a = Some(header);
                }
                continue;
            }
            if status >= 500 && attempt + 1 < http::ATTEMPTS {
                http::backoff(attempt);
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repository)
    }

    /// A manifest or index by tag or digest: its bytes and the media type the registry gave.
    /// Fetched by digest, the bytes are checked against it.
    pub(crate) fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>)> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self.call(
            "GET",
            &url,
            &[("Accept", ACCEPT_MANIFESTS)],
            Body::None,
            &self.pull_scope(),
        )?;
        let resp = expect_ok(resp, &url)?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let bytes = http::read_body(resp, &url, 8 << 20)?;
        if reference.starts_with("sha256:") {
            let want = Digest::parse(reference)?;
            let got = Digest::of(&bytes);
            if got != want {
                return Err(OciError::DigestMismatch {
                    what: url,
                    expected: want.to_string(),
                    actual: got.to_string(),
                });
            }
        }
        Ok((bytes, media_type))
    }

    /// The blob of `desc` in the cache: downloaded (and checked) unless already there.
    /// `on_bytes` hears of every chunk downloaded.
    pub(crate) fn blob(
        &self,
        desc: &Descriptor,
        cache: &BlobCache,
        on_bytes: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<PathBuf> {
        let digest = Digest::parse(&desc.digest)?;
        if let Some(path) = cache.get(&digest, desc.size) {
            return Ok(path);
        }
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.call("GET", &url, &[], Body::None, &self.pull_scope())?;
        let resp = expect_ok(resp, &url)?;
        let reader = resp
            .into_body()
            .into_with_config()
            .limit(desc.size.saturating_add(1))
            .reader();
        let mut counted = Counted { reader, on_bytes };
        cache.put(&digest, desc.size, &mut counted, &url)
    }

    /// Whether the repository already has the blob (then it need not be uploaded).
    pub(crate) fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.call("HEAD", &url, &[], Body::None, &self.push_scope())?;
        Ok(resp.status().is_success())
    }

    /// Uploads the file at `path` as blob `digest` (a monolithic upload: POST, then PUT).
    pub(crate) fn push_blob(&self, digest: &Digest, path: &Path) -> Result<()> {
        if self.has_blob(digest)? {
            return Ok(());
        }
        let url = self.url("blobs/uploads/");
        let resp = self.call("POST", &url, &[], Body::None, &self.push_scope())?;
        if resp.status().as_u16() != 202 {
            return Err(status_err(&url, resp));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Invalid {
                what: url.clone(),
                reason: "an upload answer without a Location".into(),
            })?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{sep}digest={digest}");
        let resp = self.call(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Body::File(path),
            &self.push_scope(),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(status_err(&location, resp));
        }
        Ok(())
    }

    /// Uploads a manifest (or index) under a tag or its digest.
    pub(crate) fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self.call(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Body::Bytes(bytes),
            &self.push_scope(),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(status_err(&url, resp));
        }
        Ok(())
    }
}

fn expect_ok(resp: Response, url: &str) -> Result<Response> {
    if resp.status().as_u16() == 200 {
        Ok(resp)
    } else {
        Err(status_err(url, resp))
    }
}

/// An error for an unexpected answer, with the registry's own message when it sent one.
fn status_err(url: &str, resp: Response) -> OciError {
    let status = resp.status().as_u16();
    match status {
        404 => {
            return OciError::NotFound {
                url: url.to_string(),
            }
        }
        401 | 403 => {
            return OciError::Denied {
                url: url.to_string(),
                status,
            }
        }
        _ => {}
    }
    let text = resp
        .into_body()
        .into_with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    let reason = if detail.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {detail}")
    };
    http_err(url, reason)
}

/// A failure to talk to the registry at all; a TLS failure says what to do about it.
pub(super) fn transport_err(err: HttpError) -> OciError {
    if err.is_tls() {
        OciError::Tls { source: err }
    } else {
        OciError::Http(err)
    }
}

fn http_err(url: &str, reason: String) -> OciError {
    OciError::Status {
        url: url.to_string(),
        reason,
    }
}

/// `user:password` as a Basic Authorization header.
fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.user, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

struct Counted<'a, R> {
    reader: R,
    on_bytes: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.reader.read(buf)?;
        if let Some(f) = self.on_bytes {
            f(n as u64);
        }
        Ok(n)
    }
}

/// A registry repository as a [`Source`], its blobs going through the cache.
pub(crate) struct RegistrySource<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) cache: &'a BlobCache,
    pub(crate) on_bytes: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl super::image::Source for RegistrySource<'_> {
    fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let (bytes, _) = self.registry.manifest(&desc.digest)?;
        if bytes.len() as u64 != desc.size {
            return Err(OciError::SizeMismatch {
                what: desc.digest.clone(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    fn blob(&self, desc: &Descriptor) -> Result<PathBuf> {
        self.registry.blob(desc, self.cache, self.on_bytes)
    }
}
