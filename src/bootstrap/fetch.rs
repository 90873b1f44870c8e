//! Fetching from the mirror over http, https or file URLs.
//!
//! The client is `ureq` (blocking, rustls): a bootstrap makes a few hundred plain GETs from
//! one host, which worker threads over a connection pool serve well; `reqwest` would bring a
//! tokio runtime and hyper for nothing in return and compile twice as long.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::{io_err, BootstrapError, Result};

pub(crate) struct Fetcher {
    agent: ureq::Agent,
}

/// How a fetch failed, so the caller can tell "retry" from "give up".
enum Failure {
    NotFound,
    Permanent(BootstrapError),
    Transient(BootstrapError),
}

const ATTEMPTS: u32 = 4;

impl Fetcher {
    pub(crate) fn new() -> Fetcher {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(30)))
            .max_idle_connections_per_host(16)
            .user_agent(concat!("rmach/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Fetcher { agent }
    }

    /// A small file (Release, InRelease) in memory; None when the mirror answers 404.
    pub(crate) fn get_optional(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut buf = Vec::new();
            match self.stream(url, 0, &mut |chunk| {
                buf.extend_from_slice(chunk);
                if buf.len() as u64 > limit {
                    return Err(BootstrapError::TooLarge {
                        url: url.into(),
                        limit,
                    });
                }
                Ok(())
            }) {
                Ok(_) => return Ok(Some(buf)),
                Err(Failure::NotFound) => return Ok(None),
                Err(Failure::Permanent(err)) => return Err(err),
                Err(Failure::Transient(err)) => retry(attempt, err)?,
            }
        }
    }

    pub(crate) fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>> {
        self.get_optional(url, limit)?
            .ok_or_else(|| super::not_found(url))
    }

    /// Downloads `url` into `part`, resuming what an earlier attempt (or run) left there with an
    /// HTTP Range request, retrying transient failures. `on_bytes` sees every chunk's length.
    pub(crate) fn download(
        &self,
        url: &str,
        part: &Path,
        size: u64,
        on_bytes: &dyn Fn(u64),
    ) -> Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(part)
                .map_err(io_err(part))?;
            let mut have = file.metadata().map_err(io_err(part))?.len();
            if have > size {
                file.set_len(0).map_err(io_err(part))?;
                have = 0;
            }
            if have == size {
                return Ok(());
            }
            let result = self.stream(url, have, &mut |chunk| {
                file.write_all(chunk).map_err(io_err(part))?;
                on_bytes(chunk.len() as u64);
                Ok(())
            });
            match result {
                Ok(true) => {}
                // The server ignored the Range: start over with what it sent.
                Ok(false) if have > 0 => {
                    drop(file);
                    let _ = std::fs::remove_file(part);
                    retry(attempt, BootstrapError::NoResume { url: url.into() })?;
                    continue;
                }
                Ok(false) => {}
                Err(Failure::NotFound) => return Err(super::not_found(url)),
                Err(Failure::Permanent(err)) => return Err(err),
                Err(Failure::Transient(err)) => {
                    retry(attempt, err)?;
                    continue;
                }
            }
            let len = std::fs::metadata(part).map_err(io_err(part))?.len();
            if len == size {
                return Ok(());
            }
            let short = BootstrapError::ShortDownload {
                url: url.into(),
                got: len,
                size,
            };
            retry(attempt, short)?;
        }
    }

    /// Streams `url` from byte `from` into `sink`. Ok(true) when the bytes start at `from`
    /// (a 206, or a 200 for `from == 0`); Ok(false) when a 200 restarted from zero.
    fn stream(
        &self,
        url: &str,
        from: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> std::result::Result<bool, Failure> {
        let read_failed = |source| BootstrapError::FetchRead {
            url: url.into(),
            source,
        };
        if let Some(path) = url.strip_prefix("file://") {
            let mut file = File::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Failure::NotFound,
                _ => Failure::Permanent(read_failed(e)),
            })?;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))
                .map_err(|e| Failure::Permanent(read_failed(e)))?;
            pump(&mut file, sink, read_failed).map_err(Failure::Permanent)?;
            return Ok(true);
        }
        let mut req = self.agent.get(url);
        if from > 0 {
            req = req.header("Range", format!("bytes={from}-"));
        }
        let resp = req.call().map_err(|source| {
            Failure::Transient(BootstrapError::Fetch {
                url: url.into(),
                source,
            })
        })?;
        let status = resp.status().as_u16();
        let refused = || BootstrapError::HttpStatus {
            url: url.into(),
            status,
        };
        let resumed = match status {
            200 => from == 0,
            206 => true,
            404 | 410 => return Err(Failure::NotFound),
            500..=599 | 408 | 429 => return Err(Failure::Transient(refused())),
            _ => return Err(Failure::Permanent(refused())),
        };
        if status == 200 && from > 0 {
            return Ok(false);
        }
        let mut reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        pump(&mut reader, sink, read_failed).map_err(Failure::Transient)?;
        Ok(resumed)
    }
}

/// Copies `reader` into `sink`; a read error becomes `read_failed`'s error.
fn pump(
    reader: &mut dyn Read,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    read_failed: impl Fn(std::io::Error) -> BootstrapError,
) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failed(e)),
        };
        sink(&buf[..n])?;
    }
}

/// After a transient failure in attempt `attempt` (from 1): the failure when it was the last
/// attempt, else a pause that doubles with every attempt.
fn retry(attempt: u32, failure: BootstrapError) -> Result<()> {
    if attempt >= ATTEMPTS {
        return Err(failure);
    }
    std::thread::sleep(Duration::from_millis(100 << attempt));
    Ok(())
}
