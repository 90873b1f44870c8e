//! Helpers for the runner's tests: a small root filesystem assembled from host binaries and
//! the libraries `ldd` names, placed in a test store ([`ProbeStore`]), and a way to run a
//! script in it ([`probe`]); the bookworm image with systemd, and waiting for its boot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{stderr, stdout, Env};

/// Host programs copied into the probe image (with their libraries).
const PROGRAMS: &[&str] = &[
    "bash", "sh", "cat", "ls", "echo", "true", "false", "sleep", "head", "tail", "tr", "id",
    "hostname", "mkdir", "touch", "readlink", "stat", "grep", "env", "timeout", "wc", "rm",
    "chmod", "dd", "mount", "umount", "swapoff", "stty", "mknod",
];

/// Builds the probe image at `root`: /usr/bin with the programs above, /bin -> usr/bin,
/// their libraries, and a passwd with root and an unprivileged user.
pub fn make_rootfs(root: &Path) {
    for d in [
        "usr/bin",
        "etc",
        "root",
        "home/user",
        "tmp",
        "var/tmp",
        "proc",
        "sys",
        "dev",
        "run",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(t, root.join(l)).unwrap();
    }
    for p in PROGRAMS {
        let out = Command::new("bash")
            .args(["-c", &format!("type -P {p}")])
            .output()
            .unwrap();
        let host = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert!(
            host.is_absolute(),
            "{p} is needed on the host for the runner tests"
        );
        let host = std::fs::canonicalize(&host).unwrap();
        std::fs::copy(&host, root.join("usr/bin").join(p)).unwrap();
        let ldd = Command::new("ldd").arg(&host).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let lib = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(lib) = lib {
                let lib = if lib.starts_with("/lib") || lib.starts_with("/lib64") {
                    Path::new("/usr").join(lib.strip_prefix("/").unwrap())
                } else {
                    lib
                };
                let real = std::fs::canonicalize(&lib).unwrap();
                let dst = root.join(lib.strip_prefix("/").unwrap());
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                if !dst.exists() {
                    std::fs::copy(&real, &dst).unwrap();
                }
            }
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nusers:x:100:user\nuser:x:1000:\n",
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
}

/// An [`Env`] whose store holds the probe image under `name`; it is the `Env` for everything
/// else (commands, paths, and `clean` when dropped).
pub struct ProbeStore {
    pub env: Env,
    pub name: String,
}

impl ProbeStore {
    pub fn new(name: &str) -> ProbeStore {
        let env = Env::new();
        make_rootfs(&env.image(name));
        ProbeStore {
            env,
            name: name.into(),
        }
    }
}

impl std::ops::Deref for ProbeStore {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}

/// The host's Debian mirror, from its apt sources as rmach reads them (never written into the
/// tests).
pub fn host_mirror() -> String {
    rmach::bootstrap::host_debian_mirror(Path::new("/etc/apt"))
        .expect("no Debian mirror in the host's apt sources")
}

/// The bookworm image with systemd, built once with debootstrap from the host's mirror and
/// cached (CI builds it on its first run).
pub fn bookworm_with_systemd() -> std::path::PathBuf {
    let cache = std::path::Path::new("/var/cache/rmach-test");
    let image = cache.join("bookworm-systemd");
    if image.join("usr/lib/systemd/systemd").exists() {
        return image;
    }
    std::fs::create_dir_all(cache).unwrap();
    let mirror = host_mirror();
    let tmp = cache.join(format!(".bookworm-systemd.{}", std::process::id()));
    let st = std::process::Command::new("debootstrap")
        .args(["--include=systemd,systemd-sysv,dbus", "bookworm"])
        .arg(&tmp)
        .arg(&mirror)
        .stdout(Stdio::null())
        .status()
        .expect("debootstrap is needed for the boot test");
    assert!(st.success(), "debootstrap from {mirror} failed");
    std::fs::rename(&tmp, &image).unwrap();
    image
}

/// Ends a machine left running by a failed assertion: SIGTERM first, so that rmach removes its
/// lock files, cgroup and veth as it does when stopped; SIGKILL if it has not ended within ten
/// seconds (its machine dies with it).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn leader_of(rmach: u32) -> Option<u32> {
    // rmach -> the helper that cloned the namespaces -> the machine's PID 1.
    let children =
        |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok();
    let helper = children(&rmach.to_string())?;
    let leader = children(helper.split_whitespace().next()?)?;
    leader.split_whitespace().next()?.parse().ok()
}

/// `systemctl is-system-running --wait` inside the machine, through its leader's namespaces.
/// Retried while systemd has not yet created its bus socket (nothing) or /run/systemd/system (offline).
pub fn system_state(leader: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = std::process::Command::new("timeout")
            .args([
                "120",
                "nsenter",
                "-t",
                &leader.to_string(),
                "-a",
                "systemctl",
                "is-system-running",
                "--wait",
            ])
            .output()
            .unwrap();
        let state = stdout(&o).trim().to_string();
        if !(state.is_empty() || state == "offline") || Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_for_leader(rmach: u32, not: Option<u32>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(l) = leader_of(rmach).filter(|l| Some(*l) != not) {
            if std::fs::read_to_string(format!("/proc/{l}/comm"))
                .is_ok_and(|c| c.trim() == "systemd")
            {
                return l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no systemd leader under rmach {rmach}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `rmach run OPTS NAME -- /bin/sh -c SCRIPT` on the store's image.
pub fn probe_command(ts: &ProbeStore, opts: &[&str], script: &str) -> Command {
    let mut rmach = ts.command();
    rmach
        .arg("run")
        .args(opts)
        .args([&ts.name, "--", "/bin/sh", "-c", script]);
    rmach
}

/// Runs `sh -c SCRIPT` in the store's image with `opts`, which must succeed; its stdout.
pub fn probe_ok(ts: &ProbeStore, opts: &[&str], script: &str) -> String {
    let (code, out, err) = probe(ts, opts, script);
    assert_eq!(code, 0, "{opts:?} {script}: {out}{err}");
    out
}

/// Runs `sh -c SCRIPT` in the store's image with `opts`: (status, stdout, stderr).
pub fn probe(ts: &ProbeStore, opts: &[&str], script: &str) -> (i32, String, String) {
    let o = probe_command(ts, opts, script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
}

/// Machine cgroups named `NAME-*` still present in any hierarchy.
pub fn cgroup_leftovers(name: &str) -> Vec<String> {
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

/// Compiles `tests/probes/confine.c` (statically, so it runs in any image) into the image at
/// `root` as `/usr/bin/confine-probe`.
pub fn install_confine_probe(root: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/confine.c");
    let out = root.join("usr/bin/confine-probe");
    let st = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("a C compiler (cc) is needed for the confinement probes");
    assert!(st.success(), "compiling {}", src.display());
}

/// Compiles the same probe as a 32-bit i386 program (`cc -m32`, gcc-multilib), installed as
/// `/usr/bin/confine-probe32`: its system calls enter through the i386 entry point, which the
/// seccomp filter must cover as well as the native one. False, with the reason printed, when
/// the host cannot build 32-bit programs.
pub fn install_confine_probe_32(root: &Path) -> bool {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/confine.c");
    let out = root.join("usr/bin/confine-probe32");
    let o = Command::new("cc")
        .args(["-m32", "-static", "-O", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed for the confinement probes");
    if !o.status.success() {
        eprintln!(
            "skipped: cc -m32 cannot build a 32-bit probe (install gcc-multilib): {}",
            stderr(&o)
        );
    }
    o.status.success()
}

/// `systemd-nspawn` on `root` running `args`, as the reference for a probe: (stdout, stderr).
pub fn nspawn(root: &Path, args: &[&str]) -> (String, String) {
    let o = in_own_cgroup("systemd-nspawn")
        .arg("-D")
        .arg(root)
        .args(["--register=no", "--keep-unit", "-q", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-nspawn (systemd-container) is needed as the reference");
    (stdout(&o), stderr(&o))
}

/// A command for `program` that runs in a cgroup of its own, removed when it ends. Without a
/// systemd PID 1, nspawn makes its `payload` and `supervisor` cgroups below the cgroup it starts
/// in, which for a test would be the root of every hierarchy: they would outlive the test.
/// SIGTERM to the returned command's process is passed on to `program`.
pub fn in_own_cgroup(program: &str) -> Command {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(
            r#"cg=$1; shift
roots=; for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
  [ -e "$h/cgroup.procs" ] && mkdir "$h/$cg" && echo $$ > "$h/$cg/cgroup.procs" && roots="$roots $h"
done
"$@" <&0 & child=$!
trap 'kill -TERM $child 2>/dev/null' TERM INT
rc=0; while kill -0 $child 2>/dev/null; do wait $child; rc=$?; done
for h in $roots; do echo $$ > "$h/cgroup.procs"; find "$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null; done
exit $rc"#,
        )
        .arg("in-own-cgroup")
        .arg(format!("rmach-test-nspawn-{}-{run}", std::process::id()))
        .arg(program);
    c
}

/// Runs `args` inside the machine whose PID 1 is `leader`, in all of its namespaces.
pub fn in_machine(leader: u32, args: &[&str]) -> Output {
    Command::new("nsenter")
        .args(["-t", &leader.to_string(), "-a"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The failed units of the booted machine whose PID 1 is `leader`, one a line; empty when none.
pub fn failed_units(leader: u32) -> String {
    let o = in_machine(leader, &["systemctl", "--failed", "--no-legend", "--plain"]);
    stdout(&o).trim().to_string()
}

/// Sends `signal` to `child` and waits up to `limit` for it to end.
pub fn signal_and_wait(
    child: &mut std::process::Child,
    signal: rustix::process::Signal,
    limit: Duration,
) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    wait_within(child, limit, &format!("{signal:?}"))
}

/// Waits up to `limit` for `child` to end after `cause`; its status.
pub fn wait_within(
    child: &mut std::process::Child,
    limit: Duration,
    cause: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not end within {limit:?} of {cause}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
