//! `rmach bootstrap --arch arm64` on a host of another architecture, from the real Debian
//! mirror of the host's apt sources: refused with a message naming what is missing while
//! binfmt_misc has no qemu-aarch64 entry (no image left), then, with Debian's qemu-user-static
//! entry enabled, a bookworm minbase image whose packages are all configured and which
//! `rmach run` runs through the same entry. The test mounts binfmt_misc and enables the entry
//! only when they were not there, and undoes exactly that (also when it fails). Needs root,
//! the network to the mirror, qemu-user-static and binfmt-support.

mod common;

use std::path::Path;
use std::process::Command;

use common::bootstrap::{assert_store_empty, package_states, run, shared_cache_env, stderr};

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// What the test changed in the host's binfmt_misc, undone on drop.
struct BinfmtGuard {
    mounted: bool,
    enabled: bool,
}

impl BinfmtGuard {
    fn setup() -> BinfmtGuard {
        let mut guard = BinfmtGuard {
            mounted: false,
            enabled: false,
        };
        if !Path::new(BINFMT).join("status").exists() {
            let ok = Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT])
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot mount binfmt_misc");
            guard.mounted = true;
        }
        if !Path::new(BINFMT).join("qemu-aarch64").exists() {
            let ok = Command::new("update-binfmts")
                .args(["--enable", "qemu-aarch64"])
                .status()
                .unwrap()
                .success();
            assert!(ok, "update-binfmts --enable qemu-aarch64 failed");
            guard.enabled = true;
        }
        guard
    }
}

impl Drop for BinfmtGuard {
    fn drop(&mut self) {
        if self.enabled {
            let _ = Command::new("update-binfmts")
                .args(["--disable", "qemu-aarch64"])
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
    let env = shared_cache_env();
    let args = [
        "bootstrap",
        "bookworm",
        "a64",
        "--variant",
        "minbase",
        "--arch",
        "arm64",
    ];
    if !Path::new(BINFMT).join("qemu-aarch64").exists() {
        let out = run(&env, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("cannot run arm64 programs"), "{err}");
        assert!(
            err.contains("binfmt_misc") && err.contains("qemu-aarch64"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_store_empty(&env, "after the refusal");
    } else {
        eprintln!("the refusal without a qemu-aarch64 entry is not tested: the host has one");
    }

    let _binfmt = BinfmtGuard::setup();
    let out = run(&env, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let root = env.store.join("a64");
    // The image's programs are arm64 ELF files (e_machine 183).
    let dpkg = std::fs::read(root.join("usr/bin/dpkg")).unwrap();
    assert_eq!(&dpkg[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([dpkg[18], dpkg[19]]), 183);
    let states = package_states(&root);
    assert!(states.len() > 50, "{} packages", states.len());
    assert!(
        states.values().all(|s| s == "install ok installed"),
        "{states:?}"
    );
    let out = run(&env, &["run", "a64", "--", "dpkg", "--print-architecture"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "arm64");
    let out = run(&env, &["run", "a64", "--", "uname", "-m"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "aarch64");
}
