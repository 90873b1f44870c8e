//! Foreign architectures: the second stage runs the image's own programs, so an arm64 image on
//! an amd64 host needs the kernel to hand them to an emulator. That is binfmt_misc with
//! qemu-user-static's entries, registered with the F (fix binary) flag so the emulator is
//! found from inside the image's namespaces without a copy in it. `rmach run` of the image
//! goes through the same entry. rmach does not register entries itself (that changes the
//! whole host); it says what is missing.

use std::path::{Path, PathBuf};

use super::{BootstrapError, Result};

/// Where binfmt_misc is mounted.
pub(crate) const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// The Debian architecture rmach was built for, the host's native one; None for a CPU
/// Debian has no name for here.
pub(crate) fn native_arch() -> Option<&'static str> {
    Some(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "i386",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        _ => return None,
    })
}

/// qemu's name for a Debian architecture (`qemu-NAME-static`).
fn qemu_name(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "x86_64",
        "i386" => "i386",
        "arm64" => "aarch64",
        "armhf" | "armel" => "arm",
        "riscv64" => "riscv64",
        "ppc64el" => "ppc64le",
        "s390x" => "s390x",
        "mips64el" => "mips64el",
        "loong64" => "loongarch64",
        _ => return None,
    })
}

/// Whether programs of `arch` run without an emulator here.
fn runs_natively(arch: &str) -> bool {
    match native_arch() {
        Some(native) if native == arch => true,
        Some("amd64") => arch == "i386",
        Some("arm64") => arch == "armhf" && Path::new("/lib/ld-linux-armhf.so.3").exists(),
        _ => false,
    }
}

/// Checks that the host can run `arch`'s programs; for a foreign one, names the binfmt_misc
/// entry in use.
pub(crate) fn check(arch: &str) -> Result<Option<PathBuf>> {
    check_in(Path::new(BINFMT_MISC), arch)
}

fn check_in(binfmt: &Path, arch: &str) -> Result<Option<PathBuf>> {
    if runs_natively(arch) {
        return Ok(None);
    }
    let refuse = |reason: String| BootstrapError::ForeignArch {
        arch: arch.to_string(),
        reason,
    };
    let qemu =
        qemu_name(arch).ok_or_else(|| refuse("rmach knows no qemu emulator for it".to_string()))?;
    let emulator = format!("/usr/bin/qemu-{qemu}-static");
    if !binfmt.join("status").exists() {
        return Err(refuse(format!(
            "binfmt_misc is not mounted at {}: mount it (mount -t binfmt_misc binfmt_misc {}){}",
            binfmt.display(),
            binfmt.display(),
            if Path::new(&emulator).exists() {
                format!(" and enable qemu-{qemu} (update-binfmts --enable qemu-{qemu})")
            } else {
                " and install qemu-user-static".to_string()
            }
        )));
    }
    let entry = binfmt.join(format!("qemu-{qemu}"));
    let Ok(text) = std::fs::read_to_string(&entry) else {
        return Err(refuse(if Path::new(&emulator).exists() {
            format!(
                "no binfmt_misc entry {}: enable it with update-binfmts --enable qemu-{qemu}",
                entry.display()
            )
        } else {
            format!(
                "{emulator} and the binfmt_misc entry {} are missing: install qemu-user-static",
                entry.display()
            )
        }));
    };
    if !text.lines().any(|l| l == "enabled") {
        return Err(refuse(format!(
            "the binfmt_misc entry {} is disabled: update-binfmts --enable qemu-{qemu}",
            entry.display()
        )));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("");
    if !flags.contains('F') {
        return Err(refuse(format!(
            "the binfmt_misc entry {} lacks the F (fix binary) flag, so its emulator is not found inside the image: register qemu-user-static's entry (update-binfmts --import qemu-{qemu})",
            entry.display()
        )));
    }
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_needs_nothing_and_foreign_needs_an_enabled_fixed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let native = native_arch().unwrap();
        assert!(check_in(dir.path(), native).unwrap().is_none());
        let foreign = if native == "arm64" {
            "riscv64"
        } else {
            "arm64"
        };
        let qemu = qemu_name(foreign).unwrap();
        let err = check_in(dir.path(), foreign).unwrap_err().to_string();
        assert!(err.contains("not mounted"), "{err}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let err = check_in(dir.path(), foreign).unwrap_err().to_string();
        assert!(err.contains(&format!("qemu-{qemu}")), "{err}");
        let entry = dir.path().join(format!("qemu-{qemu}"));
        std::fs::write(&entry, "disabled\ninterpreter /usr/bin/x\nflags: F\n").unwrap();
        let err = check_in(dir.path(), foreign).unwrap_err().to_string();
        assert!(err.contains("disabled"), "{err}");
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/x\nflags: \n").unwrap();
        let err = check_in(dir.path(), foreign).unwrap_err().to_string();
        assert!(err.contains("F (fix binary)"), "{err}");
        std::fs::write(&entry, "enabled\ninterpreter /usr/bin/x\nflags: OCF\n").unwrap();
        assert_eq!(check_in(dir.path(), foreign).unwrap(), Some(entry));
        let err = check_in(dir.path(), "vax").unwrap_err().to_string();
        assert!(err.contains("no qemu emulator"), "{err}");
    }
}
