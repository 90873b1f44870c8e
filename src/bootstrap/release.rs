//! The suite's Release file: fetched as InRelease (or Release + Release.gpg), verified against
//! the keyring, checked for expiry (Valid-Until), then parsed into the table of index files
//! with their sizes and SHA256 sums. Nothing unsigned is ever read.

use std::collections::HashMap;

use super::fetch::Fetcher;
use super::{io_err, BootstrapError, Result};
use crate::openpgp::{self, Keyring, OpenPgpError};
use std::path::Path;

#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub(crate) origin: String,
    pub(crate) codename: String,
    /// The Suite field (`stable`, `bookworm-updates` ...).
    pub(crate) suite: String,
    /// The Date field as Unix time (0 when absent).
    pub(crate) date: i64,
    /// The Date field as written.
    pub(crate) date_text: String,
    pub(crate) by_hash: bool,
    pub(crate) components: Vec<String>,
    /// `dists/SUITE` under the mirror, where indices are fetched from.
    pub(crate) dists_url: String,
    /// Path under `dists/SUITE` → (SHA256, size).
    pub(crate) files: HashMap<String, (String, u64)>,
}

const MAX_RELEASE: u64 = 64 << 20;

/// Fetches and verifies the Release file of `suite` on `mirror`.
pub(crate) fn fetch(
    fetcher: &Fetcher,
    mirror: &str,
    suite: &str,
    keyring: &Keyring,
    keyring_name: &str,
) -> Result<Release> {
    let dists_url = format!("{mirror}/dists/{suite}");
    let inrelease_url = format!("{dists_url}/InRelease");
    let bad_sig = |url: &str, source: OpenPgpError| BootstrapError::BadSignature {
        url: url.to_string(),
        keyring: keyring_name.to_string(),
        source,
    };
    let (text, url) = match fetcher.get_optional(&inrelease_url, MAX_RELEASE)? {
        Some(signed) => {
            let text =
                openpgp::verify_inline(keyring, &signed).map_err(|r| bad_sig(&inrelease_url, r))?;
            (text, inrelease_url)
        }
        None => {
            let url = format!("{dists_url}/Release");
            let data = fetcher
                .get_optional(&url, MAX_RELEASE)?
                .ok_or_else(|| super::not_found(&inrelease_url))?;
            let sig_url = format!("{url}.gpg");
            let sig = fetcher.get(&sig_url, 1 << 20)?;
            openpgp::verify_detached(keyring, &data, &sig).map_err(|r| bad_sig(&sig_url, r))?;
            (data, url)
        }
    };
    let text = String::from_utf8(text).map_err(|_| BootstrapError::BadRelease {
        url: url.clone(),
        reason: "not UTF-8".into(),
    })?;
    let release = parse(&text, &url, dists_url, now())?;
    // A validly signed Release of another suite (a mirror replaying bookworm's file for
    // trixie, say) must not pass for the suite asked for: apt refuses it as well.
    if release.codename != suite && release.suite != suite {
        return Err(BootstrapError::WrongSuite {
            url,
            asked: suite.to_string(),
            codename: release.codename,
            suite: release.suite,
        });
    }
    Ok(release)
}

/// Refuses a Release older than the one last verified for the same mirror and suite (a
/// mirror replaying an old, validly signed file to hold back security updates), and records
/// this one's date under `cache_dir`.
pub(crate) fn check_not_rolled_back(
    cache_dir: &Path,
    mirror: &str,
    suite: &str,
    release: &Release,
) -> Result<()> {
    use sha2::Digest;
    let dir = cache_dir.join("bootstrap/release-dates");
    let key = hex::encode(sha2::Sha256::digest(format!("{mirror} {suite}")));
    let record = dir.join(key);
    // The record: the Unix time, the date as written, and what it is for.
    let last = std::fs::read_to_string(&record).ok().and_then(|text| {
        let mut fields = text.splitn(2, ' ');
        let secs: i64 = fields.next()?.trim().parse().ok()?;
        Some((secs, fields.next()?.lines().next()?.to_string()))
    });
    if let Some((secs, text)) = last {
        if release.date < secs {
            return Err(BootstrapError::RolledBack {
                url: format!("{}/InRelease", release.dists_url),
                date: release.date_text.clone(),
                last: text,
                record,
            });
        }
        if release.date == secs {
            return Ok(());
        }
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    // A name of this process's own: bootstraps sharing the cache may record at once.
    let tmp = record.with_extension(format!("tmp.{}", std::process::id()));
    let body = format!("{} {}\n{mirror} {suite}\n", release.date, release.date_text);
    std::fs::write(&tmp, body).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &record).map_err(io_err(&record))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses verified Release text; `now` is the Unix time Valid-Until is checked against.
pub(crate) fn parse(text: &str, url: &str, dists_url: String, now: i64) -> Result<Release> {
    let bad = |reason: String| BootstrapError::BadRelease {
        url: url.to_string(),
        reason,
    };
    let stanza = deb822_fast::borrowed::iter_paragraphs_borrowed(text)
        .next()
        .ok_or_else(|| bad("empty".into()))?
        .map_err(|source| BootstrapError::Deb822 {
            url: url.into(),
            what: "Release file",
            source,
        })?;
    let single = |n: &str| {
        stanza
            .get_single(n)
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    if let Some(until) = stanza.get_single("Valid-Until") {
        let when = parse_date(until).ok_or_else(|| bad(format!("bad Valid-Until {until:?}")))?;
        if when < now {
            return Err(BootstrapError::Expired {
                url: url.into(),
                valid_until: until.trim().into(),
            });
        }
    }
    let date_text = single("Date");
    let date = if date_text.is_empty() {
        0
    } else {
        parse_date(&date_text).ok_or_else(|| bad(format!("bad Date {date_text:?}")))?
    };
    let mut files = HashMap::new();
    let lines = stanza
        .get("SHA256")
        .ok_or_else(|| bad("no SHA256 field".into()))?;
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let mut w = line.split_whitespace();
        let (Some(sum), Some(size), Some(path), None) = (w.next(), w.next(), w.next(), w.next())
        else {
            return Err(bad(format!("bad SHA256 line {line:?}")));
        };
        let size = size
            .parse()
            .map_err(|_| bad(format!("bad size in {line:?}")))?;
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("bad SHA256 sum in {line:?}")));
        }
        files.insert(path.to_string(), (sum.to_ascii_lowercase(), size));
    }
    Ok(Release {
        origin: single("Origin"),
        codename: single("Codename"),
        suite: single("Suite"),
        date,
        date_text,
        by_hash: single("Acquire-By-Hash").eq_ignore_ascii_case("yes"),
        components: single("Components")
            .split_whitespace()
            .map(String::from)
            .collect(),
        dists_url,
        files,
    })
}

/// An RFC 2822 date as Release files write it (`Sat, 18 Jul 2026 10:16:37 UTC`) → Unix time.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split_once(',').map(|(_, r)| r).unwrap_or(s);
    let mut w = s.split_whitespace();
    let day: i64 = w.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mon = w.next()?.get(..3)?;
    let month = MONTHS.iter().position(|m| *m == mon)? as i64 + 1;
    let year: i64 = w.next()?.parse().ok()?;
    let mut hms = w.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (
        hms.next()??,
        hms.next()??,
        hms.next().flatten().unwrap_or(0),
    );
    let offset = match w.next().unwrap_or("UTC") {
        "UTC" | "GMT" | "Z" => 0,
        z if z.len() == 5 => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z[1..3].parse::<i64>().ok()? * 3600 + z[3..5].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + m * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 11 Jul 2026 10:16:37 UTC"),
            Some(1783764997)
        );
        assert_eq!(
            parse_date("Tue, 01 Mar 2022 12:00:00 +0100"),
            Some(1646132400)
        );
        assert_eq!(parse_date("nonsense"), None);
    }

    #[test]
    fn expiry_and_table() {
        let text = "Codename: x\nValid-Until: Thu, 01 Jan 1970 00:01:00 UTC\nSHA256:\n \
                    0000000000000000000000000000000000000000000000000000000000000000 5 main/binary-amd64/Packages\n";
        let r = parse(text, "u", "d".into(), 59).unwrap();
        assert_eq!(r.files["main/binary-amd64/Packages"].1, 5);
        let e = parse(text, "u", "d".into(), 61).unwrap_err();
        assert!(matches!(e, BootstrapError::Expired { .. }));
        assert!(parse("Codename: x\n", "u", "d".into(), 0).is_err());
    }
}
