//! Confinement: probes run from inside machines, in every `--private-users` mode, check that
//! the machine cannot reach the host in the ways systemd-nspawn closes (and a few more), with
//! nspawn run on the same probe where it is the reference. Needs root, cgroups, namespaces, a
//! C compiler for the probe and systemd-nspawn: CI runs it as root.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::on_terminal;
use common::run::{
    install_confine_probe, nspawn, probe, probe_command, stderr, stdout, ProbeStore,
};

const MODES: &[&str] = &["no", "identity", "pick"];

fn store_with_probe(name: &str) -> ProbeStore {
    let ts = ProbeStore::new(name);
    install_confine_probe(&ts.image(name));
    ts
}

#[test]
fn seccomp_refuses_keyrings_fanotify_and_terminal_injection_in_every_mode() {
    let ts = store_with_probe("confine1");
    let calls = ["add_key", "keyctl", "request_key", "fanotify_init"];
    for call in calls {
        let (out, err) = nspawn(&ts.image("confine1"), &["/usr/bin/confine-probe", call]);
        assert_eq!(
            out.trim(),
            "EPERM",
            "nspawn, the reference, refuses {call}: {err}"
        );
    }
    for mode in MODES {
        for call in calls {
            let script = format!("confine-probe {call}");
            let (_, out, err) = probe(&ts, &["--private-users", mode], &script);
            assert_eq!(
                out.trim(),
                "EPERM",
                "{call} with --private-users {mode}: {err}"
            );
        }
        // A terminal the machine holds may be the caller's: pushing input into it is refused
        // whatever the console mode (here the pty of `script`).
        let rmach = probe_command(
            &ts,
            &["--console", "pipe", "--private-users", mode],
            "confine-probe tiocsti 0; confine-probe tioclinux 0",
        );
        let o = on_terminal("", &rmach).output().unwrap();
        let out = stdout(&o);
        assert_eq!(
            out.lines().map(str::trim).collect::<Vec<_>>(),
            ["EPERM", "EPERM"],
            "TIOCSTI/TIOCLINUX with --private-users {mode}: {out} {}",
            stderr(&o)
        );
    }
}

#[test]
fn nothing_of_the_caller_reaches_pid1_or_the_payload() {
    let ts = ProbeStore::new("confine2");
    let leak = tempfile::tempfile().unwrap();
    for mode in MODES {
        // The store on the command line too: PID 1's must not show rmach's.
        let mut cmd = ts.command();
        cmd.arg("--store").arg(&ts.store).args([
            "run",
            "--private-users",
            mode,
            "confine2",
            "--",
            "/bin/sh",
            "-c",
            "ls /proc/1/fd; echo -; ls /proc/self/fd; echo -; tr '\\0' '\\n' < /proc/1/environ; echo -; tr '\\0' ' ' < /proc/1/cmdline",
        ]);
        cmd.env("RMACH_CALLER_SECRET", "hunter2");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&leak);
        // SAFETY: (test) dup2 between two descriptors this process owns, in the forked child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::dup2(fd, 7) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{mode}: {}", stderr(&o));
        let out = stdout(&o);
        let parts: Vec<&str> = out.split("-\n").collect();
        let fds = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // With a private range, init changed its ids and is not dumpable: its /proc entries
        // belong to the host's root, which the machine cannot read at all.
        if *mode != "pick" {
            assert_eq!(
                fds(parts[0]),
                ["0", "1", "2"],
                "PID 1's descriptors, {mode}: {out}"
            );
        } else {
            assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
        }
        // The shell's own listing adds the directory it reads (3).
        assert_eq!(
            fds(parts[1]),
            ["0", "1", "2", "3"],
            "the payload's, {mode}: {out}"
        );
        assert!(
            !out.contains("hunter2") && !out.contains("RMACH_"),
            "{mode}: {out}"
        );
        assert!(
            *mode == "pick" || parts[2].contains("container=rmach"),
            "{mode}: {out}"
        );
        assert!(
            !parts[3].contains("--store"),
            "PID 1's cmdline, {mode}: {out}"
        );
    }
}

/// The host's device nodes, restored (mode and owner) when dropped if a test changed them.
struct HostNodes(Vec<(String, u32, u32, u32)>);

impl HostNodes {
    fn record(names: &[&str]) -> HostNodes {
        HostNodes(
            names
                .iter()
                .filter_map(|n| {
                    let p = format!("/dev/{n}");
                    let m = std::fs::metadata(&p).ok()?;
                    Some((p, m.mode() & 0o7777, m.uid(), m.gid()))
                })
                .collect(),
        )
    }

    fn changed(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(p, mode, uid, gid)| {
                let m = std::fs::metadata(p).unwrap();
                (m.mode() & 0o7777, m.uid(), m.gid()) != (*mode, *uid, *gid)
            })
            .map(|e| e.0.clone())
            .collect()
    }
}

impl Drop for HostNodes {
    fn drop(&mut self) {
        for (p, mode, uid, gid) in &self.0 {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode));
            let _ = std::os::unix::fs::chown(p, Some(*uid), Some(*gid));
        }
    }
}

#[test]
fn device_nodes_are_the_machines_own() {
    let ts = ProbeStore::new("confine3");
    let nodes = [
        "null", "zero", "full", "random", "urandom", "tty", "net/tun",
    ];
    let host = HostNodes::record(&nodes);
    for mode in MODES {
        let script = "for n in null zero full random urandom tty net/tun; do [ -e /dev/$n ] || continue; chmod 600 /dev/$n 2>/dev/null; chown 1:1 /dev/$n 2>/dev/null; done; echo x > /dev/null && echo null-ok; stat -c '%t:%T' /dev/null";
        let (code, out, err) = probe(&ts, &["--private-users", mode], script);
        let changed = host.changed();
        assert!(
            changed.is_empty(),
            "{mode}: the machine changed host nodes {changed:?}"
        );
        assert_eq!(code, 0, "{mode}: {err}");
        assert_eq!(out, "null-ok\n1:3\n", "{mode}: {err}");
    }
    drop(host);
    let null = std::fs::metadata("/dev/null").unwrap();
    assert_eq!(null.mode() & 0o777, 0o666);
}

#[test]
fn a_killed_rmach_takes_its_machine_along_and_the_name_runs_again() {
    let ts = ProbeStore::new("confine4");
    for mode in MODES {
        let mut child = probe_command(
            &ts,
            &["--private-users", mode, "--network", "veth"],
            "echo up; exec sleep 1000",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 3];
        std::io::Read::read_exact(&mut out, &mut first).unwrap();
        assert_eq!(&first, b"up\n");
        child.kill().unwrap();
        child.wait().unwrap();
        // The pipe closes: nothing of the machine holds it any more.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut rest);
            let _ = tx.send(rest);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok(),
            "{mode}: the machine outlived rmach (its stdout is still open)"
        );
        let (code, out, err) = probe(
            &ts,
            &["--private-users", mode, "--network", "veth"],
            "echo again",
        );
        assert_eq!((code, out.as_str()), (0, "again\n"), "{mode}: {err}");
    }
    // The pair goes with the machine's network namespace, which the kernel frees shortly after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new("/sys/class/net/ve-confine4").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ve-confine4 outlived its machine"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn read_only_mounts_stay_read_only_in_every_user_namespace_mode() {
    let ts = ProbeStore::new("confine5");
    // The store's directory is 0700, like /var/lib/machines: `pick` must work on it.
    std::fs::set_permissions(&ts.store, std::fs::Permissions::from_mode(0o700)).unwrap();
    let nested = tempfile::tempdir().unwrap();
    let inner = nested.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&inner)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(inner.clone());
    let bind = format!("{}:/mnt", nested.path().display());
    for mode in ["identity", "pick"] {
        let script = "for m in /sys /proc/sys /mnt /mnt/inner; do mount -o remount,bind,rw $m 2>/dev/null && echo $m remounted; done; touch /mnt/inner/x 2>/dev/null && echo wrote-below; echo done";
        let (code, out, err) = probe(&ts, &["--private-users", mode, "--bind-ro", &bind], script);
        assert_eq!((code, out.as_str()), (0, "done\n"), "{mode}: {err}");
    }
    assert!(!inner.join("x").exists());
}

#[test]
fn binds_into_a_read_only_image_need_their_mount_point() {
    let ts = ProbeStore::new("confine6");
    let ro = ts.run(&["read-only", "confine6", "yes"]);
    assert!(ro.status.success(), "{}", stderr(&ro));
    let (code, _, err) = probe(&ts, &["--tmpfs", "/nonexistent"], "true");
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent") && err.contains("read-only"),
        "{err}"
    );
    assert!(!ts.image("confine6").join("nonexistent").exists());
    let (code, out, err) = probe(&ts, &["--tmpfs", "/var/tmp"], "touch /var/tmp/x && echo ok");
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
}

#[test]
fn limits_and_device_rules_cannot_be_raised_from_inside() {
    let ts = ProbeStore::new("confine7");
    if !Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists() {
        eprintln!("skipped: this check is for hosts with v1 controllers (the v2 limits sit above the machine's cgroup namespace)");
        return;
    }
    let script = "mkdir -p /tmp/p /tmp/d; \
        mount -t cgroup -o pids none /tmp/p 2>/dev/null && echo max > /tmp/p/pids.max 2>/dev/null; \
        mount -t cgroup -o devices none /tmp/d 2>/dev/null && echo a > /tmp/d/devices.allow 2>/dev/null && echo widened; \
        mknod /tmp/lc c 10 237 && (exec 3</tmp/lc) 2>/dev/null && echo opened; \
        i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done; echo started; kill $(jobs -p) 2>/dev/null; echo done";
    for mode in MODES {
        let (_, out, err) = probe(&ts, &["--private-users", mode, "--pids-max", "20"], script);
        assert!(
            !out.contains("widened") && !out.contains("opened"),
            "{mode}: {out} {err}"
        );
        assert!(
            err.contains("fork") || err.contains("Resource temporarily unavailable"),
            "{mode}: the pids limit held? {out} {err}"
        );
    }
}

#[test]
fn stale_cgroup_clean_up_spares_live_runs_and_kills_orphans() {
    let ts = ProbeStore::new("confine8");
    let hierarchy = [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ]
    .into_iter()
    .map(Path::new)
    .find(|h| h.join("cgroup.procs").exists())
    .unwrap();
    let parent = hierarchy.join("rmach");
    std::fs::create_dir_all(&parent).unwrap();
    // A leaf whose rmach (here: any live process) still runs.
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let live_leaf = parent.join(format!("confine8live-{}", live.id()));
    std::fs::create_dir(&live_leaf).unwrap();
    // A leaf whose rmach is gone but whose machine (a sleep) is left.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let orphan_leaf = parent.join(format!("confine8gone-{gone_pid}"));
    std::fs::create_dir(&orphan_leaf).unwrap();
    let mut orphan = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(orphan_leaf.join("cgroup.procs"), orphan.id().to_string()).unwrap();
    let (code, _, err) = probe(&ts, &[], "true");
    let spared = live_leaf.exists();
    let _ = std::fs::remove_dir(&live_leaf);
    let _ = live.kill();
    let _ = live.wait();
    let orphan_status = orphan.wait().unwrap();
    let _ = std::fs::remove_dir(&orphan_leaf);
    assert_eq!(code, 0, "{err}");
    assert!(spared, "the cgroup of a live run was removed");
    assert!(!orphan_status.success(), "the orphan was killed");
    assert!(!orphan_leaf.exists());
}
