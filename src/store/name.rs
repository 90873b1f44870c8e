//! Image names: what design §1 allows, and how a name is taken from a file's name.

use std::fmt;
use std::path::Path;

use super::StoreError;

/// A valid image name: 1–64 characters of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`,
/// never containing `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName(String);

/// Suffixes that a name taken from a file drops, longest first.
const IMAGE_SUFFIXES: &[&str] = &[
    ".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tgz", ".tar", ".raw", ".img", ".qcow2",
];
const COMPRESSION_SUFFIXES: &[&str] = &[".gz", ".zst", ".xz", ".bz2"];

impl ImageName {
    pub fn parse(name: &str) -> Result<ImageName, StoreError> {
        let refuse = |rule: &'static str| {
            Err(StoreError::InvalidName {
                name: name.to_string(),
                rule,
            })
        };
        if name.is_empty() {
            return refuse("a name needs at least one character");
        }
        if name.len() > 64 {
            return refuse("a name has at most 64 characters");
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            let _ = c;
            return refuse("a name has only the characters A-Z a-z 0-9 . _ -");
        }
        if name.starts_with('.') {
            return refuse("a name must not start with '.'");
        }
        if name.starts_with('-') {
            return refuse("a name must not start with '-'");
        }
        if name.contains("..") {
            return refuse("a name must not contain '..'");
        }
        Ok(ImageName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
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
        for name in ["dev", "a", "Debian-12_x86.64", &"x".repeat(64)] {
            assert_eq!(ImageName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_each_rule() {
        let cases = [
            ("", "at least one"),
            (&"x".repeat(65) as &str, "at most 64"),
            ("a/b", "only the characters"),
            ("a b", "only the characters"),
            ("héllo", "only the characters"),
            (".hidden", "start with '.'"),
            ("-x", "start with '-'"),
            ("a..b", "'..'"),
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
