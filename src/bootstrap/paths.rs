//! Paths inside the image that the bootstrap reads or writes, named once. Absolute ones are
//! as the image sees them (for scripts run inside); the `rel` helper turns one into a path
//! under the target directory.

use std::path::{Path, PathBuf};

/// The second stage's log, kept in the image as debootstrap keeps its own.
pub(crate) const LOG: &str = "/var/log/bootstrap.log";
/// dpkg's administrative directory.
pub(crate) const DPKG_ADMIN: &str = "/var/lib/dpkg";
/// dpkg's per-package control files.
pub(crate) const DPKG_INFO: &str = "/var/lib/dpkg/info";
/// dpkg's trigger interests.
pub(crate) const DPKG_TRIGGERS: &str = "/var/lib/dpkg/triggers";
/// The bootstrap's scratch area in the image (debootstrap's own name), removed at the end.
pub(crate) const SCRATCH: &str = "/debootstrap";
/// In the scratch area: where /run and /tmp live during the second stage (`stage_runner.rs`).
pub(crate) const STAND_INS: &str = "/debootstrap/stage";
/// In the scratch area: each package's control member, staged for its preinst.
pub(crate) const CONTROL_MEMBERS: &str = "/debootstrap/ci";
/// In the scratch area: what rmach records in dpkg's database for each core package,
/// prepared to be moved in from inside the image (`second.rs`).
pub(crate) const DB_ENTRIES: &str = "/debootstrap/db";
/// In the scratch area: the selections `dpkg --set-selections` reads.
pub(crate) const SELECTIONS: &str = "/debootstrap/selections";
/// In the scratch area: what `dpkg --predep-package` answered.
pub(crate) const PREDEP: &str = "/debootstrap/predep";
/// Where preinsts find their package's control member, as dpkg unpacks it.
pub(crate) const DPKG_TMP_CI: &str = "/var/lib/dpkg/tmp.ci";
/// The invoke-rc.d policy that keeps services from starting during the second stage.
pub(crate) const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// start-stop-daemon, replaced by a stub during the second stage.
pub(crate) const START_STOP_DAEMON: &str = "/sbin/start-stop-daemon";
/// ischroot, answering yes during the second stage.
pub(crate) const ISCHROOT: &str = "/usr/bin/ischroot";
/// The machine id, left empty for first boot.
pub(crate) const MACHINE_ID: &str = "/etc/machine-id";
/// The host name.
pub(crate) const HOSTNAME: &str = "/etc/hostname";

/// /etc/fstab, written when the image has none.
pub(crate) const FSTAB: &str = "/etc/fstab";
/// The resolver configuration, the host's copied in.
pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";
/// apt's sources, for the mirror and suite.
pub(crate) const APT_SOURCES: &str = "/etc/apt/sources.list";

/// `inside` (an absolute path in the image) under `target`.
pub(crate) fn rel(target: &Path, inside: &str) -> PathBuf {
    target.join(inside.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_are_in_the_scratch_area() {
        for path in [STAND_INS, CONTROL_MEMBERS, DB_ENTRIES, SELECTIONS, PREDEP] {
            assert!(path.starts_with(&format!("{SCRATCH}/")), "{path}");
        }
        for path in [DPKG_INFO, DPKG_TRIGGERS, DPKG_TMP_CI] {
            assert!(path.starts_with(&format!("{DPKG_ADMIN}/")), "{path}");
        }
        assert_eq!(
            rel(Path::new("/t"), DPKG_INFO),
            Path::new("/t/var/lib/dpkg/info")
        );
    }
}
