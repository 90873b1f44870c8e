//! Helpers for the started-machine tests: a bookworm image with systemd, the ssh client tools,
//! sftp-server and rsync (debootstrap'd once from the host's mirror and cached, as the runner
//! tests cache theirs), a store holding a copy of it, and a guard that stops the machine at the
//! end of the test, however it ends, and checks that nothing of it is left on the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::run::host_mirror;
use crate::common::Env;

const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,openssh-client,openssh-sftp-server,rsync,iproute2";

/// The cached bookworm image for machine tests, built with debootstrap on first use.
pub fn bookworm_image() -> PathBuf {
    let cache = Path::new("/var/cache/rmach-test");
    let image = cache.join("bookworm-machine");
    if image.join("usr/bin/rsync").exists() {
        return image;
    }
    std::fs::create_dir_all(cache).unwrap();
    let tmp = cache.join(format!(".bookworm-machine.{}", std::process::id()));
    let st = Command::new("debootstrap")
        .arg(format!("--include={PACKAGES}"))
        .arg("bookworm")
        .arg(&tmp)
        .arg(host_mirror())
        .stdout(Stdio::null())
        .status()
        .expect("debootstrap is needed for the machine tests");
    assert!(st.success(), "debootstrap of the machine test image failed");
    // Another test may have finished first: theirs is as good.
    if std::fs::rename(&tmp, &image).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    image
}

/// A store with a copy of the bookworm image under `name`.
pub fn env_with_bookworm(name: &str) -> Env {
    let env = Env::new();
    std::fs::create_dir_all(&env.store).unwrap();
    let st = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(bookworm_image())
        .arg(env.store.join(name))
        .status()
        .unwrap();
    assert!(st.success());
    env
}

/// What is left on the host of machine `name`: cgroups, its veth, its record.
pub fn leftovers(env: &Env, name: &str) -> Vec<String> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for e in std::fs::read_dir(h.path().join("rmach"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
            {
                left.push(e.path().display().to_string());
            }
        }
    }
    let mut veth = format!("ve-{name}");
    veth.truncate(15);
    if Path::new("/sys/class/net").join(&veth).exists() {
        left.push(veth);
    }
    let record = env.state.join("machines").join(format!("{name}.json"));
    if record.exists() {
        left.push(record.display().to_string());
    }
    left
}

/// The supervisor PID from the machine's record, if it has one.
pub fn supervisor_of(env: &Env, name: &str) -> Option<i32> {
    let text =
        std::fs::read_to_string(env.state.join("machines").join(format!("{name}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["supervisor"].as_i64().map(|p| p as i32)
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The machine's record, as its supervisor wrote it.
pub fn record(env: &Env, name: &str) -> serde_json::Value {
    json(&std::fs::read_to_string(env.state.join(format!("machines/{name}.json"))).unwrap())
}

/// The first of `(hierarchy, file)` that exists in the machine's cgroup below `rmach/`
/// (hierarchy "" is the v2 root of a pure v2 host).
pub fn cgroup_file(env: &Env, name: &str, candidates: &[(&str, &str)]) -> std::path::PathBuf {
    let rec = record(env, name);
    let leaf = rec["cgroup"].as_str().unwrap();
    candidates
        .iter()
        .map(|(h, f)| {
            std::path::Path::new("/sys/fs/cgroup")
                .join(h)
                .join("rmach")
                .join(leaf)
                .join(f)
        })
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("none of {candidates:?} in {leaf}'s cgroup"))
}

pub fn state_in_list(env: &Env, name: &str) -> String {
    let v = json(&env.ok(&["list", "--json"]));
    v.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .map(|i| i["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A small root (common/run.rs's) whose init, /usr/bin/init (where /sbin/init points), is
/// `script`.
pub fn rootfs_with_init(root: &Path, script: &str) {
    super::run::make_rootfs(root);
    let init = root.join("usr/bin/init");
    std::fs::write(&init, script).unwrap();
    super::sh(&format!("chmod 755 {}", init.display()));
}

/// Waits until `list` says the machine stopped (20 s at most, else fails saying `what`).
pub fn wait_stopped(env: &Env, name: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_in_list(env, name) != "stopped" {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A started machine: stopped when dropped (killed if it will not stop), and the host checked.
pub struct Started<'a> {
    pub env: &'a Env,
    pub name: String,
}

impl<'a> Started<'a> {
    /// `rmach start NAME ARGS...`, required to succeed.
    pub fn start(env: &'a Env, name: &str, args: &[&str]) -> Started<'a> {
        let guard = Started {
            env,
            name: name.into(),
        };
        let mut all = vec!["start", name];
        all.extend_from_slice(args);
        env.ok(&all);
        guard
    }

    /// `rmach shell NAME -- sh -c SCRIPT`: (status, stdout, stderr).
    pub fn sh(&self, script: &str) -> (i32, String, String) {
        let o = self
            .env
            .run(&["shell", &self.name, "--", "sh", "-c", script]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        let _ = self.env.run(&["stop", &self.name, "--timeout", "20"]);
        if let Some(pid) = supervisor_of(self.env, &self.name) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !leftovers_without_record(self.env, &self.name).is_empty()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Any verb that reads the record removes a stale one and the cgroups it names.
        let _ = self.env.run(&["status", &self.name]);
        if !std::thread::panicking() {
            assert_eq!(
                leftovers(self.env, &self.name),
                Vec::<String>::new(),
                "left on the host"
            );
        }
    }
}

fn leftovers_without_record(env: &Env, name: &str) -> Vec<String> {
    leftovers(env, name)
        .into_iter()
        .filter(|l| !l.ends_with(".json"))
        .collect()
}
