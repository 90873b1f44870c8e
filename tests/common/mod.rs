//! Helpers shared by the tests that drive the rmach binary, one set for all of them: a
//! throw-away store and the one way to build an rmach command against it ([`Env::command`];
//! [`command_line`], [`on_terminal`] and [`wrapped`] hand that command to a shell, a terminal
//! or another program), a shell runner, tree fixtures and the one attribute-by-attribute tree
//! comparison ([`tree`]), builders for tar archives ([`tar`]), raw disks ([`raw`]), OCI layouts
//! ([`oci`]) and Debian mirrors ([`mirror`]), the runner's probe image ([`run`]), a terminal to
//! type into ([`terminal`]), the started-machine helpers ([`machine`]) and a udev daemon for
//! `systemd-nspawn --image` on hosts that run none ([`udev`]).
//! Each test binary takes it with `mod common;` and uses what it needs.
// Each test binary compiles all of it and uses a part, so every binary would call the rest
// unused: this allow covers the submodules too. Nothing here is unused by every binary (checked
// with `cargo check --tests --message-format json` without the allow).
#![allow(dead_code)]

pub mod bootstrap;
pub mod http;
pub mod machine;
pub mod mirror;
pub mod oci;
pub mod raw;
pub mod registry;
pub mod run;
pub mod tar;
pub mod terminal;
pub mod tree;
pub mod udev;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The rmach binary under test.
pub const RMACH: &str = env!("CARGO_BIN_EXE_rmach");

/// A temporary store, state directory and cache directory, room for inputs and outputs, and
/// the binary pointed at them.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub state: PathBuf,
    pub cache: PathBuf,
}

/// A killed rmach (or supervisor) cannot remove the lock files it holds for systemd's sake
/// (nspawn's `/run/systemd/nspawn/locks/inode-*`, as a killed nspawn cannot): `clean` removes
/// the unheld ones of the store's images, so no test leaves them on the host. Then what is
/// left of this environment on the host fails the test ([`Env::host_leftovers`]), unless it
/// is failing already.
impl Drop for Env {
    fn drop(&mut self) {
        if self.store.is_dir() {
            let _ = self.command().arg("-q").arg("clean").output();
            // A read-only image is immutable: the temporary directory could not be removed.
            let entries: Vec<PathBuf> = std::fs::read_dir(&self.store)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            if !entries.is_empty() {
                let _ = Command::new("chattr")
                    .args(["-f", "-i"])
                    .args(&entries)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if !std::thread::panicking() {
            let left = self.host_leftovers();
            assert!(left.is_empty(), "left on the host: {left:?}");
        }
    }
}

impl Env {
    pub fn new() -> Env {
        Env::with_store_in(None)
    }

    /// A store inside `parent` (a mounted test file system) instead of the temporary directory.
    pub fn with_store_in(parent: Option<&Path>) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("rmach-test-")
            .tempdir()
            .unwrap();
        let store = parent.unwrap_or(dir.path()).join("store");
        let state = dir.path().join("state");
        let cache = dir.path().join("cache");
        Env {
            dir,
            store,
            state,
            cache,
        }
    }

    /// `rel` inside the temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A new empty directory `rel` inside the temporary directory.
    pub fn empty_dir(&self, rel: &str) -> PathBuf {
        let dir = self.path(rel);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// The directory image `name` in the store.
    pub fn image(&self, name: &str) -> PathBuf {
        self.store.join(name)
    }

    /// The environment variables that point rmach at this store, state and cache directory
    /// (for a program that runs rmach itself, such as a completion script).
    pub fn vars(&self) -> [(&'static str, &Path); 3] {
        [
            ("RMACH_STORE", &self.store),
            ("RMACH_STATE_DIR", &self.state),
            ("RMACH_CACHE_DIR", &self.cache),
        ]
    }

    /// The command every test builds rmach with: this environment's store, state and cache
    /// directories (through [`Env::vars`], so that a test can still pass `--store`) and no
    /// input; the caller adds arguments.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(RMACH);
        cmd.envs(self.vars()).stdin(Stdio::null());
        cmd
    }

    /// Runs rmach with `args` and no input.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_with(args, None)
    }

    /// Runs rmach with `args`, feeding `input` on its standard input.
    pub fn run_input<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Output {
        self.run_with(args, Some(input))
    }

    fn run_with<S: AsRef<OsStr>>(&self, args: &[S], input: Option<&[u8]>) -> Output {
        let mut cmd = self.command();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = input {
            let mut pipe = child.stdin.take().unwrap();
            let data = data.to_vec();
            // A writer thread, so that a child that stops reading early cannot block the test.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rmach {:?} failed ({:?}): {}",
            shown(args),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires failure with `code`, without a panic and with one line on stderr;
    /// returns stderr.
    pub fn fails<S: AsRef<OsStr>>(&self, args: &[S], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "rmach {:?}: {stderr}",
            shown(args)
        );
        assert!(!stderr.contains("panicked"), "panic: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr
    }

    /// What of this environment outlives it on the host, each said in a line: nspawn's lock
    /// file of an image in the store (held: its machine still runs), a mount below the
    /// temporary directory, a loop device on a file in it or in the store (waiting up to 20 s
    /// for loop devices, which the kernel detaches asynchronously). Only things this
    /// environment owns are looked at, so tests running beside it cannot make it fail.
    pub fn host_leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let locks = Path::new("/run/systemd/nspawn/locks");
        for entry in std::fs::read_dir(&self.store)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            use std::os::unix::fs::MetadataExt;
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                let lock = locks.join(format!("inode-{}:{}", meta.dev(), meta.ino()));
                if lock.exists() {
                    left.push(format!("{} of {}", lock.display(), entry.path().display()));
                }
            }
        }
        let mine = |path: &Path| path.starts_with(self.dir.path()) || path.starts_with(&self.store);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            let target = line.split(' ').nth(4).unwrap_or("").replace("\\040", " ");
            if Path::new(&target).starts_with(self.dir.path()) {
                left.push(format!("mount on {target}"));
            }
        }
        let loops = || -> Vec<String> {
            let mut found = Vec::new();
            for dev in std::fs::read_dir("/sys/block")
                .into_iter()
                .flatten()
                .flatten()
            {
                let backing = std::fs::read_to_string(dev.path().join("loop/backing_file"));
                let backing = backing.unwrap_or_default();
                let file = backing.trim_end().trim_end_matches(" (deleted)");
                if !file.is_empty() && mine(Path::new(file)) {
                    found.push(format!("{} on {file}", dev.file_name().to_string_lossy()));
                }
            }
            found
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut loop_devices = loops();
        while !loop_devices.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            loop_devices = loops();
        }
        left.extend(loop_devices);
        left
    }

    /// The store through the library, as the binary opens it.
    pub fn library_store(&self) -> rmach::store::Store {
        rmach::store::Store::open(&self.store, &self.state).unwrap()
    }

    /// Names of the entries in the store directory, hidden ones included, sorted; none when
    /// the store does not exist yet.
    pub fn store_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.store) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

/// A command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn shown<S: AsRef<OsStr>>(args: &[S]) -> Vec<&OsStr> {
    args.iter().map(AsRef::as_ref).collect()
}

/// Quotes `arg` for a POSIX shell.
pub fn quote(arg: &OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', "'\\''"))
}

/// `cmd` as one shell command line: `env` with its environment variables, then its program and
/// arguments, all quoted (the command's other settings are not carried over).
pub fn command_line(cmd: &Command) -> String {
    let mut words = vec!["env".to_string()];
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// `cmd` run on a new pseudo-terminal by `script` (util-linux), after the shell commands
/// `setup` (as `stty rows 30 cols 100; `): stdin, stdout and stderr of `cmd` are the terminal,
/// the returned command's stdout shows it and its stdin types into it; its exit status is
/// `cmd`'s. No input unless the caller pipes some.
pub fn on_terminal(setup: &str, cmd: &Command) -> Command {
    let mut script = Command::new("script");
    script
        .arg("-qfec")
        .arg(format!("{setup}exec {}", command_line(cmd)))
        .arg("/dev/null")
        .stdin(Stdio::null());
    script
}

/// `cmd` run by the program `wrapper` names with its arguments (`setpriv ...`, `unshare ...`),
/// in `cmd`'s environment. No input.
pub fn wrapped(wrapper: &[&str], cmd: &Command) -> Command {
    let mut outer = Command::new(wrapper[0]);
    outer
        .args(&wrapper[1..])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => outer.env(key, value),
            None => outer.env_remove(key),
        };
    }
    outer
}

/// Requires a program's `out` to say success; a failure names `what` and shows the status and
/// the program's stderr.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a bash script with `-eu` and requires success; a failure shows the script's stderr.
pub fn sh(script: &str) {
    let out = Command::new("bash")
        .arg("-euc")
        .arg(script)
        .output()
        .unwrap();
    assert_success(&out, &format!("sh: {script}"));
}

/// A small tmpfs mounted over a directory, for full-disk cases; unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount takes it: "2m") on `path`, creating the directory.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        sh(&format!(
            "mount -t tmpfs -o size={size} rmach-test-full '{}'",
            path.display()
        ));
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// A file system made by `mkfs` (a command line such as "mkfs.btrfs -q") in an image file of
/// `size` (as truncate takes it: "300M") in `env`, loop-mounted on a directory of `env`;
/// unmounted, which frees the loop device, when dropped (so drop it before `env`).
pub struct LoopFs {
    pub mount: PathBuf,
}

impl LoopFs {
    pub fn new(env: &Env, mkfs: &str, size: &str) -> LoopFs {
        require(mkfs.split(' ').next().unwrap());
        let image = env.path("loopfs.img");
        let mount = env.path("loopfs");
        std::fs::create_dir(&mount).unwrap();
        sh(&format!(
            "truncate -s {size} '{i}'; {mkfs} '{i}'; mount -o loop '{i}' '{m}'",
            i = image.display(),
            m = mount.display()
        ));
        LoopFs { mount }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// Whether a program is on PATH; tests that need it install it through scripts/test, so a
/// missing one is a failure, not a skip.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "{program} is required (scripts/test installs it)");
}
