//! Choosing the mirror: `--mirror` (or `RMACH_MIRROR`, which clap folds into it), then
//! `/etc/rmach/rmach.toml`, then for Debian the host's own apt sources and for Ubuntu its public
//! archive as the host's distribution data names it (python-apt's `Ubuntu.info`). No mirror host
//! name is written in the code: every one is read at run time.

use std::path::Path;

use super::suites::Distro;
use super::{BootstrapError, Result};

/// Where the chosen mirror came from, for `--verbose` and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSource {
    Explicit,
    Config,
    HostApt,
    UbuntuArchive,
}

/// Picks the mirror for a suite of `distro` on `arch`. `config` is `/etc/rmach/rmach.toml`
/// and `apt_etc` is `/etc/apt` outside tests.
pub fn select_mirror(
    explicit: Option<&str>,
    suite: &str,
    distro: Distro,
    arch: &str,
    config: &Path,
    apt_etc: &Path,
) -> Result<(String, MirrorSource)> {
    if let Some(url) = explicit {
        return Ok((check_url(url)?, MirrorSource::Explicit));
    }
    if let Some(url) = from_config(config, distro)? {
        return Ok((check_url(&url)?, MirrorSource::Config));
    }
    match distro {
        Distro::Debian => match host_debian_mirror(apt_etc) {
            Some(url) => Ok((check_url(&url)?, MirrorSource::HostApt)),
            None => Err(BootstrapError::NoMirror {
                suite: suite.to_string(),
            }),
        },
        Distro::Ubuntu => match ubuntu_archive(Path::new(UBUNTU_INFO), arch) {
            Some(url) => Ok((check_url(&url)?, MirrorSource::UbuntuArchive)),
            None => Err(BootstrapError::NoMirror {
                suite: suite.to_string(),
            }),
        },
    }
}

/// Where Debian's python-apt-common package describes Ubuntu's archives.
const UBUNTU_INFO: &str = "/usr/share/python-apt/templates/Ubuntu.info";

/// Ubuntu's public archive for `arch`, as `Ubuntu.info` gives it: `BaseURI-ARCH` (amd64 and
/// i386 live on the main archive), else the generic `BaseURI` (the ports archive).
fn ubuntu_archive(info: &Path, arch: &str) -> Option<String> {
    let text = std::fs::read_to_string(info).ok()?;
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
    };
    value(&format!("BaseURI-{arch}:")).or_else(|| value("BaseURI:"))
}

/// Accepts http, https and file URLs, without a trailing slash.
pub(crate) fn check_url(url: &str) -> Result<String> {
    let bad = |reason: &str| BootstrapError::BadMirror {
        url: url.to_string(),
        reason: reason.into(),
    };
    let rest = ["http://", "https://", "file://"]
        .iter()
        .find_map(|s| url.strip_prefix(s))
        .ok_or_else(|| bad("unsupported scheme"))?;
    if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("empty or contains spaces"));
    }
    if url.starts_with("file://") && !rest.starts_with('/') {
        return Err(bad("a file URL needs an absolute path, file:///srv/mirror"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `mirror`, or `debian-mirror` / `ubuntu-mirror`, in the `[bootstrap]` table.
fn from_config(path: &Path, distro: Distro) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BootstrapError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let bad = |reason: String| BootstrapError::Config {
        path: path.into(),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|source| BootstrapError::ConfigSyntax {
            path: path.into(),
            source,
        })?;
    let Some(section) = table.get("bootstrap") else {
        return Ok(None);
    };
    let section = section
        .as_table()
        .ok_or_else(|| bad("[bootstrap] is not a table".into()))?;
    let specific = match distro {
        Distro::Debian => "debian-mirror",
        Distro::Ubuntu => "ubuntu-mirror",
    };
    for key in [specific, "mirror"] {
        if let Some(v) = section.get(key) {
            let url = v
                .as_str()
                .ok_or_else(|| bad(format!("bootstrap.{key} is not a string")))?;
            return Ok(Some(url.to_string()));
        }
    }
    Ok(None)
}

/// The Debian mirror the host's apt uses: the first `deb` source of a non-security suite in
/// `sources.list.d/*.sources` (deb822) or `sources.list`. None on a non-Debian host.
pub fn host_debian_mirror(apt_etc: &Path) -> Option<String> {
    let mut files: Vec<_> = std::fs::read_dir(apt_etc.join("sources.list.d"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
    {
        if let Some(url) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| from_deb822(&t))
        {
            return Some(url);
        }
    }
    let list = std::fs::read_to_string(apt_etc.join("sources.list")).ok()?;
    list.lines().find_map(from_one_line)
}

fn debian_like(uri: &str, suites: &str) -> bool {
    !uri.contains("security") && !suites.split_whitespace().all(|s| s.contains("security"))
}

fn from_deb822(text: &str) -> Option<String> {
    for stanza in deb822_fast::borrowed::iter_paragraphs_borrowed(text) {
        let Ok(stanza) = stanza else { return None };
        let field = |n: &str| stanza.get_field(n).map(|f| f.join()).unwrap_or_default();
        if !field("Types").split_whitespace().any(|t| t == "deb")
            || field("Enabled").trim() == "no"
            || field("Signed-By").contains("ubuntu")
        {
            continue;
        }
        let suites = field("Suites");
        if let Some(uri) = field("URIs").split_whitespace().next() {
            if debian_like(uri, &suites) && check_url(uri).is_ok() {
                return Some(uri.to_string());
            }
        }
    }
    None
}

fn from_one_line(line: &str) -> Option<String> {
    let line = line.split('#').next()?.trim();
    let rest = line.strip_prefix("deb ")?.trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once(']')?.1.trim_start(),
        None => rest,
    };
    let mut words = rest.split_whitespace();
    let uri = words.next()?;
    let suite = words.next().unwrap_or("");
    (debian_like(uri, suite) && check_url(uri).is_ok()).then(|| uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/a.sources"),
            "Types: deb\nURIs: http://m.example/debian-security\nSuites: x-security\n\n\
             Types: deb-src deb\nURIs: http://m.example/debian/\nSuites: x x-updates\n",
        )
        .unwrap();
        assert_eq!(
            host_debian_mirror(dir.path()).unwrap(),
            "http://m.example/debian/"
        );
        std::fs::remove_file(dir.path().join("sources.list.d/a.sources")).unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "# c\ndeb [arch=amd64] file:///srv/d x main\n",
        )
        .unwrap();
        assert_eq!(host_debian_mirror(dir.path()).unwrap(), "file:///srv/d");
    }

    #[test]
    fn order_of_choice_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("rmach.toml");
        let none = dir.path().join("none");
        let e = select_mirror(None, "bookworm", Distro::Debian, "amd64", &cfg, &none).unwrap_err();
        assert!(e.to_string().contains("--mirror URL"), "{e}");
        std::fs::write(
            &cfg,
            "[bootstrap]\ndebian-mirror = \"https://d.example/debian/\"\n",
        )
        .unwrap();
        let (url, src) =
            select_mirror(None, "bookworm", Distro::Debian, "amd64", &cfg, &none).unwrap();
        assert_eq!(
            (url.as_str(), src),
            ("https://d.example/debian", MirrorSource::Config)
        );
        let (url, _) =
            select_mirror(Some("file:///m"), "s", Distro::Debian, "amd64", &cfg, &none).unwrap();
        assert_eq!(url, "file:///m");
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("file://relative").is_err());
    }

    #[test]
    fn ubuntu_archive_comes_from_the_distribution_data() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("Ubuntu.info");
        std::fs::write(
            &info,
            "Suite: noble\nBaseURI: http://ports.example/ubuntu-ports/\n\
             BaseURI-amd64: http://main.example/ubuntu\nBaseURI-i386: http://main.example/ubuntu\n",
        )
        .unwrap();
        assert_eq!(
            ubuntu_archive(&info, "amd64").unwrap(),
            "http://main.example/ubuntu"
        );
        assert_eq!(
            ubuntu_archive(&info, "arm64").unwrap(),
            "http://ports.example/ubuntu-ports/"
        );
        assert!(ubuntu_archive(&dir.path().join("missing"), "amd64").is_none());
    }
}
