//! Sharing a store with systemd: systemd-nspawn running a machine in the test's store makes
//! rmach refuse remove, rename, export and run of it and list it as running; nspawn refuses an
//! image rmach is running; rmach's names are exactly the machine names nspawn accepts.
//!
//! This host has no systemd as PID 1 and /run is not a tmpfs, so nspawn runs with
//! `--register=no --keep-unit` inside a private mount namespace with its own /run (nspawn
//! refuses to clean up its /run/systemd/nspawn on a disk file system). The lock beside the
//! image, `.#NAME.lck` in the store, is what both tools see. Needs root and systemd-container.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use common::run::{
    cgroup_leftovers, in_own_cgroup, probe, probe_command, signal_and_wait, stderr, stdout,
    KillOnDrop, ProbeStore,
};

/// systemd-nspawn running `script` in `dir`, ended (TERM, then KILL) when dropped.
struct Nspawn(Child);

impl Nspawn {
    fn command(dir: &std::path::Path, script: &str) -> Command {
        Nspawn::command_with(dir, script, "")
    }

    /// `options`: more nspawn options, as one word (`--read-only`) or empty.
    fn command_with(dir: &std::path::Path, script: &str, options: &str) -> Command {
        let mut c = in_own_cgroup("unshare");
        c.args(["-m", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run && exec systemd-nspawn -D \"$0\" --register=no \
                 --keep-unit -q --console=pipe $2 /bin/sh -c \"$1\"",
            )
            .arg(dir)
            .arg(script)
            .arg(options)
            .stdin(Stdio::null());
        c
    }

    /// Starts nspawn and waits for the machine to say `up`.
    fn start(dir: &std::path::Path) -> Nspawn {
        Nspawn::start_with(dir, "")
    }

    fn start_with(dir: &std::path::Path, options: &str) -> Nspawn {
        let mut child = Nspawn::command_with(dir, "echo up; exec sleep 300", options)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("systemd-nspawn (systemd-container) is needed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "up\n", "nspawn did not start the machine");
        Nspawn(child)
    }
}

impl Drop for Nspawn {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rmach run OPTIONS NAME` of a machine that says `up` and sleeps, once it has said it.
fn rmach_running(ts: &ProbeStore, options: &[&str]) -> KillOnDrop {
    let mut rmach = KillOnDrop(
        probe_command(ts, options, "echo up; exec sleep 300")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(rmach.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n", "rmach did not start the machine");
    rmach
}

/// nspawn wants an os-release in the tree before it runs anything.
fn nspawn_ready(ts: &ProbeStore, name: &str) {
    let etc = ts.image(name).join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("os-release"), "ID=probe\nNAME=Probe\n").unwrap();
}

#[test]
fn a_machine_nspawn_runs_is_running_and_busy_for_rmach() {
    let ts = ProbeStore::new("nsp-a");
    nspawn_ready(&ts, "nsp-a");
    let nspawn = Nspawn::start(&ts.image("nsp-a"));

    let list = stdout(&ts.run(&["list", "--no-legend"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("nsp-a ") && l.ends_with("running")),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&ts.run(&["show", "nsp-a", "--json"]))).unwrap();
    assert_eq!(json["state"], "running", "{json}");
    assert_eq!(json["lock"]["verb"], "foreign", "{json}");
    assert_eq!(json["lock"]["program"], "systemd-nspawn", "{json}");
    // nspawn runs as the child of the wrapper that keeps it in a cgroup of its own.
    let nspawn_pid = json["lock"]["pid"].as_u64().expect("the holder's PID") as u32;
    let stat = std::fs::read_to_string(format!("/proc/{nspawn_pid}/stat")).unwrap();
    let parent: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(parent, nspawn.0.id(), "{json}");

    let out_file = ts.path("nsp-a.tar");
    for args in [
        vec!["remove", "nsp-a"],
        vec!["rename", "nsp-a", "nsp-b"],
        vec!["export-tar", "nsp-a", out_file.to_str().unwrap()],
        vec!["run", "nsp-a", "--", "/bin/true"],
        vec!["read-only", "nsp-a"],
    ] {
        let o = ts.run(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!("rmach: nsp-a is in use by systemd-nspawn (PID {nspawn_pid})"),
            "{args:?}"
        );
    }
    assert!(ts.image("nsp-a").join("etc/os-release").exists());
    assert!(!out_file.exists());
    assert!(!ts.image("nsp-b").exists());

    drop(nspawn);
    let list = stdout(&ts.run(&["list", "--no-legend"]));
    assert!(list.trim_end().ends_with("stopped"), "{list}");
    let o = ts.run(&["rename", "nsp-a", "nsp-b"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn nspawn_refuses_an_image_rmach_is_running() {
    let ts = ProbeStore::new("nsp-c");
    nspawn_ready(&ts, "nsp-c");
    let mut rmach = rmach_running(&ts, &[]);
    assert!(ts.store.join(".#nsp-c.lck").exists());
    let o = Nspawn::command(&ts.image("nsp-c"), "echo inside")
        .output()
        .unwrap();
    assert!(!o.status.success(), "nspawn ran a busy image");
    assert!(!stdout(&o).contains("inside"));
    assert!(stderr(&o).contains("currently busy"), "{}", stderr(&o));
    // SIGTERM, as a person would stop it: rmach forwards it, the payload ends, rmach releases
    // its locks (SIGKILL would leave nspawn's inode lock file behind in the host's /run).
    let status = signal_and_wait(&mut rmach.0, Signal::TERM, Duration::from_secs(30));
    assert_eq!(status.code(), Some(143));
    // rmach's lock is gone with it: nspawn runs the image now, and leaves no lock file.
    let deadline = Instant::now() + Duration::from_secs(10);
    let o = loop {
        let o = Nspawn::command(&ts.image("nsp-c"), "echo inside")
            .output()
            .unwrap();
        if o.status.success() || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stdout(&o), "inside\n", "{}", stderr(&o));
    assert!(!ts.store.join(".#nsp-c.lck").exists());
}

/// A machine that does not write to its image shares it, on both sides: nspawn --read-only
/// and rmach run --read-only (or --ephemeral) run the same image at once; a writable run of
/// either is refused meanwhile.
#[test]
fn read_only_machines_share_the_image_with_nspawn() {
    let ts = ProbeStore::new("nsp-r");
    nspawn_ready(&ts, "nsp-r");
    let nspawn = Nspawn::start_with(&ts.image("nsp-r"), "--read-only");
    for opts in [vec!["--read-only"], vec!["--ephemeral"]] {
        let mut args = vec!["run"];
        args.extend(&opts);
        args.extend(["nsp-r", "--", "/bin/echo", "shared"]);
        let o = ts.run(&args);
        assert_eq!(stdout(&o), "shared\n", "{opts:?}: {}", stderr(&o));
    }
    let o = ts.run(&["run", "nsp-r", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(1), "a writable run beside nspawn");
    assert!(
        stderr(&o).contains("in use by systemd-nspawn"),
        "{}",
        stderr(&o)
    );
    drop(nspawn);

    let mut rmach = rmach_running(&ts, &["--read-only"]);
    let o = Nspawn::command_with(&ts.image("nsp-r"), "echo inside", "--read-only")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "inside\n", "{}", stderr(&o));
    let o = Nspawn::command(&ts.image("nsp-r"), "echo inside")
        .output()
        .unwrap();
    assert!(stderr(&o).contains("currently busy"), "{}", stderr(&o));
    let status = signal_and_wait(&mut rmach.0, Signal::TERM, Duration::from_secs(30));
    assert_eq!(status.code(), Some(143));
}

#[test]
fn image_names_are_exactly_the_machine_names_nspawn_accepts() {
    let ts = ProbeStore::new("nsp-n");
    let names = [
        "web_01",
        "web-01",
        "a..b",
        "x-",
        "-x",
        "a.-b",
        "a-.b",
        "x.",
        ".h",
        "1",
        "a.b.c",
        "héllo",
        "UPPER.case",
        "a b",
        "a/b",
        "ok-name.example",
    ];
    let long_ok = "x".repeat(64);
    let long_bad = "x".repeat(65);
    for name in names
        .iter()
        .copied()
        .chain([long_ok.as_str(), long_bad.as_str()])
    {
        let nspawn = Command::new("systemd-nspawn")
            .arg(format!("--machine={name}"))
            .args(["-D", "/nonexistent-rmach-test", "true"])
            .output()
            .unwrap();
        let nspawn_accepts = !stderr(&nspawn).contains("Invalid machine name");
        let rmach = ts.run(&["show", "--", name]);
        // A valid name that is not in the store is "no image"; an invalid one a usage error.
        let rmach_accepts = rmach.status.code() == Some(1);
        assert_eq!(
            rmach_accepts,
            nspawn_accepts,
            "{name:?}: nspawn says {:?}, rmach says {:?}",
            stderr(&nspawn),
            stderr(&rmach)
        );
    }
}

/// A killed rmach (like a killed nspawn) cannot unlink its lock files; they are unheld, so
/// nothing is blocked, and `clean` removes them: in the store, the state directory, and
/// nspawn's global lock directory where present.
#[test]
fn clean_removes_the_lock_files_of_a_killed_rmach() {
    let ts = ProbeStore::new("nsp-k");
    let image = ts.image("nsp-k");
    let global = std::path::Path::new("/run/systemd/nspawn/locks")
        .is_dir()
        .then(|| {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&image).unwrap();
            std::path::PathBuf::from(format!(
                "/run/systemd/nspawn/locks/inode-{}:{}",
                meta.dev(),
                meta.ino()
            ))
        });
    let mut rmach = rmach_running(&ts, &[]);
    rmach.0.kill().unwrap();
    rmach.0.wait().unwrap();
    let lck = ts.store.join(".#nsp-k.lck");
    let state = ts.state.join("locks/nsp-k.lock");
    assert!(lck.exists() && state.exists());
    if let Some(g) = &global {
        assert!(g.exists());
        // The host check of every test's Env sees it.
        let named = format!("{} of {}", g.display(), image.display());
        assert_eq!(ts.host_leftovers(), [named]);
    }
    // The machine dies with rmach (parent-death signals), and with it the last copy of the
    // lock descriptors: then the image is stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = stdout(&ts.run(&["list", "--no-legend"]));
        if list.trim_end().ends_with("stopped") {
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = ts.run(&["clean"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!lck.exists() && !state.exists());
    if let Some(g) = &global {
        assert!(!g.exists(), "{} left", g.display());
    }
    // Its cgroup, which it could not remove either, goes with the next run.
    let (code, _, err) = probe(&ts, &[], "true");
    assert_eq!(code, 0, "{err}");
    assert_eq!(cgroup_leftovers("nsp-k"), Vec::<String>::new());
}
