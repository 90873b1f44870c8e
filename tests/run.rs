//! `rmach run`: probes inside the machine check what it sees (PID 1, hostname, mounts, /dev,
//! capabilities, seccomp, cgroup limits, user namespace maps, network interfaces, binds,
//! ephemeral and read-only roots, exit statuses, pipes, signals) and the host afterwards.
//! Needs root, cgroups and namespaces: CI runs it as root.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use common::run::{
    bookworm_with_systemd, cgroup_leftovers, failed_units, in_machine, probe, probe_command,
    probe_ok, signal_and_wait, system_state, wait_for_leader, wait_within, KillOnDrop, ProbeStore,
};
use common::{command_line, on_terminal, stderr, stdout, wrapped, Env};

#[test]
fn pid1_hostname_environment_and_identity() {
    let ts = ProbeStore::new("probe1");
    let out = probe_ok(
        &ts,
        &["--hostname", "inner", "-E", "FOO=bar"],
        "cat /proc/1/comm; echo pid=$$; hostname; echo $container $FOO $HOME; id -u; test -n \"$container_uuid\" && echo uuid",
    );
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
    let ts = ProbeStore::new("probe2");
    let before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let out = probe_ok(&ts, &[], "cat /proc/self/mountinfo; cat /run/host/os-release | head -1; cat /run/host/container-manager");
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
    // /run/host is a small read-only tmpfs of its own, as systemd-nspawn's.
    let run_host = opts("/run/host");
    assert!(run_host.contains(" - tmpfs "), "{run_host}");
    assert!(
        run_host
            .split_whitespace()
            .nth(5)
            .unwrap()
            .starts_with("ro"),
        "{run_host}"
    );
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
    let ts = ProbeStore::new("probe3");
    let out = probe_ok(
        &ts,
        &[],
        "ls /dev; readlink /dev/ptmx /dev/fd; echo x > /dev/null && head -c 4 /dev/urandom | wc -c",
    );
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

/// The capability bounding set in the lines of /proc/PID/status `status`.
fn bounding_set(status: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap_or_else(|| panic!("no CapBnd in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[test]
fn capabilities_and_seccomp() {
    let ts = ProbeStore::new("probe4");
    let out = probe_ok(
        &ts,
        &[],
        "grep -E '^(CapBnd|Seccomp|NoNewPrivs):' /proc/self/status",
    );
    let bnd = bounding_set(&out);
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
    let bnd = bounding_set(&out);
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
    let ts = ProbeStore::new("probe5");
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
    let out = probe_ok(
        &ts,
        &["--cpus", "0.2"],
        "exec bash -c 'end=$((SECONDS+2)); while ((SECONDS<end)); do :; done; times'",
    );
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
    let ts = ProbeStore::new("probe6");
    let out = probe_ok(
        &ts,
        &["--private-users", "pick"],
        "cat /proc/self/uid_map; stat -c %u /etc/passwd; touch /root/new; stat -c %u /root/new",
    );
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
    let ts = ProbeStore::new("netprobe");
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
    let mut child = KillOnDrop(
        ts.command()
            .args([
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
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
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
    // Stopped as a person stops it (SIGKILL would leave rmach's lock files and cgroup behind
    // for `clean` and the next run to remove).
    let status = signal_and_wait(&mut child.0, Signal::TERM, Duration::from_secs(30));
    assert_eq!(status.code(), Some(143));
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
    let ts = ProbeStore::new("probe7");
    let src = ts.path("shared");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("in"), "hello\n").unwrap();
    let rw = format!("{}:/mnt/rw", src.display());
    let ro = format!("{}:/mnt/ro", src.display());
    // Host root's directory: writable through the bind for host root only (--private-users no).
    let out = probe_ok(&ts, &["--private-users", "no", "--bind", &rw, "--bind-ro", &ro, "--tmpfs", "/srv"], "cat /mnt/rw/in; echo out > /mnt/rw/out; echo no > /mnt/ro/x || echo refused; grep ' /srv ' /proc/self/mountinfo | grep -c tmpfs");
    assert_eq!(out, "hello\nrefused\n1\n");
    assert_eq!(std::fs::read_to_string(src.join("out")).unwrap(), "out\n");
    // A bind over /run (as the bootstrap's second stage makes) receives nothing of the
    // runner's /run/host.
    let run = ts.dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let run_bind = format!("{}:/run", run.display());
    let (code, out, err) = probe(
        &ts,
        &["--private-users", "no", "--bind", &run_bind],
        "touch /run/mine; ls -A /run",
    );
    assert_eq!((code, out.as_str()), (0, "mine\n"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["mine"]);
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
    let ts = ProbeStore::new("probe8");
    assert_eq!(probe(&ts, &[], "exit 42").0, 42);
    assert_eq!(probe(&ts, &[], "kill -9 $$").0, 137);
    let o = ts.run_input(&["run", "probe8", "--", "cat"], b"through the pipe\n");
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
    // Only stdin, stdout and stderr reach the payload, whatever rmach itself inherited.
    let o = ts.run(&["run", "probe8", "--", "ls", "/proc/self/fd"]);
    assert_eq!(stdout(&o), "0\n1\n2\n3\n", "ls's own directory fd is 3");
    let o = ts.run(&["run", "-u", "user", "probe8", "--", "id", "-u"]);
    assert_eq!(stdout(&o), "1000\n");
    let o = ts.run(&["run", "--chdir", "/etc", "probe8", "--", "sh", "-c", "pwd"]);
    assert_eq!(stdout(&o), "/etc\n");
    let o = ts.run(&["run", "--chdir", "/nowhere", "probe8", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nowhere"), "{}", stderr(&o));
    // A read-only image runs read-only unless its changes go to a throw-away layer.
    assert!(ts.run(&["read-only", "probe8", "yes"]).status.success());
    let o = ts.run(&[
        "run",
        "probe8",
        "--",
        "sh",
        "-c",
        "touch /etc/x || echo refused",
    ]);
    assert_eq!(stdout(&o), "refused\n", "{}", stderr(&o));
    let o = ts.run(&[
        "run",
        "-x",
        "probe8",
        "--",
        "sh",
        "-c",
        "touch /etc/x && echo written",
    ]);
    assert_eq!(stdout(&o), "written\n", "{}", stderr(&o));
    assert!(ts.run(&["read-only", "probe8", "no"]).status.success());
    let o = ts.run(&["run", "-u", "nobody-here", "probe8", "--", "id"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no user nobody-here"));
}

#[test]
fn signals_are_forwarded() {
    let ts = ProbeStore::new("probe9");
    for (script, want) in [
        (
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
            7,
        ),
        ("echo ready; exec sleep 100", 143),
    ] {
        let mut child = KillOnDrop(
            ts.command()
                .args(["run", "probe9", "--", "/bin/sh", "-c", script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        std::thread::sleep(Duration::from_millis(100));
        let status = signal_and_wait(&mut child.0, Signal::TERM, Duration::from_secs(30));
        assert_eq!(status.code(), Some(want), "{script}");
        if want == 7 {
            assert_eq!(lines.next().unwrap().unwrap(), "got-term");
        }
    }
    assert!(cgroup_leftovers("probe9").is_empty());
}

#[test]
fn interactive_console_with_a_terminal() {
    let ts = ProbeStore::new("probe10");
    let rmach = probe_command(
        &ts,
        &[],
        "test -t 0 && test -t 1 && echo on-a-tty; echo $TERM",
    );
    let o = on_terminal("", &rmach)
        .env("TERM", "xterm")
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

#[test]
fn boot_bookworm_to_running_reboot_and_halt_on_sigterm() {
    let image = bookworm_with_systemd();
    let ts = Env::new();
    let o = ts.run(&["import-fs", image.to_str().unwrap(), "bw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = KillOnDrop(
        ts.command()
            .args(["boot", "bw"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let leader = wait_for_leader(child.id(), None);
    let state = system_state(leader);
    let failed = failed_units(leader);
    assert!(
        state == "running" || (state == "degraded" && failed.is_empty()),
        "{state}: {failed}"
    );
    assert!(failed.is_empty(), "failed units: {failed}");
    // systemd knows it runs in a container (it does not know rmach by name: container-other).
    let virt = in_machine(leader, &["systemd-detect-virt", "--container"]);
    assert!(virt.status.success(), "{}", stdout(&virt));
    let marker =
        std::fs::read_to_string(format!("/proc/{leader}/root/run/systemd/container")).unwrap();
    assert_eq!(marker.trim(), "rmach");
    // A reboot inside starts the machine again under the same rmach.
    let reboot = in_machine(leader, &["systemctl", "reboot"]);
    assert!(reboot.status.success(), "{}", stderr(&reboot));
    let second = wait_for_leader(child.id(), Some(leader));
    assert_eq!(system_state(second), "running");
    let status = signal_and_wait(child, Signal::TERM, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "poweroff ends rmach with 0");
    assert!(
        cgroup_leftovers("bw").is_empty(),
        "{:?}",
        cgroup_leftovers("bw")
    );

    // The same image in a user namespace, on a throw-away layer, with a veth pair; SIGINT halts.
    let mut child = KillOnDrop(
        ts.command()
            .args([
                "boot",
                "--private-users=pick",
                "--ephemeral",
                "--network=veth",
                "bw",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let leader = wait_for_leader(child.id(), None);
    assert_eq!(system_state(leader), "running");
    let failed = failed_units(leader);
    assert!(failed.is_empty(), "failed units: {failed}");
    let map = std::fs::read_to_string(format!("/proc/{leader}/uid_map")).unwrap();
    let base: u64 = map.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(base >= 0x80000, "{map}");
    let status = signal_and_wait(child, Signal::INT, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
    assert!(cgroup_leftovers("bw").is_empty());
}

#[test]
fn escape_sequence_kills_an_interactive_machine() {
    let ts = ProbeStore::new("probe11");
    let rmach = probe_command(&ts, &[], "echo ready; exec sleep 100");
    let mut script = KillOnDrop(
        on_terminal("", &rmach)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut script.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no ready line");
    }
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"\x1d\x1d\x1d")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "Ctrl-] three times did not end the machine"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(137), "killed with SIGKILL");
}

#[test]
fn window_size_changes_reach_the_machine() {
    let ts = ProbeStore::new("probe12");
    let marks = ts.path("marks");
    std::fs::create_dir(&marks).unwrap();
    // The outer terminal starts at 30x100 and is resized to 40x120 once the machine has seen
    // the first size; the kernel sends SIGWINCH to rmach, which copies the size onto the
    // machine's pty. The payload polls for the change (up to 10 s) instead of guessing a delay.
    std::fs::write(
        marks.join("inner.sh"),
        "stty size; touch /m/first\ni=0\nwhile [ $i -lt 100 ]; do s=$(stty size); [ \"$s\" != \"30 100\" ] && break; sleep 0.1; i=$((i+1)); done\necho $s\n",
    )
    .unwrap();
    let mut rmach = ts.command();
    rmach
        .args(["run", "--console", "interactive", "--private-users", "no"])
        .arg("--bind")
        .arg(format!("{}:/m", marks.display()))
        .args(["probe12", "--", "/bin/sh", "/m/inner.sh"]);
    let outer = format!(
        "stty rows 30 cols 100\n{} < /dev/tty &\n\
         while [ ! -e {m}/first ]; do sleep 0.05; done\nstty rows 40 cols 120\nwait\n",
        command_line(&rmach),
        m = marks.display()
    );
    std::fs::write(ts.path("outer.sh"), outer).unwrap();
    let mut sh = std::process::Command::new("sh");
    sh.arg(ts.path("outer.sh"));
    let o = on_terminal("", &sh).output().unwrap();
    let out = stdout(&o).replace('\r', "");
    assert!(
        out.contains("30 100\n") && out.contains("40 120\n"),
        "{out:?}"
    );
}

/// Opening a device outside the allow list fails even for root with CAP_MKNOD, both through the
/// v1 device controller (hybrid hosts) and through the eBPF program rmach attaches on cgroup v2.
/// The v2 case runs rmach in a mount namespace where /sys/fs/cgroup is the cgroup2 hierarchy,
/// which makes it take the v2 path on any host. loop-control (10:237) is the probe: the host
/// itself may open it, a machine must not.
#[test]
fn device_policy_denies_unlisted_devices() {
    let ts = ProbeStore::new("probe13");
    let script = "mknod /dev/lc c 10 237 && echo made; (exec 3</dev/lc) && echo opened; echo x > /dev/null && echo null-ok";
    let host = std::process::Command::new("sh")
        .args([
            "-c",
            "mknod \"$1\" c 10 237 && exec 3<\"$1\" && echo opened",
            "sh",
        ])
        .arg(ts.path("lc"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&host),
        "opened\n",
        "the host may open loop-control: {}",
        stderr(&host)
    );
    // Host root's rights inside (mknod needs them): --private-users no.
    let (_, out, err) = probe(&ts, &["--private-users", "no"], script);
    assert_eq!(out, "made\nnull-ok\n", "{err}");
    let inner = probe_command(&ts, &["--private-users", "no"], script);
    let o = wrapped(
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"",
            "sh",
        ],
        &inner,
    )
    .output()
    .unwrap();
    assert_eq!(stdout(&o), "made\nnull-ok\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
}

/// The library API the bootstrap uses: a plain directory, a controlled environment, captured
/// output, called from a process with threads; the caller's signal mask comes back intact.
#[test]
fn library_runs_a_directory_and_captures_output() {
    use rmach::runner::{self, Console, RunSpec};
    let ts = ProbeStore::new("lib");
    let mask = || {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        s.lines()
            .find(|l| l.starts_with("SigBlk:"))
            .unwrap()
            .to_string()
    };
    let before = mask();
    let busy: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| (0..20000).map(|i| vec![i; 64].len()).sum::<usize>()))
        .collect();
    let mut spec = RunSpec::new(
        ts.image("lib"),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo out $FOO; echo err >&2; ls /proc/1/ns >/dev/null; exit 3".into(),
        ],
    );
    spec.env.push(("FOO".into(), "bar".into()));
    spec.console = Console::Capture;
    let out = runner::output(&spec).unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out bar\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(mask(), before, "signal mask restored");
    for b in busy {
        b.join().unwrap();
    }
    spec.command = vec!["no-such".into()];
    let err = runner::run(&spec).unwrap_err().to_string();
    assert!(err.contains("no-such: no such command"), "{err}");
}

/// A read-only bind keeps the flags of the mount it binds (relatime, nosuid, nodev, noexec):
/// they are read with statvfs and mapped to mount flags by name (ST_RELATIME is not
/// MS_RELATIME).
#[test]
fn read_only_binds_keep_relatime_nosuid_nodev_noexec() {
    let ts = ProbeStore::new("probe15");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let mut guards = Vec::new();
    // (mount options on the host, options the machine must see, options it must not)
    let cases = [
        (
            "nosuid,nodev,noexec,relatime",
            &["ro", "nosuid", "nodev", "noexec", "relatime"][..],
            "noatime",
        ),
        (
            "nosuid,strictatime,nodiratime",
            &["ro", "nosuid", "nodiratime"][..],
            "relatime",
        ),
    ];
    for (i, (host_opts, want, not)) in cases.iter().enumerate() {
        let src = ts.path(&format!("flags{i}"));
        std::fs::create_dir(&src).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", host_opts, "tmpfs"])
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
        guards.push(Unmount(src.clone()));
        let bind = format!("{}:/mnt/flags", src.display());
        for mode in ["no", "pick"] {
            let (code, out, err) = probe(
                &ts,
                &["--private-users", mode, "--bind-ro", &bind],
                "grep ' /mnt/flags ' /proc/self/mountinfo",
            );
            assert_eq!(code, 0, "{mode}: {err}");
            let opts: Vec<&str> = out
                .split_whitespace()
                .nth(5)
                .unwrap_or("")
                .split(',')
                .collect();
            for w in *want {
                assert!(
                    opts.contains(w),
                    "{mode} {host_opts}: {w} missing from {out}"
                );
            }
            assert!(!opts.contains(not), "{mode} {host_opts}: {not} in {out}");
        }
    }
}

#[test]
fn bad_hostnames_and_boot_users_are_refused() {
    let ts = ProbeStore::new("probe16");
    for bad in ["bad host", "", "a..b", "-x!"] {
        let o = ts.run(&["run", "--hostname", bad, "probe16", "--", "true"]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--hostname"), "{}", stderr(&o));
    }
    let o = ts.run(&["boot", "-u", "nobody", "probe16"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--user"), "{}", stderr(&o));
    let o = ts.run(&[
        "run",
        "--hostname",
        "good.host-1",
        "probe16",
        "--",
        "hostname",
    ]);
    assert_eq!(stdout(&o), "good.host-1\n", "{}", stderr(&o));
}

#[test]
fn sigkill_of_the_helper_ends_the_run_and_its_machine() {
    let ts = ProbeStore::new("probe17");
    let mut run = KillOnDrop(
        probe_command(&ts, &[], "echo ready; exec sleep 100")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut run.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    assert!(out.read_line(&mut line).unwrap() > 0 && line == "ready\n");
    // rmach's only child is its helper, the machine's parent.
    let rmach = child.id();
    let helper: i32 = std::fs::read_to_string(format!("/proc/{rmach}/task/{rmach}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // By now the helper holds one end of one channel, its own with rmach: the machine's end
    // is the machine's alone, or rmach could not tell that its exec went through.
    let sockets = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            })
            .count()
    };
    assert_eq!(sockets(helper), 1, "the helper's sockets");
    let helper = rustix::process::Pid::from_raw(helper).unwrap();
    rustix::process::kill_process(helper, Signal::KILL).unwrap();
    // The machine goes with its parent (its parent-death signal): its stdout closes, and rmach
    // returns the helper's status and removes the cgroup.
    line.clear();
    assert_eq!(out.read_line(&mut line).unwrap(), 0, "{line}");
    let status = wait_within(child, Duration::from_secs(20), "its helper's SIGKILL");
    assert_eq!(status.code(), Some(137), "the helper's SIGKILL");
    assert!(cgroup_leftovers("probe17").is_empty());
}
