//! HTTP(S) downloads for pull over [`crate::http`] (the agent, retries with back-off, how
//! failures are told apart, shared with the registry client): small files in memory, and a
//! body reader that resumes an interrupted transfer with a Range request from the byte where
//! it broke, so a dropped connection costs nothing twice.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::{self, AgentOptions, HttpError, ATTEMPTS};

/// A shared HTTP agent.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
}

type Response = ureq::http::Response<ureq::Body>;

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub(crate) fn new() -> Client {
        let agent = http::agent(AgentOptions {
            tls_verify: true,
            response_timeout: Duration::from_secs(60),
        });
        Client { agent }
    }

    /// A small file in memory, or None when the server answers 404/410.
    pub(crate) fn get_small(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, HttpError> {
        let got = http::retry(|| {
            let (resp, _) = self.request(url, 0)?;
            let mut buf = Vec::new();
            let mut body = resp
                .into_body()
                .into_with_config()
                .limit(limit + 1)
                .reader();
            body.read_to_end(&mut buf)
                .map_err(|source| HttpError::Read {
                    url: url.into(),
                    source,
                })?;
            if buf.len() as u64 > limit {
                return Err(HttpError::TooLarge {
                    url: url.into(),
                    limit,
                });
            }
            Ok(buf)
        });
        match got {
            Ok(buf) => Ok(Some(buf)),
            Err(HttpError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens `url` for streaming. The reader resumes by itself after a broken connection;
    /// a failure it cannot get past is left in its `failure` slot, as the reader itself can
    /// only return an `io::Error`.
    pub(crate) fn open(&self, url: &str) -> Result<Download, HttpError> {
        let (resp, _) = http::retry(|| self.request(url, 0))?;
        let total = content_length(&resp);
        Ok(Download {
            client: self.clone(),
            url: url.into(),
            body: Some(body_reader(resp)),
            offset: 0,
            total,
            failures: 0,
            failure: Arc::new(Mutex::new(None)),
        })
    }

    /// One GET from byte `from`; the second value is the first byte of the body (0 when the
    /// server ignored the Range and sent everything).
    fn request(&self, url: &str, from: u64) -> Result<(Response, u64), HttpError> {
        // The bytes as stored: a transfer encoding would change what is hashed and what a
        // Range counts.
        let mut req = self.agent.get(url).header("Accept-Encoding", "identity");
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        let resp = req.call().map_err(|e| HttpError::transport(url, e))?;
        match resp.status().as_u16() {
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
                    _ => Err(HttpError::BadRange {
                        url: url.into(),
                        from,
                    }),
                }
            }
            _ => Err(HttpError::status(url, resp.status())),
        }
    }
}

fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn body_reader(resp: Response) -> ureq::BodyReader<'static> {
    resp.into_body().into_with_config().limit(u64::MAX).reader()
}

/// A streaming download that resumes after a broken connection (Range from the current
/// offset; if the server ignores Range, the bytes already read are skipped).
pub(crate) struct Download {
    client: Client,
    url: String,
    body: Option<ureq::BodyReader<'static>>,
    offset: u64,
    total: Option<u64>,
    failures: u32,
    failure: Arc<Mutex<Option<HttpError>>>,
}

impl Download {
    /// The size the server announced, if it did.
    pub(crate) fn total(&self) -> Option<u64> {
        self.total
    }

    /// Where the reason for an `io::Error` from `read` is kept.
    pub(crate) fn failure_slot(&self) -> Arc<Mutex<Option<HttpError>>> {
        self.failure.clone()
    }

    /// Keeps `err` for the caller and says it as an `io::Error` to the reader's reader.
    fn fail(&mut self, err: HttpError) -> io::Error {
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(err);
        }
        io::Error::other("the download failed")
    }

    /// Reopens the transfer at `self.offset` after `why`.
    fn reopen(&mut self, mut why: HttpError) -> io::Result<()> {
        self.body = None;
        loop {
            self.failures += 1;
            if self.failures >= ATTEMPTS {
                return Err(self.fail(HttpError::GaveUp {
                    attempts: ATTEMPTS,
                    source: Box::new(why),
                }));
            }
            http::backoff(self.failures - 1);
            match self.client.request(&self.url, self.offset) {
                Ok((resp, start)) => {
                    let mut body = body_reader(resp);
                    // The server ignored the Range: skip what was already read.
                    if start < self.offset {
                        let skip = self.offset - start;
                        match io::copy(&mut (&mut body).take(skip), &mut io::sink()) {
                            Ok(n) if n == skip => {}
                            Ok(_) => {
                                why = HttpError::Short {
                                    url: self.url.clone(),
                                };
                                continue;
                            }
                            Err(source) => {
                                why = self.read_err(source);
                                continue;
                            }
                        }
                    }
                    self.body = Some(body);
                    return Ok(());
                }
                Err(e) if !e.is_transient() => return Err(self.fail(e)),
                Err(e) => why = e,
            }
        }
    }

    fn read_err(&self, source: io::Error) -> HttpError {
        HttpError::Read {
            url: self.url.clone(),
            source,
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
                let why = HttpError::Closed {
                    url: self.url.clone(),
                    offset: self.offset,
                };
                self.reopen(why)?;
                continue;
            };
            match body.read(buf) {
                Ok(0) => match self.total {
                    Some(total) if self.offset < total => {
                        let why = HttpError::Closed {
                            url: self.url.clone(),
                            offset: self.offset,
                        };
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
                Err(e) => {
                    let why = self.read_err(e);
                    self.reopen(why)?;
                }
            }
        }
    }
}
