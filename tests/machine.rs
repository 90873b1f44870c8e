//! Started machines (`start`, `stop`, `kill`, `reboot`, `status`, `shell`, `set`, `copy-to`,
//! `copy-from`, `enable`, `disable`; live `export-tar` is in machine_export.rs) on a debootstrap'd bookworm with
//! systemd, and a small non-systemd image. Every machine is stopped by a guard at the end of
//! its test, which also checks that no cgroup, veth or record of it is left. Needs root.

mod common;
use common::machine as common_machine;

use std::time::{Duration, Instant};

use common::terminal::Terminal;
use common::Env;
use common_machine::{
    cgroup_file, env_with_bookworm, json, leftovers, record, rootfs_with_init, state_in_list,
    supervisor_of, wait_stopped, Started,
};

#[test]
fn start_shell_status_limits_copies_refusals_and_stop() {
    let name = "mlife";
    let env = env_with_bookworm(name);
    let m = Started::start(&env, name, &[]);
    assert_eq!(state_in_list(&env, name), "running");
    // systemd inside reached running before start returned.
    let (code, out, _) = m.sh("systemctl is-system-running");
    assert_eq!((code, out.trim()), (0, "running"), "{out}");

    // Refusals while it runs, each one line naming the way out.
    let e = env.fails(&["start", name], 1);
    assert!(
        e.contains("already running") && e.contains("rmach stop"),
        "{e}"
    );
    let e = env.fails(&["remove", name], 1);
    assert!(e.contains("is running") && e.contains("rmach stop"), "{e}");
    let e = env.fails(&["rename", name, "other"], 1);
    assert!(e.contains("is running"), "{e}");
    let tar = env.path("empty.tar");
    common::sh(&format!("tar -cf {} -T /dev/null", tar.display()));
    let e = env.fails(&["import-tar", tar.to_str().unwrap(), name, "--force"], 1);
    assert!(e.contains("is running"), "{e}");
    assert!(env
        .store
        .join(name)
        .join("usr/lib/systemd/systemd")
        .exists());

    // Shell: exit statuses, signals, users with their login environment, pipes both ways.
    assert_eq!(m.sh("exit 42").0, 42);
    assert_eq!(m.sh("kill -TERM $$").0, 128 + 15);
    let (_, out, _) = m.sh("echo $$ $HOME $USER; id -u; readlink /proc/1/exe");
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        &words[1..],
        ["/root", "root", "0", "/usr/lib/systemd/systemd"],
        "{out}"
    );
    assert_ne!(words[0], "1");
    // The machine's seccomp filter and bounding set hold in a session too.
    let (_, out, _) =
        m.sh("grep -E '^(Seccomp|CapBnd):' /proc/self/status; grep CapBnd: /proc/1/status");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.contains(&"Seccomp:\t2"), "{out}");
    assert_eq!(lines[0], lines[2], "bounding set: {out}");
    // Started without --no-new-privileges, a session may gain privileges (su, sudo).
    let (_, out, _) = m.sh("grep NoNewPrivs: /proc/self/status /proc/1/status");
    assert_eq!(out.matches("NoNewPrivs:\t0").count(), 2, "{out}");
    common::sh(&format!(
        "chroot {} useradd -m -s /bin/bash alice",
        env.store.join(name).display()
    ));
    let o = env.run(&[
        "shell",
        &format!("alice@{name}"),
        "--",
        "sh",
        "-c",
        "id -un; pwd; echo $SHELL",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "alice\n/home/alice\n/bin/bash\n"
    );
    let o = env.run_input(
        &["shell", name, "--", "tr", "a-z", "A-Z"],
        b"piped through\n",
    );
    assert_eq!(
        (o.status.code(), o.stdout.as_slice()),
        (Some(0), &b"PIPED THROUGH\n"[..])
    );
    let o = env.run(&["shell", &format!("nosuchuser@{name}"), "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no user nosuchuser"));
    // A session whose exec fails says which step failed and why (the session process's
    // message, with its errno, from before the exec).
    let not_a_program = env.store.join(name).join("usr/local/bin/not-a-program");
    std::fs::write(&not_a_program, "neither ELF nor #!").unwrap();
    common::sh(&format!("chmod 755 {}", not_a_program.display()));
    let e = env.fails(&["shell", name, "--", "/usr/local/bin/not-a-program"], 1);
    assert!(
        e.contains(&format!(
            "cannot enter {name}: execute /usr/local/bin/not-a-program"
        )) && e.contains("Exec format error"),
        "{e}"
    );
    // On a terminal (script gives one) the session gets a pty of the machine's devpts.
    let mut term = Terminal::spawn(env.command().args([
        "shell",
        name,
        "--",
        "sh",
        "-c",
        "tty; test -t 0 && echo on-a-tty; exit 3",
    ]));
    let status = term.wait(Duration::from_secs(60));
    let out = term.text();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(
        out.contains("/dev/pts/") && out.contains("on-a-tty"),
        "{out}"
    );
    // SSH_ORIGINAL_COMMAND runs through the user's shell.
    let o = env
        .command()
        .args(["shell", name])
        .env("SSH_ORIGINAL_COMMAND", "echo $0 \"$((6*7))\"; exit 3")
        .output()
        .unwrap();
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(3), "bash 42")
    );

    // Status: text and JSON, with cgroup figures and the console.
    let v = json(&env.ok(&["status", name, "--json"]));
    assert_eq!(v["state"], "running");
    assert_eq!(v["init"], "systemd");
    assert!(v["memory_bytes"].as_u64().unwrap() > 1 << 20, "{v}");
    assert!(v["cpu_nanoseconds"].as_u64().unwrap() > 0, "{v}");
    assert!(v["tasks"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["veth"], format!("ve-{name}"));
    let tail = v["console_tail"].as_array().unwrap();
    assert!(!tail.is_empty(), "{v}");
    let text = env.ok(&["status", name]);
    assert!(text.starts_with(&format!("{name}: running")), "{text}");
    // The leader is the machine's init (machinectl's Leader), in status and show alike, not
    // the supervisor holding the lock.
    let leader = v["leader"].as_u64().unwrap();
    assert_ne!(Some(leader as i32), supervisor_of(&env, name));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{leader}/comm")).unwrap(),
        "systemd\n"
    );
    assert!(
        text.contains(&format!("Leader: {leader} (systemd)")),
        "{text}"
    );
    assert_eq!(
        env.ok(&["show", name, "-p", "Leader", "--value"]).trim(),
        leader.to_string()
    );
    assert_eq!(json(&env.ok(&["show", name, "--json"]))["leader"], leader);
    assert!(env
        .ok(&["show", name])
        .contains(&format!("\nLeader: {leader}\n")));
    // An address configured inside shows up in status.
    assert_eq!(
        m.sh("ip addr add 10.231.7.2/24 dev host0 && ip link set host0 up")
            .0,
        0
    );
    let v = json(&env.ok(&["status", name, "--json"]));
    assert!(
        v["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.231.7.2"),
        "{v}"
    );

    // Limits change at once and are recorded.
    env.ok(&["set", name, "--pids-max", "40", "--memory-max", "96M"]);
    let settings = std::fs::read_to_string(env.store.join(format!("{name}.rmach"))).unwrap();
    assert!(
        settings.contains("pids-max = 40") && settings.contains("memory-max = \"96M\""),
        "{settings}"
    );
    let (code, _, err) = m.sh("for i in $(seq 60); do sleep 30 >/dev/null 2>&1 & done");
    assert!(
        code != 0 && err.contains("fork"),
        "pids-max 40 let 60 processes start: {err}"
    );
    let tasks = json(&env.ok(&["status", name, "--json"]))["tasks"]
        .as_u64()
        .unwrap();
    assert!(tasks <= 40, "{tasks} tasks under pids-max 40");
    env.ok(&["set", name, "--pids-max", "10000"]);
    assert_eq!(m.sh("pkill -x sleep; echo ok").1, "ok\n");
    // A process past the memory limit is killed by the kernel (tail keeps one endless line).
    let (code, _, _) = m.sh("head -c 400M /dev/zero | tail > /dev/null");
    assert_eq!(code, 137, "memory-max 96M did not stop a 400M process");
    // A CPU quota, written at once where the host keeps it.
    env.ok(&["set", name, "--cpus", "0.5"]);
    let quota = std::fs::read_to_string(cgroup_file(
        &env,
        name,
        &[("cpu", "cpu.cfs_quota_us"), ("", "cpu.max")],
    ))
    .unwrap();
    assert!(quota.starts_with("50000"), "{quota}");
    env.ok(&["set", name, "--memory-max", "1G"]);
    assert_eq!(m.sh("head -c 400M /dev/zero | tail > /dev/null").0, 0);
    let bad = env.run(&["set", name, "--memory-max", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        std::fs::read_to_string(env.store.join(format!("{name}.rmach")))
            .unwrap()
            .contains("memory-max = \"1G\"")
    );

    // Files in and out, resolved inside the machine.
    let host_file = env.path("hello");
    std::fs::write(&host_file, "from the host\n").unwrap();
    env.ok(&["copy-to", name, host_file.to_str().unwrap(), "/root/hello"]);
    assert_eq!(m.sh("cat /root/hello").1, "from the host\n");
    m.sh("echo from the machine > /root/back; ln -s /etc/shadow /root/shadow-link");
    let back = env.path("back");
    env.ok(&["copy-from", name, "/root/back", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "from the machine\n"
    );
    // A symlink to an absolute path is the machine's file, not the host's.
    let got = env.path("shadow");
    env.ok(&[
        "copy-from",
        name,
        "/root/shadow-link",
        got.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(env.store.join(name).join("etc/shadow")).unwrap()
    );

    // bind: a host directory appears at once, read-only when asked; a missing mount point
    // needs --mkdir.
    let share = env.path("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("f"), "shared\n").unwrap();
    let e = env.fails(&["bind", name, share.to_str().unwrap(), "/mnt/share"], 1);
    assert!(e.contains("--mkdir"), "{e}");
    env.ok(&[
        "bind",
        name,
        share.to_str().unwrap(),
        "/mnt/share",
        "--mkdir",
        "--read-only",
    ]);
    let (code, out, err) = m.sh("cat /mnt/share/f; touch /mnt/share/new");
    assert_eq!(out, "shared\n");
    assert!(code != 0 && err.contains("Read-only"), "{err}");

    // login: a getty on a new pty of the machine, through a terminal (script gives one).
    assert_eq!(m.sh("echo root:pw-for-login | chpasswd").0, 0);
    login_and_run(&env, name, "pw-for-login");

    // Stop: clean, within 30 s, nothing left.
    let began = Instant::now();
    env.ok(&["stop", name, "--timeout", "30"]);
    assert!(began.elapsed() < Duration::from_secs(30));
    assert_eq!(state_in_list(&env, name), "stopped");
    assert_eq!(leftovers(&env, name), Vec::<String>::new());
    let e = env.fails(&["shell", name, "--", "true"], 1);
    assert!(e.contains("not running"), "{e}");
    let e = env.fails(&["stop", name], 1);
    assert!(e.contains("not running"), "{e}");
    drop(m);
}

#[test]
fn kill_9_of_the_supervisor_leaves_list_truthful_and_reboot_works() {
    let name = "mkill9";
    let env = env_with_bookworm(name);
    {
        let m = Started::start(&env, name, &[]);
        // reboot: systemd goes down and comes up again with a new leader under the same supervisor.
        let before = json(&env.ok(&["status", name, "--json"]))["leader"]
            .as_u64()
            .unwrap();
        env.ok(&["reboot", name]);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = json(&env.ok(&["status", name, "--json"]));
            if v["state"] == "running" && v["leader"].as_u64().is_some_and(|l| l != before) {
                break;
            }
            assert!(Instant::now() < deadline, "no reboot: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            m.sh("systemctl is-system-running --wait").1.trim(),
            "running"
        );
        let sup = supervisor_of(&env, name).unwrap();
        let leader = json(&env.ok(&["status", name, "--json"]))["leader"]
            .as_u64()
            .unwrap();
        common::sh(&format!("kill -9 {sup}"));
        // The machine ends with its supervisor, before any rmach verb looks at it again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(format!("/proc/{leader}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                Instant::now() < deadline,
                "the machine outlived its supervisor"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_stopped(&env, name, "list still says running");
        let e = env.fails(&["status", name], 1);
        assert!(e.contains("not running"), "{e}");
        assert_eq!(leftovers(&env, name), Vec::<String>::new());
        // A killed supervisor cannot remove its lock files (nor can a killed nspawn): clean does.
        env.ok(&["clean"]);
        drop(m);
    }
    // And it starts again, and `kill` reaches its init.
    let m = Started::start(
        &env,
        name,
        &[
            "--network",
            "private",
            "--private-users",
            "no",
            "--no-new-privileges",
        ],
    );
    // A session takes on the machine's no_new_privs, as its init's children have it.
    let (code, out, err) = m.sh("grep NoNewPrivs: /proc/1/status /proc/self/status");
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "/proc/1/status:NoNewPrivs:\t1\n/proc/self/status:NoNewPrivs:\t1\n"
        ),
        "{err}"
    );
    env.ok(&["kill", name, "--signal", "KILL"]);
    wait_stopped(&env, name, "kill -s KILL did not end it");
    env.fails(&["kill", name, "--signal", "NOPE"], 2);
}

#[test]
fn a_non_systemd_init_is_up_once_started_and_stops_on_sigterm() {
    let env = Env::new();
    std::fs::create_dir_all(&env.store).unwrap();
    let name = "mplain";
    let root = env.store.join(name);
    rootfs_with_init(
        &root,
        "#!/bin/sh\ntrap 'echo halting; exit 0' TERM\necho plain init up\nwhile :; do sleep 1 & wait; done\n",
    );
    // Settings recorded while stopped are what the next start uses.
    env.ok(&["set", name, "--pids-max", "77", "--private-users", "no"]);
    let m = Started::start(&env, name, &["--network", "private"]);
    let pids_max = cgroup_file(&env, name, &[("pids", "pids.max"), ("", "pids.max")]);
    assert_eq!(std::fs::read_to_string(pids_max).unwrap().trim(), "77");
    assert_eq!(record(&env, name)["settings"]["private-users"], "no");
    assert_eq!(
        m.sh("cat /proc/self/uid_map").1.split_whitespace().nth(2),
        Some("4294967295")
    );
    let v = json(&env.ok(&["status", name, "--json"]));
    assert_eq!(
        (v["state"].as_str(), v["init"].as_str()),
        (Some("running"), Some("init")),
        "{v}"
    );
    assert_eq!(
        m.sh("echo $$ > /dev/null; cat /proc/1/cmdline | tr '\\0' ' '")
            .1
            .trim(),
        "/bin/sh /sbin/init"
    );
    env.ok(&["stop", name, "--timeout", "10"]);
    let log = std::fs::read_to_string(env.state.join("machines").join(format!("{name}.console")))
        .unwrap();
    assert!(
        log.contains("plain init up") && log.contains("halting"),
        "{log}"
    );
    drop(m);

    // A store directory of mode 0700 (as systemd makes /var/lib/machines) still starts a
    // machine in a private user range: the runner attaches the idmapped root from the host's
    // side, where root can reach it.
    common::sh(&format!("chmod 700 {}", env.store.display()));
    let m = Started::start(&env, name, &["--private-users", "pick"]);
    let map = m.sh("cat /proc/self/uid_map").1;
    assert_ne!(
        map.split_whitespace().nth(1),
        Some("0"),
        "a private range: {map}"
    );
    env.ok(&["stop", name, "--timeout", "10"]);
    drop(m);
    common::sh(&format!("chmod 755 {}", env.store.display()));

    // A clone takes its source's settings, as machinectl's clone copies the .nspawn file.
    env.ok(&["clone", name, "mplain-copy"]);
    let settings = |n: &str| std::fs::read_to_string(env.store.join(format!("{n}.rmach")));
    assert_eq!(settings("mplain-copy").unwrap(), settings(name).unwrap());
    env.ok(&["remove", "mplain-copy"]);
    assert!(settings("mplain-copy").is_err(), "removed with its image");

    // A start that cannot work fails with the reason and leaves nothing behind.
    let e = env.fails(&["start", name, "--bind", "/nonexistent-rmach-src:/mnt"], 1);
    assert!(
        e.contains("did not start") && e.contains("nonexistent-rmach-src"),
        "{e}"
    );
    assert_eq!(leftovers(&env, name), Vec::<String>::new());
    assert_eq!(state_in_list(&env, name), "stopped");

    // The settings file follows the image through rename and goes with remove.
    env.ok(&["rename", name, "mplain2"]);
    assert!(!env.store.join(format!("{name}.rmach")).exists());
    assert!(std::fs::read_to_string(env.store.join("mplain2.rmach"))
        .unwrap()
        .contains("pids-max = 77"));
    env.ok(&["remove", "mplain2"]);
    assert!(!env.store.join("mplain2.rmach").exists());
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_enable_links_it() {
    common::require("systemd-analyze");
    let env = Env::new();
    std::fs::create_dir_all(env.store.join("munit")).unwrap();
    let units = env.path("units");
    env.ok(&["enable", "munit", "--unit-dir", units.to_str().unwrap()]);
    let link = units.join("rmach-machines.target.wants/rmach@munit.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        units.join("rmach@.service")
    );
    assert!(units
        .join("multi-user.target.wants/rmach-machines.target")
        .exists());
    let unit = std::fs::read_to_string(units.join("rmach@.service")).unwrap();
    assert!(unit.contains(&format!(
        "ExecStart={} start --foreground %i",
        env!("CARGO_BIN_EXE_rmach")
    )));
    for needed in [
        "Type=notify",
        "KillMode=mixed",
        "Delegate=yes",
        "RestartForceExitStatus=133",
    ] {
        assert!(unit.contains(needed), "{needed}");
    }
    // verify loads the instance through its template in the same directory.
    std::fs::copy(
        units.join("rmach@.service"),
        units.join("rmach@munit.service"),
    )
    .unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join("rmach@munit.service"))
        .arg(units.join("rmach-machines.target"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let own: Vec<&str> = err.lines().filter(|l| l.contains("rmach")).collect();
    assert!(o.status.success() && own.is_empty(), "{err}");
    std::fs::remove_file(units.join("rmach@munit.service")).unwrap();
    env.ok(&["disable", "munit", "--unit-dir", units.to_str().unwrap()]);
    assert!(!link.exists());
    assert!(units.join("rmach@.service").exists());
}

/// sshd on 127.0.0.1 with `ForceCommand rmach shell NAME`, as docs/machines.md shows it.
struct Sshd {
    child: std::process::Child,
    port: u16,
    key: std::path::PathBuf,
    made_privsep: bool,
}

impl Sshd {
    fn start(env: &Env, name: &str) -> Sshd {
        for p in ["ssh", "scp", "sftp", "rsync", "ssh-keygen"] {
            common::require(p);
        }
        assert!(
            std::path::Path::new("/usr/sbin/sshd").exists(),
            "openssh-server is required"
        );
        let dir = env.path("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        common::sh(&format!(
            "ssh-keygen -q -t ed25519 -N '' -f {d}/hostkey && ssh-keygen -q -t ed25519 -N '' -f {d}/id && cp {d}/id.pub {d}/authorized_keys"
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let force = format!(
            "{} --store {} --state-dir {} shell {name}",
            env!("CARGO_BIN_EXE_rmach"),
            env.store.display(),
            env.state.display()
        );
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\nForceCommand {force}\n"
            ),
        )
        .unwrap();
        let made_privsep = !std::path::Path::new("/run/sshd").exists();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let s = Sshd {
            child,
            port,
            key: dir.join("id"),
            made_privsep,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn ssh_opts(&self) -> String {
        format!(
            "-i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.key.display()
        )
    }

    /// Runs a bash script with $SSH (ssh with options), $SCP, $SFTP, $RSYNC_RSH and $PORT set.
    fn client(&self, script: &str) -> std::process::Output {
        let o = self.ssh_opts();
        let p = self.port;
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "SSH='ssh {o} -p {p}'; SCP='scp {o} -P {p}'; SFTP='sftp {o} -P {p}'; export RSYNC_RSH=\"ssh {o} -p {p}\"; {script}"
            ))
            .output()
            .unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.made_privsep {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

#[test]
fn ssh_scp_sftp_and_rsync_reach_the_machine_through_a_force_command() {
    let name = "mssh";
    let env = env_with_bookworm(name);
    let m = Started::start(&env, name, &[]);
    let sshd = Sshd::start(&env, name);
    let text = |o: &std::process::Output| {
        format!(
            "{:?}: {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // ssh: the command runs in the machine (its manager, its PID 1), its status comes back.
    let o = sshd.client("$SSH root@127.0.0.1 'cat /run/host/container-manager; cat /proc/1/comm; echo $((6*7)); exit 5'");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "rmach\nsystemd\n42\n");
    let o = sshd.client("echo over stdin | $SSH root@127.0.0.1 'cat > /root/via-ssh'");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(m.sh("cat /root/via-ssh").1, "over stdin\n");

    // scp (SFTP protocol, and the old protocol with -O), sftp, rsync both ways.
    let src = env.path("payload");
    common::sh(&format!("head -c 300000 /dev/urandom > {}", src.display()));
    let s = src.display();
    let back = env.path("back");
    let b = back.display();
    for script in [
        format!("$SCP {s} root@127.0.0.1:/root/scp-sftp"),
        format!("$SCP -O {s} root@127.0.0.1:/root/scp-legacy"),
        format!("echo 'put {s} /root/sftp-put' | $SFTP -b - root@127.0.0.1"),
        format!("rsync -a {s} root@127.0.0.1:/root/rsynced"),
        format!("rsync -a root@127.0.0.1:/root/rsynced {b}-rsync && $SCP root@127.0.0.1:/root/scp-sftp {b}-scp"),
    ] {
        let o = sshd.client(&script);
        assert!(o.status.success(), "{script}: {}", text(&o));
    }
    let want = std::fs::read(&src).unwrap();
    let root = env.store.join(name).join("root");
    for f in ["scp-sftp", "scp-legacy", "sftp-put", "rsynced"] {
        assert_eq!(std::fs::read(root.join(f)).unwrap(), want, "{f}");
    }
    for f in ["back-rsync", "back-scp"] {
        assert_eq!(std::fs::read(env.path(f)).unwrap(), want, "{f}");
    }
    drop(sshd);
    drop(m);
}

/// Drives `rmach login NAME` on a terminal like a person: user, password, a command, then
/// Ctrl-] three times.
fn login_and_run(env: &Env, name: &str, password: &str) {
    let mut term = Terminal::spawn(env.command().args(["login", name]));
    let limit = Duration::from_secs(60);
    let mut at = 0;
    for (text, then) in [
        ("login:", "root\n".to_string()),
        ("Password:", format!("{password}\n")),
        ("# ", "echo LOGIN-$((6*7))\n".to_string()),
        ("LOGIN-42", "\x1d\x1d\x1d".to_string()),
    ] {
        at = term.wait_for_after(at, text, limit);
        term.type_keys(then.as_bytes());
    }
    assert!(
        term.wait(Duration::from_secs(20)).success(),
        "login did not end on Ctrl-] x3"
    );
}

#[test]
fn the_unit_under_a_real_systemd_starts_and_stops_a_machine() {
    // The outer machine boots bookworm's systemd with this rmach bound in; inside it, `rmach
    // enable` installs the unit, and systemctl starts and stops a machine through it. Both
    // levels run without a user namespace: a machine in a user namespace cannot mount /proc
    // inside another machine (the kernel refuses a proc mount where /proc is partly masked).
    // The inner machine has no device policy: its eBPF program needs the bpf system call,
    // which the machine's seccomp allow list refuses (as nspawn's does).
    let name = "mnest";
    let env = env_with_bookworm(name);
    let inner = env.store.join(name).join("var/lib/machines/ninner");
    rootfs_with_init(
        &inner,
        "#!/bin/bash\ntrap 'echo inner halting; exit 0' TERM SIGRTMIN+3\necho inner up\nwhile :; do sleep 1 & wait; done\n",
    );
    let bind = format!("{}:/usr/local/bin/rmach", env!("CARGO_BIN_EXE_rmach"));
    let m = Started::start(
        &env,
        name,
        &[
            "--private-users",
            "no",
            "--network",
            "private",
            "--bind-ro",
            &bind,
        ],
    );
    let script = "set -e
        rmach enable ninner
        rmach set ninner --private-users no --network private --unsafe-no-device-policy
        systemctl start rmach@ninner
        systemctl is-enabled rmach@ninner
        systemctl is-active rmach@ninner
        rmach status ninner | head -1
        L=$(rmach show ninner -p Leader --value)
        grep '^0::' /proc/$L/cgroup | grep -q 'rmach@ninner.service/ninner-[0-9]*/payload$' &&
            echo machine below the unit
        P=$(systemctl show -p MainPID --value rmach@ninner)
        grep '^0::' /proc/$P/cgroup | grep -q 'rmach@ninner.service/supervisor$' &&
            echo supervisor beside it
        systemctl stop rmach@ninner
        systemctl is-active rmach@ninner || true
        rmach list --json | grep -c '\"state\": \"stopped\"'
        journalctl -u rmach@ninner --no-pager -o cat | grep -E 'inner (up|halting)'";
    let (code, out, err) = m.sh(script);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "enabled",
            "active",
            "ninner: running",
            "machine below the unit",
            "supervisor beside it",
            "inactive",
            "1",
            "inner up",
            "inner halting"
        ],
        "{err}"
    );
    drop(m);
}
