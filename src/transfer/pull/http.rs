//! HTTP(S) downloads for pull: one `ureq` agent (redirects, proxies from the environment,
//! rustls), retries with back-off, and a body reader that resumes an interrupted transfer with
//! a Range request from the byte where it broke, so a dropped connection costs nothing twice.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PullError;

const ATTEMPTS: u32 = 5;

/// A shared HTTP agent.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

/// How one request failed: worth another attempt or not.
enum Failure {
    Transient(String),
    Permanent(PullError),
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        // Proxies come from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY):
        // ureq's default configuration reads them.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(10)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("rmach/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client { agent }
    }

    /// A small file in memory, or None when the server answers 404/410.
    pub fn get_small(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, PullError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            match self.request(url, 0) {
                Ok((resp, _)) => {
                    let mut buf = Vec::new();
                    let mut body = resp
                        .into_body()
                        .into_with_config()
                        .limit(limit + 1)
                        .reader();
                    match body.read_to_end(&mut buf) {
                        Ok(_) if buf.len() as u64 > limit => {
                            return Err(PullError::Http {
                                url: url.into(),
                                reason: format!("larger than {limit} bytes"),
                            })
                        }
                        Ok(_) => return Ok(Some(buf)),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(Failure::Permanent(PullError::NotFound { .. })) => return Ok(None),
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(reason)) => last = reason,
            }
            backoff(attempt);
        }
        Err(PullError::Http {
            url: url.into(),
            reason: format!("{last} (after {ATTEMPTS} attempts)"),
        })
    }

    /// Opens `url` for streaming. The reader resumes by itself after a broken connection;
    /// a failure it cannot get past is left in its `failure` slot, as the reader itself can
    /// only return an `io::Error`.
    pub fn open(&self, url: &str) -> Result<Download, PullError> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            match self.request(url, 0) {
                Ok((resp, _)) => {
                    let total = content_length(&resp);
                    return Ok(Download {
                        client: self.clone(),
                        url: url.into(),
                        body: Some(body_reader(resp)),
                        offset: 0,
                        total,
                        failures: 0,
                        failure: Arc::new(Mutex::new(None)),
                    });
                }
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(reason)) => last = reason,
            }
            backoff(attempt);
        }
        Err(PullError::Http {
            url: url.into(),
            reason: format!("{last} (after {ATTEMPTS} attempts)"),
        })
    }

    /// One GET from byte `from`; the second value is the first byte of the body (0 when the
    /// server ignored the Range and sent everything).
    fn request(
        &self,
        url: &str,
        from: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, u64), Failure> {
        // The bytes as stored: a transfer encoding would change what is hashed and what a
        // Range counts.
        let mut req = self.agent.get(url).header("Accept-Encoding", "identity");
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        let resp = req.call().map_err(|e| classify(url, e))?;
        let status = resp.status();
        let code = status.as_u16();
        let reason = || format!("HTTP {code} {}", status.canonical_reason().unwrap_or(""));
        match code {
            200 => Ok((resp, 0)),
            206 => {
                let start = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                match start {
                    Some(start) if start == from => Ok((resp, from)),
                    _ => Err(Failure::Transient(format!(
                        "a 206 answer that does not start at byte {from}"
                    ))),
                }
            }
            404 | 410 => Err(Failure::Permanent(PullError::NotFound { url: url.into() })),
            408 | 429 | 500..=599 => Err(Failure::Transient(reason().trim_end().into())),
            _ => Err(Failure::Permanent(PullError::Http {
                url: url.into(),
                reason: reason().trim_end().into(),
            })),
        }
    }
}

fn content_length(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn body_reader(resp: ureq::http::Response<ureq::Body>) -> ureq::BodyReader<'static> {
    resp.into_body().into_with_config().limit(u64::MAX).reader()
}

/// TLS and bad URLs are not worth retrying; refused connections, resets and timeouts are.
fn classify(url: &str, err: ureq::Error) -> Failure {
    let text = one_line(&err);
    match err {
        ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::InvalidProxyUrl
        | ureq::Error::TooManyRedirects
        | ureq::Error::RedirectFailed => Failure::Permanent(PullError::Http {
            url: url.into(),
            reason: text,
        }),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => Failure::Permanent(PullError::Http {
            url: url.into(),
            reason: format!("TLS: {text}"),
        }),
        // rustls reports handshake and certificate failures as InvalidData I/O errors.
        ureq::Error::Io(e)
            if e.kind() == io::ErrorKind::InvalidData && url.starts_with("https:") =>
        {
            Failure::Permanent(PullError::Http {
                url: url.into(),
                reason: format!("TLS: {}", text.trim_start_matches("io: ")),
            })
        }
        ureq::Error::Timeout(_) => Failure::Transient(format!("timed out ({text})")),
        _ => Failure::Transient(text),
    }
}

fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt.min(5)));
}

/// A streaming download that resumes after a broken connection (Range from the current
/// offset; if the server ignores Range, the bytes already read are skipped).
pub struct Download {
    client: Client,
    url: String,
    body: Option<ureq::BodyReader<'static>>,
    offset: u64,
    total: Option<u64>,
    failures: u32,
    failure: Arc<Mutex<Option<PullError>>>,
}

impl Download {
    /// The size the server announced, if it did.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Where the reason for an `io::Error` from `read` is kept.
    pub fn failure_slot(&self) -> Arc<Mutex<Option<PullError>>> {
        self.failure.clone()
    }

    fn give_up(&mut self, reason: String) -> io::Error {
        let err = PullError::Http {
            url: self.url.clone(),
            reason,
        };
        let text = err.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(err);
        }
        io::Error::other(text)
    }

    /// Reopens the transfer at `self.offset` after `why`.
    fn reopen(&mut self, why: String) -> io::Result<()> {
        self.body = None;
        let mut why = why;
        loop {
            self.failures += 1;
            if self.failures >= ATTEMPTS {
                let got = self.offset;
                return Err(self.give_up(format!(
                    "{why} after {got} bytes (gave up after {ATTEMPTS} attempts)"
                )));
            }
            backoff(self.failures - 1);
            match self.client.request(&self.url, self.offset) {
                Ok((resp, start)) => {
                    let mut body = body_reader(resp);
                    // The server ignored the Range: skip what was already read.
                    if start < self.offset {
                        let skip = self.offset - start;
                        match io::copy(&mut (&mut body).take(skip), &mut io::sink()) {
                            Ok(n) if n == skip => {}
                            Ok(_) => {
                                why = "the server sent less on a retry".into();
                                continue;
                            }
                            Err(e) => {
                                why = e.to_string();
                                continue;
                            }
                        }
                    }
                    self.body = Some(body);
                    return Ok(());
                }
                Err(Failure::Permanent(e)) => {
                    let text = e.to_string();
                    if let Ok(mut slot) = self.failure.lock() {
                        slot.get_or_insert(e);
                    }
                    return Err(io::Error::other(text));
                }
                Err(Failure::Transient(reason)) => why = reason,
            }
        }
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                self.reopen("the connection broke".into())?;
                continue;
            };
            match body.read(buf) {
                Ok(0) => match self.total {
                    Some(total) if self.offset < total => {
                        let why = format!("the connection closed at byte {}", self.offset);
                        self.reopen(why)?;
                    }
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.offset += n as u64;
                    // A resumed transfer that makes progress earns its attempts back: only a
                    // server that keeps failing without sending anything is given up on.
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.reopen(e.to_string())?,
            }
        }
    }
}
