//! Image names: what design §1 allows, and how a name is taken from a file's name.

use std::fmt;
use std::path::Path;

use super::StoreError;

/// A valid image name: exactly what machinectl accepts for an imported image, systemd's
/// hostname rules (`hostname_is_valid` without flags): 1–64 characters of ASCII letters,
/// digits, `-` and `.`; labels between dots are not empty and neither start nor end with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName(String);

/// Suffixes that a name taken from a file drops, longest first.
const IMAGE_SUFFIXES: &[&str] = &[
    ".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tgz", ".tar", ".raw", ".img", ".qcow2",
];
const COMPRESSION_SUFFIXES: &[&str] = &[".gz", ".zst", ".xz", ".bz2"];

/// Linux's HOST_NAME_MAX.
const MAX_LEN: usize = 64;

/// The rule `name` breaks, if any.
fn broken_rule(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("a name needs at least one character");
    }
    if name.len() > MAX_LEN {
        return Some("a name has at most 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Some("a name has only ASCII letters, digits, '-' and '.'");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some(
                "a name has no empty part between dots (no leading, trailing or double '.')",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("no part of a name between dots starts or ends with '-'");
        }
    }
    None
}

impl ImageName {
    pub fn parse(name: &str) -> Result<ImageName, StoreError> {
        match broken_rule(name) {
            Some(rule) => Err(StoreError::InvalidName {
                name: name.to_string(),
                rule,
            }),
            None => Ok(ImageName(name.to_string())),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The image name a file or directory stands for: its last component without its directory,
/// without one compression suffix and without one image suffix (`backups/dev.tar.zst` is `dev`).
pub fn name_from_path(path: &Path) -> Result<ImageName, StoreError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stem = file_name.as_str();
    let mut strip = |suffixes: &[&str]| {
        if let Some(s) = suffixes
            .iter()
            .find(|s| stem.len() > s.len() && stem.ends_with(*s))
        {
            stem = &stem[..stem.len() - s.len()];
            true
        } else {
            false
        }
    };
    if !strip(IMAGE_SUFFIXES) && strip(COMPRESSION_SUFFIXES) {
        strip(IMAGE_SUFFIXES);
    }
    ImageName::parse(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in [
            "dev",
            "a",
            "Debian-12.x86-64",
            "1",
            "a.b.c",
            &"x".repeat(64),
        ] {
            assert_eq!(ImageName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_each_rule() {
        let cases = [
            ("", "at least one"),
            (&"x".repeat(65) as &str, "at most 64"),
            ("a/b", "only ASCII"),
            ("a b", "only ASCII"),
            ("web_01", "only ASCII"),
            ("héllo", "only ASCII"),
            (".hidden", "empty part"),
            ("x.", "empty part"),
            ("a..b", "empty part"),
            ("-x", "starts or ends with '-'"),
            ("x-", "starts or ends with '-'"),
            ("a-.b", "starts or ends with '-'"),
            ("a.-b", "starts or ends with '-'"),
        ];
        for (name, rule) in cases {
            let err = ImageName::parse(name).unwrap_err().to_string();
            assert!(err.contains(rule), "{name:?}: {err}");
        }
    }

    #[test]
    fn names_from_files() {
        let cases = [
            ("backups/dev.tar.zst", "dev"),
            ("dev.tar", "dev"),
            ("dev.tgz", "dev"),
            ("/x/dev.tar.gz", "dev"),
            ("dev.raw.xz", "dev"),
            ("dev.qcow2", "dev"),
            ("dev.img", "dev"),
            ("dev.zst", "dev"),
            ("dev.tar.bz2", "dev"),
            ("debian-12.5", "debian-12.5"),
            ("rootfs/", "rootfs"),
        ];
        for (path, name) in cases {
            assert_eq!(
                name_from_path(Path::new(path)).unwrap().as_str(),
                name,
                "{path}"
            );
        }
        assert!(name_from_path(Path::new("-")).is_err());
        assert!(name_from_path(Path::new(".tar")).is_err());
    }
}
