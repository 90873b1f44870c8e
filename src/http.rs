//! HTTP(S) as pulls and the registry client both speak it: one `ureq` agent configuration
//! (redirects, proxies from the environment, rustls, timeouts, the user agent), how a failed
//! request is told apart (TLS, worth another attempt, final), the answers every caller treats
//! alike (404/410, 408/429/5xx), and the back-off between attempts. Errors keep the URL and
//! their cause; nothing here prints.

use std::time::Duration;

/// How many times a request is tried before its last failure is reported.
pub(crate) const ATTEMPTS: u32 = 5;

/// Why a request failed. Each variant names the URL; a cause is a `#[source]`, never text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("{url}: TLS failed")]
    Tls {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("{url}: the request failed")]
    Transport {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("{url}: reading the answer failed")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: not found (HTTP {status})")]
    NotFound { url: String, status: u16 },
    #[error("{url}: HTTP {status}{}", reason.map(|r| format!(" {r}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        reason: Option<&'static str>,
    },
    #[error("{url}: larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: a 206 answer that does not start at byte {from}")]
    BadRange { url: String, from: u64 },
    #[error("{url}: the connection closed at byte {offset}")]
    Closed { url: String, offset: u64 },
    #[error("{url}: the server sent less on a retry")]
    Short { url: String },
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        attempts: u32,
        #[source]
        source: Box<HttpError>,
    },
}

impl HttpError {
    /// Whether another attempt may succeed: connection failures, timeouts and 408/429/5xx
    /// answers; not TLS, a bad URL, a missing file or any other answer.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { source, .. } => !matches!(
                source,
                ureq::Error::BadUri(_)
                    | ureq::Error::Http(_)
                    | ureq::Error::InvalidProxyUrl
                    | ureq::Error::TooManyRedirects
                    | ureq::Error::RedirectFailed
            ),
            HttpError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            HttpError::Read { .. }
            | HttpError::BadRange { .. }
            | HttpError::Closed { .. }
            | HttpError::Short { .. } => true,
            HttpError::Tls { .. }
            | HttpError::NotFound { .. }
            | HttpError::TooLarge { .. }
            | HttpError::GaveUp { .. } => false,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, HttpError::Tls { .. })
    }

    /// A failure to talk to `url` at all, TLS told apart.
    pub(crate) fn transport(url: &str, source: ureq::Error) -> HttpError {
        let tls = match &source {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) => true,
            // rustls reports handshake and certificate failures as InvalidData I/O errors.
            ureq::Error::Io(e) => {
                e.kind() == std::io::ErrorKind::InvalidData && url.starts_with("https:")
            }
            _ => false,
        };
        let url = url.to_string();
        if tls {
            HttpError::Tls { url, source }
        } else {
            HttpError::Transport { url, source }
        }
    }

    /// An answer with a status the caller did not want: 404 and 410 as "not found".
    pub(crate) fn status(url: &str, status: ureq::http::StatusCode) -> HttpError {
        let url = url.to_string();
        match status.as_u16() {
            code @ (404 | 410) => HttpError::NotFound { url, status: code },
            code => HttpError::Status {
                url,
                status: code,
                reason: status.canonical_reason(),
            },
        }
    }
}

/// The agent's settings that differ between callers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentOptions {
    /// Check the server's certificate (skopeo's `--tls-verify`).
    pub(crate) tls_verify: bool,
    /// How long to wait for the answer's headers.
    pub(crate) response_timeout: Duration,
}

/// An agent that hands every status to the caller, follows up to 10 redirects, takes proxies
/// from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY: ureq's default
/// configuration reads them) and names rmach as the user agent.
pub(crate) fn agent(opts: AgentOptions) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(10)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(opts.response_timeout))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("rmach/", env!("CARGO_PKG_VERSION")));
    if !opts.tls_verify {
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        );
    }
    config.build().into()
}

/// The whole body of `resp`, the answer from `url`, in memory; more than `limit` bytes fail
/// the read.
pub(crate) fn read_body(
    resp: ureq::http::Response<ureq::Body>,
    url: &str,
    limit: u64,
) -> Result<Vec<u8>, HttpError> {
    resp.into_body()
        .into_with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|source| HttpError::Transport {
            url: url.to_string(),
            source,
        })
}

/// Waits before attempt `attempt + 1`: 250 ms, doubling, at most 8 s.
pub(crate) fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt.min(5)));
}

/// Runs `request` until it succeeds, fails for good, or has failed [`ATTEMPTS`] times; the
/// last failure is reported inside [`HttpError::GaveUp`].
pub(crate) fn retry<T>(mut request: impl FnMut() -> Result<T, HttpError>) -> Result<T, HttpError> {
    let mut attempt = 0;
    loop {
        match request() {
            Ok(value) => return Ok(value),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) if attempt + 1 >= ATTEMPTS => {
                return Err(HttpError::GaveUp {
                    attempts: ATTEMPTS,
                    source: Box::new(e),
                })
            }
            Err(_) => {
                backoff(attempt);
                attempt += 1;
            }
        }
    }
}
