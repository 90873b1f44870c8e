//! Live backups: `export-tar` of a started machine (frozen for the export, or only while a
//! btrfs snapshot or a reflink copy is taken) gives the archive a stopped export of the same
//! state gives, and the machine runs on. Needs root; the stores on btrfs and xfs are
//! loop-mounted and unmounted again.

mod common;

use common::machine::{cgroup_file, env_with_bookworm, rootfs_with_init, wait_stopped, Started};
use common::Env;

#[test]
fn export_of_a_running_machine_matches_a_stopped_export() {
    let name = "mexport";
    let env = env_with_bookworm(name);
    let m = Started::start(&env, name, &[]);
    m.sh("mkdir -p /srv/data && seq 100000 > /srv/data/numbers && sync");
    let running = env.path("running.tar");
    let o = env.run(&["-v", "export-tar", name, running.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("frozen"),
        "-v says how"
    );
    // Still running, and thawed (seen from the host: a session inside would change the state).
    let events = cgroup_file(
        &env,
        name,
        &[("unified", "cgroup.events"), ("", "cgroup.events")],
    );
    assert!(std::fs::read_to_string(&events)
        .unwrap()
        .contains("frozen 0"));

    // Ctrl-C while the machine is frozen for the export (its output, a pipe nobody reads,
    // holds the export up): rmach ends with 130 and the machine is thawed, not left frozen.
    let export = env
        .command()
        .args(["export-tar", name, "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let frozen = |want: &str| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < until {
            if std::fs::read_to_string(&events).unwrap().contains(want) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    };
    assert!(frozen("frozen 1"), "the export froze the machine");
    common::sh(&format!("kill -INT {}", export.id()));
    let o = export.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        frozen("frozen 0"),
        "interrupted, the export thawed the machine"
    );
    assert_eq!(m.sh("true").0, 0, "the machine runs on");

    // The same state, stopped without a shutdown writing anything more.
    env.ok(&["kill", name, "--signal", "KILL"]);
    wait_stopped(&env, name, "kill -s KILL did not end it");
    let stopped = env.path("stopped.tar");
    env.ok(&["export-tar", name, stopped.to_str().unwrap()]);
    // journald writes its journal whenever it likes (its own sync timer): the one file whose
    // changes after the export the test cannot hold still; tar_listing leaves it out.
    let (a, b) = (tar_listing(&running), tar_listing(&stopped));
    let only_a: Vec<_> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_b: Vec<_> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "running: {only_a:#?}\nstopped: {only_b:#?}"
    );
    assert!(a.iter().any(|l| l.ends_with("./srv/data/numbers")));
    let data = |t: &std::path::Path| {
        std::process::Command::new("tar")
            .args(["-xOf"])
            .arg(t)
            .arg("./srv/data/numbers")
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(data(&running), data(&stopped));
    drop(m);
}

/// `tar --full-time -tvf`, sorted, without journald's files (see the export test).
fn tar_listing(t: &std::path::Path) -> Vec<String> {
    let o = std::process::Command::new("tar")
        .args(["--full-time", "-tvf"])
        .arg(t)
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains("./var/log/journal/"))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn on_btrfs_a_running_machine_is_exported_from_a_snapshot() {
    exported_from_a_copy("mbtrfs", "mkfs.btrfs -q", "300M", "a btrfs snapshot");
}

#[test]
fn on_xfs_a_running_machine_is_exported_from_a_reflink_copy() {
    exported_from_a_copy("mxfs", "mkfs.xfs -q -m reflink=1", "512M", "a reflink copy");
}

/// A store on a loop-mounted file system made by `mkfs` (unmounted at the end, which frees the
/// loop device): a running machine's export freezes it only while `copy` is taken (`-v` says
/// so, with the milliseconds), the copy is gone afterwards, the machine runs on, and the
/// archive equals a stopped export but for a file its init rewrites every second.
fn exported_from_a_copy(name: &str, mkfs: &str, size: &str, copy: &str) {
    let scratch = Env::new();
    let fs = common::LoopFs::new(&scratch, mkfs, size);
    let env = Env::with_store_in(Some(&fs.mount));
    let src = env.path("src");
    rootfs_with_init(
        &src,
        "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do date > /root/clock; sleep 1 & wait; done\n",
    );
    env.ok(&["import-fs", src.to_str().unwrap(), name]);
    let m = Started::start(
        &env,
        name,
        &["--private-users", "no", "--network", "private"],
    );
    assert_eq!(
        m.sh("head -c 100000 /dev/zero | tr '\\0' x > /root/numbers")
            .0,
        0
    );
    let running = env.path("running.tar");
    let o = env.run(&["-v", "export-tar", name, running.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let said = format!(" ms to take {copy}, which is exported");
    assert!(
        err.contains("is running: frozen for ") && err.contains(&said),
        "{err}"
    );
    // The snapshot is gone and the machine runs on.
    assert_eq!(
        env.store_entries()
            .iter()
            .filter(|e| e.contains("export"))
            .count(),
        0,
        "{:?}",
        env.store_entries()
    );
    assert_eq!(m.sh("wc -c < /root/numbers").1.trim(), "100000");
    // As a cron job runs it, of the running machine: nothing at all on success.
    let o = env.run(&[
        "-q",
        "export-tar",
        name,
        env.path("cron.tar").to_str().unwrap(),
    ]);
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty());
    env.ok(&["kill", name, "--signal", "KILL"]);
    wait_stopped(&env, name, "kill -s KILL did not end it");
    let stopped = env.path("stopped.tar");
    env.ok(&["export-tar", name, stopped.to_str().unwrap()]);
    // The init rewrites /root/clock every second: the snapshot holds one moment of it.
    let (a, b): (Vec<String>, Vec<String>) = (
        tar_listing(&running)
            .into_iter()
            .filter(|l| !l.ends_with("./root/clock"))
            .collect(),
        tar_listing(&stopped)
            .into_iter()
            .filter(|l| !l.ends_with("./root/clock"))
            .collect(),
    );
    assert_eq!(a, b);
    assert!(a.iter().any(|l| l.ends_with("./root/numbers")));
    drop(m);
}
