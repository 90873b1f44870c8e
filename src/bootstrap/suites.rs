//! The suites rmach knows and the rules debootstrap applies to each (its `scripts/sid`,
//! `scripts/gutsy`, `debian-common` and `merge_usr`), so the tree and package set match it.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Debian,
    Ubuntu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Minbase,
    Buildd,
    Default,
}

/// What rmach knows about a suite before it has read the mirror's Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SuiteInfo {
    pub(crate) distro: Distro,
    /// The codename when the suite is a codename; None for an alias (stable, testing, ...) or an
    /// unknown name, which the Release file's Codename field settles.
    pub(crate) codename: Option<&'static str>,
}

const DEBIAN: &[&str] = &["bullseye", "bookworm", "trixie", "forky", "duke", "sid"];
const DEBIAN_ALIASES: &[&str] = &["oldoldstable", "oldstable", "stable", "testing", "unstable"];
/// Ubuntu releases from focal on; later ones follow noble's rules (debootstrap's `*` case).
const UBUNTU: &[&str] = &[
    "focal", "groovy", "hirsute", "impish", "jammy", "kinetic", "lunar", "mantic", "noble",
    "oracular", "plucky", "questing", "resolute",
];

/// Looks a suite name up; None when rmach has no rules for it (it may still bootstrap with
/// `--keyring`, following the newest Debian rules).
pub(crate) fn lookup(suite: &str) -> Option<SuiteInfo> {
    if let Some(c) = DEBIAN.iter().find(|c| **c == suite) {
        return Some(SuiteInfo {
            distro: Distro::Debian,
            codename: Some(c),
        });
    }
    if DEBIAN_ALIASES.contains(&suite) {
        return Some(SuiteInfo {
            distro: Distro::Debian,
            codename: None,
        });
    }
    UBUNTU.iter().find(|c| **c == suite).map(|c| SuiteInfo {
        distro: Distro::Ubuntu,
        codename: Some(c),
    })
}

/// Which distribution a Release file describes, from its Origin field.
pub(crate) fn distro_of_origin(origin: &str) -> Distro {
    if origin.eq_ignore_ascii_case("ubuntu") {
        Distro::Ubuntu
    } else {
        Distro::Debian
    }
}

/// The rules for one codename, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub(crate) distro: Distro,
    pub(crate) codename: String,
    /// Packages added to the required seeds (`usr-is-merged` on bookworm).
    pub(crate) extra_required: Vec<&'static str>,
    /// Names dropped whenever they appear as a dependency (`usrmerge` from bookworm on).
    pub(crate) exclude_dependency: Vec<&'static str>,
    /// Whether /bin, /lib, /sbin ... become symlinks into /usr after the first extraction.
    pub(crate) merged_usr: bool,
    /// Whether to write /etc/unsupported-skip-usrmerge-conversion (unmerged bookworm+ buildd).
    pub(crate) skip_usrmerge_flag: bool,
}

impl Rules {
    pub(crate) fn new(distro: Distro, codename: &str, variant: Variant) -> Rules {
        let old_debian = codename == "bullseye";
        let mut rules = Rules {
            distro,
            codename: codename.to_string(),
            extra_required: Vec::new(),
            exclude_dependency: Vec::new(),
            merged_usr: true,
            skip_usrmerge_flag: false,
        };
        match distro {
            Distro::Debian => {
                if codename == "bookworm" {
                    rules.extra_required.push("usr-is-merged");
                }
                if !old_debian {
                    rules.exclude_dependency.push("usrmerge");
                }
                // debootstrap keeps buildd chroots of bullseye and bookworm split-/usr.
                if variant == Variant::Buildd && (old_debian || codename == "bookworm") {
                    rules.merged_usr = false;
                    rules.skip_usrmerge_flag = !old_debian;
                }
            }
            Distro::Ubuntu => {
                // focal..groovy merge like later releases unless told otherwise; hirsute keeps
                // buildd split-/usr.
                if variant == Variant::Buildd && codename == "hirsute" {
                    rules.merged_usr = false;
                    rules.skip_usrmerge_flag = true;
                }
            }
        }
        rules
    }
}

/// The keyring debootstrap uses for the distribution, and the package that installs it.
pub(crate) fn default_keyring(distro: Distro) -> (PathBuf, &'static str) {
    match distro {
        Distro::Debian => (
            PathBuf::from("/usr/share/keyrings/debian-archive-keyring.gpg"),
            "debian-archive-keyring",
        ),
        Distro::Ubuntu => (
            PathBuf::from("/usr/share/keyrings/ubuntu-archive-keyring.gpg"),
            "ubuntu-keyring",
        ),
    }
}

/// Ubuntu's archive keys, shipped for hosts without the ubuntu-keyring package (Debian's
/// archive does not carry it). Used only when neither `--keyring` nor the host file exists.
pub(crate) const UBUNTU_KEYRING: &[u8] = include_bytes!("keys/ubuntu-archive-keyring.gpg");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookworm_rules_match_debootstrap() {
        let r = Rules::new(Distro::Debian, "bookworm", Variant::Minbase);
        assert_eq!(r.extra_required, ["usr-is-merged"]);
        assert_eq!(r.exclude_dependency, ["usrmerge"]);
        assert!(r.merged_usr);
        let b = Rules::new(Distro::Debian, "bookworm", Variant::Buildd);
        assert!(!b.merged_usr && b.skip_usrmerge_flag);
        let t = Rules::new(Distro::Debian, "trixie", Variant::Buildd);
        assert!(t.merged_usr && t.extra_required.is_empty());
        let o = Rules::new(Distro::Debian, "bullseye", Variant::Default);
        assert!(o.exclude_dependency.is_empty() && o.merged_usr);
    }

    #[test]
    fn lookup_knows_aliases_and_ubuntu() {
        assert_eq!(lookup("stable").unwrap().codename, None);
        assert_eq!(lookup("jammy").unwrap().distro, Distro::Ubuntu);
        assert!(lookup("no-such-suite").is_none());
    }
}
