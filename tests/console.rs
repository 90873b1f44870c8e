//! The console, as systemd-nspawn's: a bookworm machine booted on a terminal shows its login
//! prompt (the relay survives the pty hangups of a boot), takes a login and a command and shows
//! its output live, passes Ctrl-C to the machine's shell, and powers off; off a terminal the whole boot log goes to stdout and
//! SIGINT halts the machine; the read-only, passive, pipe and autopipe modes and the ^] escape.
//! Needs root, cgroups, namespaces and `script`; the boot tests need the bookworm image of
//! `common/run.rs` (built with debootstrap from the host's mirror on first use).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use common::run::{bookworm_with_systemd, signal_and_wait, stderr, stdout, KillOnDrop, ProbeStore};
use common::terminal::Terminal;
use common::Env;

const BOOT: Duration = Duration::from_secs(120);

/// A store with the bookworm image under `name` and root's password set to `pw`.
fn bookworm_store(name: &str) -> Env {
    let ts = Env::new();
    let o = ts.run(&["import-fs", bookworm_with_systemd().to_str().unwrap(), name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut chpasswd = std::process::Command::new("chroot")
        .arg(ts.image(name))
        .arg("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(b"root:pw\n")
        .unwrap();
    assert!(chpasswd.wait().unwrap().success());
    ts
}

/// `rmach run --console MODE NAME -- COMMAND...` on a new terminal.
fn console_run(ts: &ProbeStore, mode: &str, command: &[&str]) -> Terminal {
    let mut rmach = ts.command();
    rmach
        .args(["run", "--console", mode, &ts.name, "--"])
        .args(command);
    Terminal::spawn(&rmach)
}

#[test]
fn boot_on_a_terminal_logs_in_runs_a_command_and_powers_off() {
    let ts = bookworm_store("cons-bw1");
    let mut term = Terminal::spawn(ts.command().args(["boot", "cons-bw1"]));
    term.wait_for("Spawning machine cons-bw1", BOOT);
    term.wait_for("Press ^] three times within 1s", BOOT);
    // The prompt comes after systemd's hangups of the console (issue #15: the relay gave up).
    let at = term.wait_for("login: ", BOOT);
    term.type_keys(b"root\n");
    let at = term.wait_for_after(at, "Password: ", BOOT);
    term.type_keys(b"pw\n");
    let at = term.wait_for_after(at, "# ", BOOT);
    term.type_keys(b"echo live-$((6*7)); tty\n");
    let at = term.wait_for_after(at, "live-42", BOOT);
    let at = term.wait_for_after(at, "/dev/console", BOOT);
    // Ctrl-C is a keystroke for the machine: it interrupts the shell's command, nothing more.
    term.type_keys(b"sleep 1000\n");
    std::thread::sleep(Duration::from_millis(500));
    term.type_keys(b"\x03");
    term.type_keys(b"echo alive-$((1+1))\n");
    term.wait_for_after(at, "alive-2", Duration::from_secs(30));
    term.type_keys(b"systemctl poweroff\n");
    let status = term.wait(BOOT);
    let text = term.text();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("Machine cons-bw1 has been shut down."),
        "{text}"
    );
}

#[test]
fn boot_off_a_terminal_writes_the_whole_boot_log_and_sigint_halts() {
    let ts = bookworm_store("cons-bw2");
    let log = ts.path("boot.log");
    let mut child = KillOnDrop(
        ts.command()
            .args(["boot", "cons-bw2"])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + BOOT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("login: ")
    {
        assert!(
            Instant::now() < deadline,
            "no login prompt in the boot log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Off a terminal the console is read-only: Ctrl-C (SIGINT to rmach) halts the machine.
    let status = signal_and_wait(&mut child.0, Signal::INT, BOOT);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    for line in [
        "Welcome to",
        "Reached target",
        "login: ",
        "System Halt",
        "Halting system.",
    ] {
        assert!(
            text.contains(line),
            "{line:?} missing from the boot log:\n{text}"
        );
    }
    // Not on a terminal: nothing but the machine's own output, no banner on stderr.
    let mut err = String::new();
    use std::io::Read;
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(err, "");
}

#[test]
fn read_only_console_shows_output_and_takes_no_input() {
    let ts = ProbeStore::new("cons-ro");
    let mut term = console_run(
        &ts,
        "read-only",
        &[
            "/bin/bash",
            "-c",
            "test -t 0 && echo pty-in; echo ready; read -t 3 x; echo \"got=[$x]\"",
        ],
    );
    term.wait_for("ready", BOOT);
    term.type_keys(b"typed\n");
    let status = term.wait(BOOT);
    let text = term.text().replace('\r', "");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("pty-in\n"), "{text}");
    assert!(text.contains("got=[]"), "input reached the machine: {text}");
    assert!(
        !text.contains("Press ^]"),
        "no escape without input: {text}"
    );
}

#[test]
fn passive_console_is_a_pty_connected_to_nothing() {
    let ts = ProbeStore::new("cons-pa");
    let o = ts.run(&[
        "run",
        "--console",
        "passive",
        "cons-pa",
        "--",
        "/bin/sh",
        "-c",
        "test -t 1 || exit 3; echo hidden; test -e /dev/console",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[test]
fn pipe_and_autopipe_off_a_terminal_pass_stdio_through() {
    let ts = ProbeStore::new("cons-pi");
    for mode in ["pipe", "autopipe"] {
        let o = ts.run_input(
            &[
                "run",
                "--console",
                mode,
                "cons-pi",
                "--",
                "/bin/sh",
                "-c",
                "test -t 0 && echo tty; test -e /dev/console && echo console; tr a-z A-Z",
            ],
            b"piped\n",
        );
        assert_eq!(o.status.code(), Some(0), "{mode}");
        assert_eq!(stdout(&o), "PIPED\n", "{mode}");
    }
}

#[test]
fn autopipe_on_a_terminal_is_interactive_and_the_escape_says_so() {
    let ts = ProbeStore::new("cons-esc");
    let mut term = console_run(
        &ts,
        "autopipe",
        &[
            "/bin/sh",
            "-c",
            "test -e /dev/console && echo ready; exec sleep 100",
        ],
    );
    term.wait_for("Press ^] three times within 1s", BOOT);
    term.wait_for("ready", BOOT);
    term.type_keys(b"\x1d\x1d\x1d");
    let status = term.wait(Duration::from_secs(30));
    let text = term.text();
    assert_eq!(status.code(), Some(137), "{text}");
    assert!(text.contains("Machine cons-esc was killed"), "{text}");
}

#[test]
fn the_escape_works_while_the_machine_floods_its_console() {
    let ts = ProbeStore::new("cons-fl");
    let mut term = console_run(&ts, "interactive", &["/bin/cat", "/dev/zero"]);
    term.wait_for("Press ^] three times", BOOT);
    std::thread::sleep(Duration::from_secs(1));
    term.type_keys(b"\x1d\x1d\x1d");
    let status = term.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(137));
}
