//! `rmach run`: probes inside the machine check what it sees (PID 1, hostname, mounts, /dev,
//! capabilities, seccomp, cgroup limits, user namespace maps, network interfaces, binds,
//! ephemeral and read-only roots, exit statuses, pipes, signals) and the host afterwards.
//! Needs root, cgroups and namespaces: CI runs it as root.

#[path = "common/run.rs"]
mod common_run;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common_run::{stderr, stdout, TestStore};

fn probe(ts: &TestStore, opts: &[&str], script: &str) -> (i32, String, String) {
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.push(&ts.name);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    let o = ts.run(&args);
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

fn cgroup_leftovers(name: &str) -> Vec<String> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let parent = h.path().join("rmach");
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
            {
                left.push(e.path().display().to_string());
            }
        }
    }
    left
}

#[test]
fn pid1_hostname_environment_and_identity() {
    let ts = TestStore::new("probe1");
    let (code, out, err) = probe(
        &ts,
        &["--hostname", "inner", "-E", "FOO=bar"],
        "cat /proc/1/comm; echo pid=$$; hostname; echo $container $FOO $HOME; id -u; test -n \"$container_uuid\" && echo uuid",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["rmach", "pid=2", "inner", "rmach bar /root", "0", "uuid"]
    );
    let (_, out, _) = probe(&ts, &[], "hostname");
    assert_eq!(
        out.trim(),
        "probe1",
        "the hostname defaults to the image name"
    );
}

#[test]
fn mounts_and_their_flags() {
    let ts = TestStore::new("probe2");
    let before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let (code, out, err) = probe(&ts, &[], "cat /proc/self/mountinfo; cat /run/host/os-release | head -1; cat /run/host/container-manager");
    assert_eq!(code, 0, "{err}");
    let find = |target: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|f| f.len() > 5 && f[4] == target)
            .map(|f| f.join(" "))
            .collect()
    };
    let opts = |target: &str| {
        find(target)
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("{target} not mounted:\n{out}"))
    };
    assert!(opts("/proc").contains(" - proc "));
    assert!(opts("/proc/sys")
        .split_whitespace()
        .nth(5)
        .unwrap()
        .starts_with("ro"));
    assert!(opts("/sys")
        .split_whitespace()
        .nth(5)
        .unwrap()
        .starts_with("ro"));
    assert!(opts("/sys").contains(" - sysfs "));
    assert!(opts("/sys/fs/cgroup").contains(" - cgroup2 "));
    assert!(opts("/dev").contains(" - tmpfs "));
    assert!(opts("/dev/pts").contains("ptmxmode=666"));
    assert!(opts("/dev/shm").contains(" - tmpfs "));
    assert!(opts("/run").contains(" - tmpfs ") && opts("/tmp").contains(" - tmpfs "));
    assert!(opts("/proc/keys").contains("/null"), "masked by /dev/null");
    assert!(opts("/proc/timer_list").contains("/null"));
    // The host's mounts are not visible: only the machine's root and what rmach put on it.
    assert!(find("/work").is_empty() && find("/var/lib/machines").is_empty());
    assert!(out.lines().all(|l| !l.contains(" /sys/fs/cgroup/memory ")));
    assert!(
        out.contains("PRETTY_NAME=") || out.contains("NAME="),
        "{out}"
    );
    assert!(out.contains("rmach\n"));
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_eq!(before, after, "no mount is left on the host");
}

#[test]
fn dev_contents() {
    let ts = TestStore::new("probe3");
    let (code, out, err) = probe(
        &ts,
        &[],
        "ls /dev; readlink /dev/ptmx /dev/fd; echo x > /dev/null && head -c 4 /dev/urandom | wc -c",
    );
    assert_eq!(code, 0, "{err}");
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "net",
    ] {
        assert!(out.lines().any(|l| l == d), "/dev/{d} missing:\n{out}");
    }
    assert!(
        !out.lines()
            .any(|l| l == "sda" || l == "vda" || l == "mem" || l == "kmsg"),
        "{out}"
    );
    assert!(out.contains("pts/ptmx\n/proc/self/fd\n4\n"), "{out}");
}

#[test]
fn capabilities_and_seccomp() {
    let ts = TestStore::new("probe4");
    let (code, out, err) = probe(
        &ts,
        &[],
        "grep -E '^(CapBnd|Seccomp|NoNewPrivs):' /proc/self/status",
    );
    assert_eq!(code, 0, "{err}");
    let bnd = u64::from_str_radix(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    for (cap, n) in [
        ("sys_module", 16),
        ("sys_rawio", 17),
        ("sys_time", 25),
        ("mac_admin", 33),
        ("net_admin", 12),
    ] {
        assert_eq!(bnd & (1 << n), 0, "{cap} must not be in the bounding set");
    }
    for n in [0, 21, 22, 27] {
        assert_ne!(bnd & (1 << n), 0, "capability {n} expected");
    }
    assert!(
        out.contains("Seccomp:\t2") && out.contains("NoNewPrivs:\t0"),
        "{out}"
    );
    let (_, out, _) = probe(
        &ts,
        &[
            "--drop-capability",
            "CAP_CHOWN",
            "--capability",
            "sys_time",
            "--no-new-privileges",
        ],
        "grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status",
    );
    let bnd = u64::from_str_radix(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    assert_eq!(bnd & 1, 0);
    assert_ne!(bnd & (1 << 25), 0);
    assert!(out.contains("NoNewPrivs:\t1"));
    // swapoff needs CAP_SYS_ADMIN, which root inside has: EPERM can only come from the filter.
    let (code, _, err) = probe(&ts, &[], "swapoff /etc/passwd");
    assert_ne!(code, 0);
    assert!(
        err.contains("Not superuser") || err.contains("not permitted"),
        "{err}"
    );
    let bad = ts.run(&["run", "--capability", "cap_bogus", "probe4", "--", "true"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn cgroup_limits_are_enforced_and_removed() {
    let ts = TestStore::new("probe5");
    let (code, _, _) = probe(
        &ts,
        &["--memory-max", "64M"],
        "x=$(head -c 300M /dev/zero | tr '\\0' a); echo survived",
    );
    assert_eq!(
        code, 137,
        "a process over --memory-max is killed by the OOM killer"
    );
    let (code, out, err) = probe(
        &ts,
        &["--pids-max", "6"],
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait; echo done",
    );
    assert!(
        err.contains("fork") || err.contains("Resource temporarily unavailable"),
        "{code} {out} {err}"
    );
    // CPU time over two seconds of busy loop with a fifth of a CPU: well under one second.
    let (code, out, err) = probe(
        &ts,
        &["--cpus", "0.2"],
        "exec bash -c 'end=$((SECONDS+2)); while ((SECONDS<end)); do :; done; times'",
    );
    assert_eq!(code, 0, "{err}");
    let user = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let (m, s) = user.trim_end_matches('s').split_once('m').unwrap();
    let secs = m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap();
    assert!(
        secs < 1.2,
        "busy loop got {secs}s of CPU in 2s with --cpus 0.2"
    );
    assert!(
        cgroup_leftovers("probe5").is_empty(),
        "{:?}",
        cgroup_leftovers("probe5")
    );
}

#[test]
fn user_namespace_maps_and_ownership() {
    let ts = TestStore::new("probe6");
    let (code, out, err) = probe(
        &ts,
        &["--private-users", "pick"],
        "cat /proc/self/uid_map; stat -c %u /etc/passwd; touch /root/new; stat -c %u /root/new",
    );
    assert_eq!(code, 0, "{err}");
    let map: Vec<u64> = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!((map[0], map[2]), (0, 65536));
    assert!(map[1] >= 0x80000 && map[1] % 65536 == 0, "{map:?}");
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        ["0", "0"],
        "idmapped: image ids unchanged"
    );
    let meta = std::fs::metadata(ts.image("probe6").join("root/new")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "written as 0 on disk"
    );
    let (code, out, _) = probe(
        &ts,
        &["--private-users", "pick", "--network", "private"],
        "grep CapEff /proc/self/status; ls /sys/class/net",
    );
    assert_eq!(code, 0);
    assert!(out.contains("lo"));
    let bad = ts.run(&["run", "--private-users", "bogus", "probe6"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn network_modes() {
    let ts = TestStore::new("netprobe");
    let (_, host, _) = probe(&ts, &[], "ls /sys/class/net");
    let host_ifs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    assert_eq!(host.lines().count(), host_ifs.len());
    let (code, out, err) = probe(
        &ts,
        &["--network", "private"],
        "ls /sys/class/net; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().next(), Some("lo"));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().last().unwrap().ends_with('9') || out.contains("0x9"),
        "lo is up: {out}"
    );
    let mut child = ts
        .cmd(&[
            "run",
            "--network",
            "veth",
            "netprobe",
            "--",
            "/bin/sh",
            "-c",
            "ls /sys/class/net; echo ready; sleep 5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let inside: Vec<String> = lines
        .by_ref()
        .map(|l| l.unwrap())
        .take_while(|l| l != "ready")
        .collect();
    assert_eq!(inside, ["host0", "lo"]);
    assert!(
        std::path::Path::new("/sys/class/net/ve-netprobe").exists(),
        "host side of the veth"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new("/sys/class/net/ve-netprobe").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new("/sys/class/net/ve-netprobe").exists(),
        "veth removed with the machine"
    );
}

#[test]
fn binds_tmpfs_ephemeral_and_read_only() {
    let ts = TestStore::new("probe7");
    let src = ts.dir.path().join("shared");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("in"), "hello\n").unwrap();
    let rw = format!("{}:/mnt/rw", src.display());
    let ro = format!("{}:/mnt/ro", src.display());
    let (code, out, err) = probe(&ts, &["--bind", &rw, "--bind-ro", &ro, "--tmpfs", "/srv"], "cat /mnt/rw/in; echo out > /mnt/rw/out; echo no > /mnt/ro/x || echo refused; grep ' /srv ' /proc/self/mountinfo | grep -c tmpfs");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello\nrefused\n1\n");
    assert_eq!(std::fs::read_to_string(src.join("out")).unwrap(), "out\n");
    let (code, out, _) = probe(
        &ts,
        &["--ephemeral"],
        "echo gone > /etc/eph && cat /etc/eph",
    );
    assert_eq!((code, out.as_str()), (0, "gone\n"));
    assert!(
        !ts.image("probe7").join("etc/eph").exists(),
        "ephemeral changes vanish"
    );
    let (code, out, _) = probe(
        &ts,
        &["--read-only"],
        "touch /etc/ro 2>/dev/null || echo refused; touch /tmp/ok && echo tmp-writable",
    );
    assert_eq!((code, out.as_str()), (0, "refused\ntmp-writable\n"));
    assert!(!ts.image("probe7").join("etc/ro").exists());
    let run_leftovers: Vec<_> = std::fs::read_dir("/run")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".rmach-"))
        .collect();
    assert!(run_leftovers.is_empty());
}

#[test]
fn exit_statuses_pipes_and_errors() {
    let ts = TestStore::new("probe8");
    assert_eq!(probe(&ts, &[], "exit 42").0, 42);
    assert_eq!(probe(&ts, &[], "kill -9 $$").0, 137);
    let mut child = ts
        .cmd(&["run", "probe8", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through the pipe\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "through the pipe\n")
    );
    let o = ts.run(&["run", "probe8", "--", "no-such-command"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no-such-command: no such command"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = ts.run(&["run", "missing", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    let o = ts.run(&["run", "-u", "user", "probe8", "--", "id", "-u"]);
    assert_eq!(stdout(&o), "1000\n");
    let o = ts.run(&["run", "-u", "nobody-here", "probe8", "--", "id"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no user nobody-here"));
}

#[test]
fn signals_are_forwarded() {
    let ts = TestStore::new("probe9");
    for (script, want) in [
        (
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
            7,
        ),
        ("echo ready; exec sleep 100", 143),
    ] {
        let mut child = ts
            .cmd(&["run", "probe9", "--", "/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        std::thread::sleep(Duration::from_millis(100));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(want), "{script}");
        if want == 7 {
            assert_eq!(lines.next().unwrap().unwrap(), "got-term");
        }
    }
    assert!(cgroup_leftovers("probe9").is_empty());
}

#[test]
fn interactive_console_with_a_terminal() {
    let ts = TestStore::new("probe10");
    let rmach = format!(
        "{} --store {} --state-dir {} run probe10 -- /bin/sh -c 'test -t 0 && test -t 1 && echo on-a-tty; echo $TERM'",
        env!("CARGO_BIN_EXE_rmach"),
        ts.store().display(),
        ts.dir.path().join("state").display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &rmach, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("on-a-tty") && out.contains("xterm"),
        "{out} {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
}
