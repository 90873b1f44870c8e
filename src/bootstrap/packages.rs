//! Package indices: each component's `Packages` fetched (by-hash where the Release offers it),
//! checked by size and SHA256, decompressed, cached by the SHA256 of its uncompressed text, and
//! parsed with deb822-fast's streaming borrowed parser into an index of byte ranges.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::fetch::Fetcher;
use super::release::Release;
use super::{io_err, BootstrapError, Result};

/// One stanza of a Packages file, as ranges into the index's text.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    name: Range<usize>,
    version: Range<usize>,
    filename: Range<usize>,
    sha256: Range<usize>,
    priority: Range<usize>,
    depends: Range<usize>,
    pre_depends: Range<usize>,
    stanza: Range<usize>,
    pub(crate) size: u64,
}

/// All components' Packages stanzas for one architecture, first component first.
pub struct Index {
    text: String,
    entries: Vec<Entry>,
    by_name: HashMap<String, Vec<usize>>,
}

/// A package picked for download: where it is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pkg {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) filename: String,
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

impl Index {
    pub(crate) fn parse(text: String, url: &str) -> Result<Index> {
        let mut index = Index {
            text: String::new(),
            entries: Vec::new(),
            by_name: HashMap::new(),
        };
        index.add(text, url)?;
        Ok(index)
    }

    /// Adds another component's text.
    pub(crate) fn add(&mut self, text: String, url: &str) -> Result<()> {
        let base = self.text.len();
        self.text.push_str(&text);
        if !self.text.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push('\n');
        let all = &self.text[..];
        let start = all.as_ptr() as usize;
        let off = |s: &str| {
            let b = s.as_ptr() as usize - start;
            b..b + s.len()
        };
        let bad = |reason: String| BootstrapError::BadIndex {
            url: url.to_string(),
            reason,
        };
        for stanza in deb822_fast::borrowed::iter_paragraphs_borrowed(&all[base..]) {
            let stanza = stanza.map_err(|source| BootstrapError::Deb822 {
                url: url.into(),
                what: "Packages index",
                source,
            })?;
            let field = |n: &str| stanza.get_single(n).map(off).unwrap_or(0..0);
            let name = field("Package");
            if name.is_empty() {
                return Err(bad("a stanza without Package".into()));
            }
            let first = stanza.iter().next().map(|f| f.name()).unwrap_or_default();
            let last = stanza.iter().last().map(|f| {
                let lines = f.lines();
                let l = lines.last().copied().unwrap_or(f.name());
                off(l).end
            });
            let begin = off(first).start;
            let size = stanza.get_single("Size").unwrap_or("").trim();
            let size = size
                .parse()
                .map_err(|_| bad(format!("bad Size {size:?} for {}", &all[name.clone()])))?;
            let entry = Entry {
                version: field("Version"),
                filename: field("Filename"),
                sha256: field("SHA256"),
                priority: field("Priority"),
                depends: field("Depends"),
                pre_depends: field("Pre-Depends"),
                stanza: begin..last.unwrap_or(begin),
                size,
                name,
            };
            self.by_name
                .entry(all[entry.name.clone()].to_string())
                .or_default()
                .push(self.entries.len());
            self.entries.push(entry);
        }
        Ok(())
    }

    fn s(&self, r: &Range<usize>) -> &str {
        &self.text[r.clone()]
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Names of the stanzas whose Priority is `priority`, in index order.
    pub(crate) fn with_priority(&self, priority: &str) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| self.s(&e.priority).trim() == priority)
            .map(|e| self.s(&e.name).to_string())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn has_pre_depends(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|ids| ids.iter().any(|&i| !self.entries[i].pre_depends.is_empty()))
    }

    /// The raw Depends and Pre-Depends values of every stanza named `name`.
    pub(crate) fn dep_fields(&self, name: &str) -> Vec<&str> {
        let Some(ids) = self.by_name.get(name) else {
            return Vec::new();
        };
        ids.iter()
            .flat_map(|&i| [&self.entries[i].depends, &self.entries[i].pre_depends])
            .map(|r| self.s(r))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The first stanza named `name`, as a download.
    pub(crate) fn pkg(&self, name: &str) -> Option<Pkg> {
        let e = &self.entries[*self.by_name.get(name)?.first()?];
        Some(Pkg {
            name: name.to_string(),
            version: self.s(&e.version).trim().to_string(),
            filename: self.s(&e.filename).trim().to_string(),
            sha256: self.s(&e.sha256).trim().to_ascii_lowercase(),
            size: e.size,
        })
    }

    /// The stanzas of `names` as dpkg's available file wants them.
    pub(crate) fn stanzas(&self, names: &[String]) -> String {
        let mut out = String::new();
        for name in names {
            for &i in self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                out.push_str(self.s(&self.entries[i].stanza));
                out.push_str("\n\n");
            }
        }
        out
    }
}

/// Fetches, verifies, caches and parses the Packages of every component.
pub(crate) fn load(
    fetcher: &Fetcher,
    release: &Release,
    components: &[String],
    arch: &str,
    cache: &Path,
) -> Result<Index> {
    let mut index: Option<Index> = None;
    for c in components {
        let (text, url) = fetch_one(fetcher, release, c, arch, cache)?;
        match index.as_mut() {
            None => index = Some(Index::parse(text, &url)?),
            Some(i) => i.add(text, &url)?,
        }
    }
    index.ok_or_else(|| BootstrapError::BadRelease {
        url: release.dists_url.clone(),
        reason: "no component".into(),
    })
}

fn fetch_one(
    fetcher: &Fetcher,
    release: &Release,
    component: &str,
    arch: &str,
    cache: &Path,
) -> Result<(String, String)> {
    let plain = format!("{component}/binary-{arch}/Packages");
    let listed = |p: &str| release.files.get(p).cloned();
    let plain_sum = listed(&plain);
    if let Some((sum, size)) = &plain_sum {
        let path = cache.join(sum);
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() as u64 == *size && hex::encode(Sha256::digest(&bytes)) == *sum {
                if let Ok(text) = String::from_utf8(bytes) {
                    return Ok((text, format!("{}/{plain}", release.dists_url)));
                }
            }
        }
    }
    let (path, (sum, size)) = [".xz", ".gz", ""]
        .iter()
        .find_map(|ext| listed(&format!("{plain}{ext}")).map(|l| (format!("{plain}{ext}"), l)))
        .ok_or_else(|| BootstrapError::NotFound {
            url: format!("{}/{plain}.xz", release.dists_url),
            how: "not listed in the Release file",
        })?;
    let url = if release.by_hash {
        format!(
            "{}/{component}/binary-{arch}/by-hash/SHA256/{sum}",
            release.dists_url
        )
    } else {
        format!("{}/{path}", release.dists_url)
    };
    let data = fetcher.get(&url, size + 1)?;
    check(&url, &data, &sum, size)?;
    let mut text = Vec::new();
    let decoded = if path.ends_with(".xz") {
        liblzma::read::XzDecoder::new(&data[..]).read_to_end(&mut text)
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut text)
    } else {
        text = data;
        Ok(0)
    };
    decoded.map_err(|source| BootstrapError::Decompress {
        url: url.clone(),
        source,
    })?;
    if let Some((sum, size)) = &plain_sum {
        check(&format!("{url} (uncompressed)"), &text, sum, *size)?;
        std::fs::create_dir_all(cache).map_err(io_err(cache))?;
        let tmp = cache.join(format!(".{sum}.{}", std::process::id()));
        std::fs::write(&tmp, &text).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, cache.join(sum)).map_err(io_err(cache))?;
    }
    let text = String::from_utf8(text).map_err(|_| BootstrapError::BadIndex {
        url: url.clone(),
        reason: "not UTF-8".into(),
    })?;
    Ok((text, url))
}

/// Size, then SHA256.
pub(crate) fn check(url: &str, data: &[u8], sum: &str, size: u64) -> Result<()> {
    if data.len() as u64 != size {
        return Err(BootstrapError::Checksum {
            url: url.to_string(),
            what: "size",
            expected: size.to_string(),
            actual: data.len().to_string(),
        });
    }
    let actual = hex::encode(Sha256::digest(data));
    if actual != sum {
        return Err(BootstrapError::Checksum {
            url: url.to_string(),
            what: "SHA256",
            expected: sum.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        let text = "Package: a\nVersion: 1\nPriority: required\nPre-Depends: b (>= 1)\nSize: 3\n\
                    Filename: pool/a.deb\nSHA256: AB\nDescription: x\n more\n\nPackage: b\nSize: 1\n";
        let i = Index::parse(text.to_string(), "u").unwrap();
        assert_eq!(i.with_priority("required"), ["a"]);
        assert_eq!(i.dep_fields("a"), ["b (>= 1)"]);
        assert!(i.has_pre_depends("a") && !i.has_pre_depends("b"));
        assert_eq!(i.pkg("a").unwrap().sha256, "ab");
        assert!(i.stanzas(&["a".into()]).ends_with(" more\n\n"));
        assert!(i.stanzas(&["a".into()]).starts_with("Package: a\n"));
        assert!(Index::parse("Package: c\nSize: x\n".into(), "u").is_err());
    }
}
