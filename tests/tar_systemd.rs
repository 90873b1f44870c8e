//! rmach and systemd's own importer and exporter (`systemd-import tar`, `systemd-export tar`,
//! what `machinectl import-tar`/`export-tar` run) read each other's archives with no difference,
//! for every compression systemd 252 reads: gzip, xz, bzip2 and none. systemd-import 252 hangs
//! on a gzip stream of many members, so rmach's parallel gzip must be one member. Both tools
//! run directly (no machined, no D-Bus): `--image-root` points systemd-import at a scratch
//! directory and systemd-export takes a path. Needs root and systemd-container.

mod common;

use std::path::Path;
use std::process::Command;

use common::tar::make_fixture;
use common::tree::{assert_same, Compare, FULL};
use common::{assert_success, sh, Env};

const IMPORT: &str = "/lib/systemd/systemd-import";
const EXPORT: &str = "/lib/systemd/systemd-export";

/// Runs a systemd helper with a time limit: a hang is a failure, not a stuck test.
fn systemd(args: &[&str]) {
    // KILL: a hanging systemd-import spins in its event loop and does not die of SIGTERM.
    let out = Command::new("timeout")
        .args(["-s", "KILL", "300"])
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, &format!("{args:?} (124 is a hang)"));
}

/// The fixture plus enough files and data for several gzip blocks and hundreds of entries:
/// systemd-import 252 spins forever on this tree cut into 1 MiB gzip members (checked by hand
/// with `tar c | split -b 1M --filter 'gzip -6'`), which is what rmach wrote before.
fn image(env: &Env) -> std::path::PathBuf {
    let root = env.store.join("src");
    make_fixture(&root, false);
    sh(&format!(
        "cd '{}' && mkdir -p many && for i in $(seq 1 600); do \
         head -c $((i * 17)) /dev/urandom > many/f$i; done \
         && head -c 2500000 /dev/urandom | base64 > many/big \
         && setfattr -x trusted.root-only d/suid",
        root.display()
    ));
    // systemd-import and systemd-export run GNU tar without CAP_SYS_ADMIN, which trusted.*
    // xattrs need (removed above): a limit of systemd's, not of either archive.
    root
}

#[test]
fn systemd_reads_rmach_archives_and_rmach_reads_systemds() {
    if !Path::new(IMPORT).exists() || !Path::new(EXPORT).exists() {
        panic!("systemd-import/systemd-export missing: install systemd-container");
    }
    let env = Env::new();
    let src = image(&env);
    let sd_root = env.path("systemd-images");
    std::fs::create_dir_all(&sd_root).unwrap();
    for (suffix, format) in [
        ("tar.gz", "gzip"),
        ("tar.xz", "xz"),
        ("tar.bz2", "bzip2"),
        ("tar", "uncompressed"),
    ] {
        let tag = format;
        // rmach → systemd-import.
        let ours = env.path(&format!("rmach.{suffix}"));
        env.ok(&["export-tar", "src", ours.to_str().unwrap()]);
        let name = format!("from-rmach-{tag}");
        systemd(&[
            IMPORT,
            "tar",
            ours.to_str().unwrap(),
            &name,
            &format!("--image-root={}", sd_root.display()),
        ]);
        assert_same(&src, &sd_root.join(&name), FULL);
        // systemd-export → rmach.
        let theirs = env.path(&format!("systemd.{suffix}"));
        let sd_format = if format == "uncompressed" {
            "uncompressed"
        } else {
            format
        };
        systemd(&[
            EXPORT,
            "tar",
            &format!("--format={sd_format}"),
            sd_root.join(&name).to_str().unwrap(),
            theirs.to_str().unwrap(),
        ]);
        let back = format!("from-systemd-{tag}");
        env.ok(&["import-tar", theirs.to_str().unwrap(), &back]);
        // systemd-export runs GNU tar without --sparse: holes arrive as zeros.
        let no_holes = Compare {
            holes: false,
            ..FULL
        };
        assert_same(&src, &env.store.join(&back), no_holes);
    }
}
