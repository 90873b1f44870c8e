//! `rmach bootstrap --arch ARCH` on a host of another architecture, from the real Debian
//! mirror of the host's apt sources: refused with a message naming what is missing while
//! binfmt_misc has no entry for the architecture's qemu (no image left), then, with Debian's
//! qemu-user-static entry enabled, a minbase image whose packages are all configured and which
//! `rmach run` runs through the same entry. arm64 (bookworm) is required; armhf (bookworm) and
//! riscv64 (trixie, the first Debian release with it) are skipped with a printed reason where
//! their emulator or binfmt entry cannot be had. The test mounts binfmt_misc and enables an
//! entry only when they were not there, and undoes exactly that (also when it fails). Needs
//! root, the network to the mirror, qemu-user-static and binfmt-support.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::bootstrap::{assert_store_empty, package_states, run, shared_cache_env, stderr};

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
/// One test at a time: each may mount binfmt_misc and unmount it when done.
static SERIAL: Mutex<()> = Mutex::new(());

/// A foreign architecture as the test sees it.
struct Foreign {
    arch: &'static str,
    suite: &'static str,
    /// qemu's name for it: `qemu-NAME-static`, binfmt entry `qemu-NAME`.
    qemu: &'static str,
    /// The ELF header's e_machine of its programs.
    elf_machine: u16,
    /// What `uname -m` says inside.
    uname: &'static str,
}

impl Foreign {
    fn new(
        arch: &'static str,
        suite: &'static str,
        qemu: &'static str,
        elf_machine: u16,
        uname: &'static str,
    ) -> Foreign {
        Foreign {
            arch,
            suite,
            qemu,
            elf_machine,
            uname,
        }
    }
}

/// What the test changed in the host's binfmt_misc, undone on drop.
struct BinfmtGuard {
    qemu: &'static str,
    mounted: bool,
    enabled: bool,
}

impl BinfmtGuard {
    /// Mounts binfmt_misc and enables qemu's entry where they are missing; Err says why that
    /// failed (what changed so far is undone on drop).
    fn setup(qemu: &'static str) -> Result<BinfmtGuard, String> {
        let mut guard = BinfmtGuard {
            qemu,
            mounted: false,
            enabled: false,
        };
        if !Path::new(BINFMT).join("status").exists() {
            let ok = Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT])
                .status()
                .unwrap()
                .success();
            if !ok {
                return Err("cannot mount binfmt_misc".into());
            }
            guard.mounted = true;
        }
        let entry = format!("qemu-{qemu}");
        if !Path::new(BINFMT).join(&entry).exists() {
            let ok = Command::new("update-binfmts")
                .args(["--enable", &entry])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("update-binfmts --enable {entry} failed"));
            }
            guard.enabled = true;
        }
        Ok(guard)
    }
}

impl Drop for BinfmtGuard {
    fn drop(&mut self) {
        if self.enabled {
            let _ = Command::new("update-binfmts")
                .args(["--disable", &format!("qemu-{}", self.qemu)])
                .status();
        }
        if self.mounted {
            let _ = Command::new("umount").arg(BINFMT).status();
        }
    }
}

#[test]
fn arm64_bootstrap_through_binfmt_misc_and_qemu() {
    assert!(
        Path::new("/usr/bin/qemu-aarch64-static").exists(),
        "qemu-user-static is not installed (scripts/test installs it)"
    );
    let arm64 = Foreign::new("arm64", "bookworm", "aarch64", 183, "aarch64");
    if let Err(why) = bootstrap_and_run(&arm64) {
        panic!("{why}");
    }
}

#[test]
fn armhf_bootstrap_through_binfmt_misc_and_qemu() {
    let armhf = Foreign::new("armhf", "bookworm", "arm", 40, "armv7l");
    if let Err(why) = bootstrap_and_run(&armhf) {
        eprintln!("SKIPPED: armhf: {why}");
    }
}

#[test]
fn riscv64_bootstrap_through_binfmt_misc_and_qemu() {
    let riscv64 = Foreign::new("riscv64", "trixie", "riscv64", 243, "riscv64");
    if let Err(why) = bootstrap_and_run(&riscv64) {
        eprintln!("SKIPPED: riscv64: {why}");
    }
}

/// The refusal without a binfmt entry (where the host has none), then the bootstrap and runs
/// through the entry. Err: what the host lacks to try (the emulator, the entry), so that the
/// caller can skip; any failure of rmach itself fails the test.
fn bootstrap_and_run(f: &Foreign) -> Result<(), String> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let emulator = format!("/usr/bin/qemu-{}-static", f.qemu);
    if !Path::new(&emulator).exists() {
        return Err(format!("{emulator} is missing (install qemu-user-static)"));
    }
    let env = shared_cache_env();
    let name = format!("foreign-{}", f.arch);
    let args = [
        "bootstrap",
        f.suite,
        &name,
        "--variant",
        "minbase",
        "--arch",
        f.arch,
    ];
    if !Path::new(BINFMT).join(format!("qemu-{}", f.qemu)).exists() {
        let out = run(&env, &args);
        let err = stderr(&out);
        mirror_carries(f, &err)?;
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("cannot run {} programs", f.arch)),
            "{err}"
        );
        assert!(
            err.contains("binfmt_misc") && err.contains(&format!("qemu-{}", f.qemu)),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_store_empty(&env, "after the refusal");
    } else {
        eprintln!(
            "the refusal without a qemu-{} entry is not tested: the host has one",
            f.qemu
        );
    }

    let _binfmt = BinfmtGuard::setup(f.qemu)?;
    let out = run(&env, &args);
    mirror_carries(f, &stderr(&out))?;
    assert!(out.status.success(), "{}", stderr(&out));
    let root = env.store.join(&name);
    let dpkg = std::fs::read(root.join("usr/bin/dpkg")).unwrap();
    assert_eq!(&dpkg[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([dpkg[18], dpkg[19]]), f.elf_machine);
    let states = package_states(&root);
    assert!(states.len() > 50, "{} packages", states.len());
    assert!(
        states.values().all(|s| s == "install ok installed"),
        "{states:?}"
    );
    let out = run(&env, &["run", &name, "--", "dpkg", "--print-architecture"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), f.arch);
    let out = run(&env, &["run", &name, "--", "uname", "-m"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), f.uname);
    Ok(())
}

/// Err when rmach's error says the mirror has no index for the architecture.
fn mirror_carries(f: &Foreign, err: &str) -> Result<(), String> {
    if err.contains(&format!("binary-{}/", f.arch)) && err.contains("not found") {
        return Err(format!(
            "the mirror does not carry {} {}: {err}",
            f.suite, f.arch
        ));
    }
    Ok(())
}
