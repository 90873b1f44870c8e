//! Where things live in a store directory: the one place that spells out file names.
//!
//! - `NAME` is a directory or btrfs subvolume image, `NAME.raw` a raw image;
//! - `.#rmach-NAME.TAG[.raw]` is an image being built or removed (staging);
//! - `NAME.nspawn` is systemd-nspawn's settings file of image NAME;
//! - `.#NAME.lck` and `.#NAME.raw.lck` are systemd's image locks (taken by systemd-nspawn,
//!   machinectl and rmach alike; see `lock.rs`).

use std::path::{Path, PathBuf};

use super::{ImageKind, ImageName};

/// Prefix of every entry an unfinished operation leaves in the store.
pub(crate) const STAGING_PREFIX: &str = ".#rmach-";
const RAW_SUFFIX: &str = ".raw";
const NSPAWN_SUFFIX: &str = ".nspawn";

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

/// What a directory entry of the store is, by its name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// An image: its name and whether the entry is a raw file.
    Image { name: String, raw: bool },
    /// An unfinished operation's entry, owned by the image name given.
    Staging { owner: String },
    /// systemd's lock file of an image.
    Lock,
    /// Anything else starting with `.`.
    Hidden,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// File name of an image of `kind` called `name`.
    pub(crate) fn file_name(name: &str, kind: ImageKind) -> String {
        match kind {
            ImageKind::Raw => format!("{name}{RAW_SUFFIX}"),
            ImageKind::Directory | ImageKind::Subvolume => name.to_string(),
        }
    }

    pub(crate) fn image_path(&self, name: &ImageName, kind: ImageKind) -> PathBuf {
        self.root.join(Self::file_name(name.as_str(), kind))
    }

    /// systemd's lock files for `name`: one beside each path the image could have, so an
    /// operation on the name conflicts with nspawn running either form.
    pub(crate) fn lock_paths(&self, name: &ImageName) -> [PathBuf; 2] {
        [ImageKind::Directory, ImageKind::Raw].map(|kind| {
            self.root
                .join(format!(".#{}.lck", Self::file_name(name.as_str(), kind)))
        })
    }

    /// A fresh staging path for `name`; the tag keeps concurrent leftovers apart.
    pub(crate) fn staging_path(&self, name: &ImageName, kind: ImageKind, tag: u64) -> PathBuf {
        let suffix = if kind == ImageKind::Raw {
            RAW_SUFFIX
        } else {
            ""
        };
        self.root
            .join(format!("{STAGING_PREFIX}{name}.{tag:016x}{suffix}"))
    }

    /// `NAME.nspawn`, systemd-nspawn's settings file of an image, beside it.
    pub(crate) fn nspawn_settings_path(&self, name: &ImageName) -> PathBuf {
        self.root.join(format!("{name}{NSPAWN_SUFFIX}"))
    }

    /// A file being written for `name` (`what` says which), renamed into place when
    /// complete; a staging entry of `name`, so `clean` removes one left by a crash.
    pub(crate) fn temp_path(&self, name: &ImageName, what: &str) -> PathBuf {
        self.root.join(format!("{STAGING_PREFIX}{name}.{what}"))
    }

    /// Whether a file name is a raw image's (hidden entries included).
    pub(crate) fn names_raw(file_name: &str) -> bool {
        file_name.ends_with(RAW_SUFFIX)
    }

    /// Classifies a store entry by its file name.
    pub(crate) fn entry(file_name: &str) -> Entry {
        if let Some(rest) = file_name.strip_prefix(STAGING_PREFIX) {
            let rest = rest.strip_suffix(RAW_SUFFIX).unwrap_or(rest);
            return match rest.rsplit_once('.') {
                Some((owner, _)) => Entry::Staging {
                    owner: owner.to_string(),
                },
                None => Entry::Hidden,
            };
        }
        if file_name.starts_with(".#") && file_name.ends_with(".lck") {
            return Entry::Lock;
        }
        if file_name.starts_with('.') {
            return Entry::Hidden;
        }
        match file_name.strip_suffix(RAW_SUFFIX) {
            Some(stem) => Entry::Image {
                name: stem.to_string(),
                raw: true,
            },
            None => Entry::Image {
                name: file_name.to_string(),
                raw: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_entries() {
        let layout = Layout::new(Path::new("/s"));
        let dev = ImageName::parse("dev").unwrap();
        assert_eq!(
            layout.image_path(&dev, ImageKind::Raw),
            Path::new("/s/dev.raw")
        );
        assert_eq!(
            layout.image_path(&dev, ImageKind::Subvolume),
            Path::new("/s/dev")
        );
        assert_eq!(
            layout.lock_paths(&dev),
            [
                PathBuf::from("/s/.#dev.lck"),
                PathBuf::from("/s/.#dev.raw.lck")
            ]
        );
        assert_eq!(
            layout.nspawn_settings_path(&dev),
            Path::new("/s/dev.nspawn")
        );
        let temp = layout.temp_path(&dev, "settings");
        assert_eq!(
            Layout::entry(temp.file_name().unwrap().to_str().unwrap()),
            Entry::Staging {
                owner: "dev".into()
            }
        );
        let staging = layout.staging_path(&dev, ImageKind::Raw, 7);
        let file = staging.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            Layout::entry(file),
            Entry::Staging {
                owner: "dev".into()
            }
        );
        assert_eq!(Layout::entry(".#dev.lck"), Entry::Lock);
        assert_eq!(Layout::entry(".x"), Entry::Hidden);
        assert_eq!(
            Layout::entry("a.b.raw"),
            Entry::Image {
                name: "a.b".into(),
                raw: true
            }
        );
    }
}
