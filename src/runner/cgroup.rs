//! The machine's own cgroup subtree: created before the payload starts, limits written, and
//! removed after it ends. Works on pure cgroup v2 and on hybrid hosts (v1 controllers plus the
//! v2 hierarchy at /sys/fs/cgroup/unified), where limits go through the v1 controllers and the
//! unified hierarchy gives systemd inside a subtree of its own.

use std::fs;
use std::path::{Path, PathBuf};

use super::plan::Plan;
use super::RunnerError;

const ROOT: &str = "/sys/fs/cgroup";
/// Parent of every machine's cgroup, in each hierarchy.
pub(crate) const PARENT: &str = "rmach";

/// Which layout the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Unified,
    Hybrid,
}

pub(crate) fn layout() -> Layout {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        Layout::Unified
    } else {
        Layout::Hybrid
    }
}

/// Where the machine's processes live, below the cgroup that carries its limits and device
/// rules: the machine's cgroup namespace is rooted here, so it can neither see nor write the
/// limits, and whatever it writes in its own cgroup stays within them (limits and device rules
/// are hierarchical).
pub(crate) const PAYLOAD: &str = "payload";

/// A machine's cgroup directories (one per hierarchy it lives in).
#[derive(Debug)]
pub(crate) struct Cgroup {
    pub(crate) layout: Layout,
    /// `rmach/NAME-PID` in each hierarchy: limits and device rules; the machine is in
    /// [`PAYLOAD`] below each.
    pub(crate) dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), RunnerError> {
    fs::write(path, value).map_err(|e| RunnerError::Cgroup {
        path: path.into(),
        source: e,
    })
}

fn mkdir(path: &Path) -> Result<(), RunnerError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(RunnerError::Cgroup {
            path: path.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

impl Cgroup {
    /// Creates the plan's cgroup (`rmach/NAME-PID`) in every hierarchy needed and writes its
    /// limits and device rules.
    pub(crate) fn create(plan: &Plan) -> Result<Cgroup, RunnerError> {
        remove_stale();
        let mut cg = Cgroup {
            layout: layout(),
            dirs: Vec::new(),
        };
        let result = match cg.layout {
            Layout::Unified => cg.create_v2(plan),
            Layout::Hybrid => cg.create_hybrid(plan),
        }
        .and_then(|_| {
            // Created after the rules: a v1 devices child starts with its parent's.
            for d in &cg.dirs {
                mkdir(&d.join(PAYLOAD))?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove();
                Err(e)
            }
        }
    }

    fn create_v2(&mut self, plan: &Plan) -> Result<(), RunnerError> {
        let (limits, allow) = (&plan.limits, &plan.device_allow);
        let leaf = v2_path(plan);
        let root = Path::new(ROOT);
        let parent = root.join(leaf.parent().unwrap_or(Path::new(PARENT)));
        mkdir(&parent)?;
        // Delegate the controllers the host offers, so both limits and systemd inside work.
        let offered = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        for (name, wanted) in [
            ("memory", limits.memory_max.is_some()),
            ("pids", limits.pids_max.is_some()),
            ("cpu", limits.cpus.is_some()),
        ] {
            if wanted && !offered.split_whitespace().any(|o| o == name) {
                return Err(RunnerError::NoController { name: name.into() });
            }
        }
        let enable: Vec<String> = ["cpu", "memory", "pids"]
            .iter()
            .filter(|c| offered.split_whitespace().any(|o| o == **c))
            .map(|c| format!("+{c}"))
            .collect();
        // A delegated parent has the controllers its manager gave it; the root is not ours.
        let enable_in = match plan.cgroup_parent {
            Some(_) => vec![parent.as_path()],
            None => vec![root, parent.as_path()],
        };
        for dir in enable_in {
            for e in &enable {
                write(&dir.join("cgroup.subtree_control"), e)?;
            }
        }
        let dir = root.join(leaf);
        mkdir(&dir)?;
        self.dirs.push(dir.clone());
        // So the machine's own cgroup (below) has the controllers too.
        for e in &enable {
            write(&dir.join("cgroup.subtree_control"), e)?;
        }
        // The v2 device controller is an eBPF program; it stays attached until rmdir.
        let attach = || -> std::io::Result<()> {
            let prog = crate::sys::bpf::load_device_program(&super::devices::program(allow))?;
            crate::sys::bpf::attach_device_program(&fs::File::open(&dir)?, &prog)
        };
        // --unsafe-no-device-policy: none (inside another machine, bpf itself is refused).
        if plan.device_policy {
            attach().map_err(|e| RunnerError::Cgroup {
                path: dir.clone(),
                source: e,
            })?;
        }
        if let Some(m) = limits.memory_max {
            write(&dir.join("memory.max"), &m.to_string())?;
        }
        if let Some(p) = limits.pids_max {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        if let Some(c) = limits.cpus {
            write(&dir.join("cpu.max"), &format!("{} 100000", cpu_quota(c)))?;
        }
        Ok(())
    }

    fn create_hybrid(&mut self, plan: &Plan) -> Result<(), RunnerError> {
        let (limits, allow) = (&plan.limits, &plan.device_allow);
        let root = Path::new(ROOT);
        let mut hier = |name: &str| -> Result<Option<PathBuf>, RunnerError> {
            let h = root.join(name);
            if !h.join("cgroup.procs").exists() {
                return Ok(None);
            }
            // The v2 hierarchy's may be below a delegated cgroup; v1 controllers keep rmach/.
            let leaf = match name {
                "unified" => v2_path(plan),
                _ => plan.cgroup.clone(),
            };
            mkdir(&h.join(leaf.parent().unwrap_or(Path::new(PARENT))))?;
            let dir = h.join(leaf);
            mkdir(&dir)?;
            self.dirs.push(dir.clone());
            Ok(Some(dir))
        };
        hier("unified")?;
        let need = |name: &str, wanted: bool| -> Result<(), RunnerError> {
            if wanted && !root.join(name).join("cgroup.procs").exists() {
                return Err(RunnerError::NoController { name: name.into() });
            }
            Ok(())
        };
        need("memory", limits.memory_max.is_some())?;
        need("pids", limits.pids_max.is_some())?;
        need("cpu", limits.cpus.is_some())?;
        if let Some(dir) = hier("memory")? {
            if let Some(m) = limits.memory_max {
                write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
            }
        }
        if let Some(dir) = hier("pids")? {
            if let Some(p) = limits.pids_max {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
        }
        if let Some(dir) = hier("cpu")? {
            if let Some(c) = limits.cpus {
                write(&dir.join("cpu.cfs_period_us"), "100000")?;
                write(&dir.join("cpu.cfs_quota_us"), &cpu_quota(c).to_string())?;
            }
        }
        match hier("devices")? {
            Some(dir) => {
                write(&dir.join("devices.deny"), "a")?;
                // One rule per write, through one descriptor.
                let path = dir.join("devices.allow");
                let fail = |source| RunnerError::Cgroup {
                    path: path.clone(),
                    source,
                };
                let mut rules = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(fail)?;
                for rule in allow.iter() {
                    std::io::Write::write_all(&mut rules, rule.as_bytes()).map_err(fail)?;
                }
            }
            None if plan.device_policy => return Err(RunnerError::NoDeviceController),
            None => {}
        }
        Ok(())
    }

    /// Hands the machine's v2 cgroup (the unified one on a hybrid host) to the root of its user
    /// namespace, as cgroup v2 delegation prescribes: the directory and the files that move
    /// processes and enable controllers.
    pub(crate) fn delegate(&self, uid: u32, gid: u32) -> Result<(), RunnerError> {
        let v2 = self.dirs.iter().filter(|d| match self.layout {
            Layout::Unified => true,
            Layout::Hybrid => d.starts_with(Path::new(ROOT).join("unified")),
        });
        for d in v2.map(|d| d.join(PAYLOAD)) {
            for f in [
                "",
                "cgroup.procs",
                "cgroup.threads",
                "cgroup.subtree_control",
            ] {
                let p = if f.is_empty() { d.clone() } else { d.join(f) };
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| RunnerError::Cgroup { path: p, source: e })?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into every directory of the machine.
    pub(crate) fn add(&self, pid: i32) -> Result<(), RunnerError> {
        for d in &self.dirs {
            write(&d.join(PAYLOAD).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` back into rmach's own cgroup in every hierarchy of the machine.
    pub(crate) fn release(&self, pid: i32) -> Result<(), RunnerError> {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for d in &self.dirs {
            // Which hierarchy: /sys/fs/cgroup itself (pure v2) or the one mounted below it.
            let name = match self.layout {
                Layout::Unified => None,
                Layout::Hybrid => d.strip_prefix(ROOT).ok().and_then(|h| h.iter().next()),
            };
            let mount = Path::new(ROOT).join(name.unwrap_or_default());
            let name = name.map_or("unified".into(), |n| n.to_string_lossy());
            if let Some(path) = own_path(&own, &name) {
                write(&mount.join(path).join("cgroup.procs"), &pid.to_string())?;
            }
        }
        Ok(())
    }

    /// Removes the directories, deepest first (systemd inside creates its own), retrying while
    /// the kernel still frees the last processes.
    pub(crate) fn remove(&mut self) {
        for d in self.dirs.drain(..) {
            for _ in 0..200 {
                if remove_tree(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// The machine's cgroup in the v2 hierarchy: its leaf below the cgroup delegated to the caller
/// when the plan has one (`rmach@.service`), else the same as in every hierarchy.
fn v2_path(plan: &Plan) -> PathBuf {
    match (&plan.cgroup_parent, plan.cgroup.file_name()) {
        (Some(parent), Some(leaf)) => parent.join(leaf),
        _ => plan.cgroup.clone(),
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Cleans up after machines whose rmach was killed before it could: a leaf is named
/// `NAME-PID` after its rmach's PID. A leaf whose PID still runs (any program: rmach binaries
/// differ between installs) is never touched. Otherwise any process left in it (an orphaned
/// machine) is killed, and the leaf removed.
fn remove_stale() {
    let Ok(hierarchies) = fs::read_dir(ROOT) else {
        return;
    };
    for h in hierarchies.flatten() {
        let Ok(leaves) = fs::read_dir(h.path().join(PARENT)) else {
            continue;
        };
        for leaf in leaves.flatten() {
            let name = leaf.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .rsplit_once('-')
                .and_then(|(_, p)| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == 0 || Path::new(&format!("/proc/{pid}")).exists() || !leaf.path().is_dir() {
                continue;
            }
            kill_all(&leaf.path());
            let _ = remove_tree(&leaf.path());
        }
    }
}

/// Kills every process in the cgroup tree at `dir` (cgroup.kill where the kernel has it),
/// waiting up to a second for them to go.
fn kill_all(dir: &Path) {
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..100 {
        let pids = pids_in(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = crate::sys::process::kill(pid, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn pids_in(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(pids_in(&e.path()));
        }
    }
    pids
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// The path (relative) of the cgroup in /proc/self/cgroup's text `own` for the hierarchy
/// mounted at /sys/fs/cgroup/`name` (`unified`: the v2 line; else the v1 line naming it).
fn own_path<'a>(own: &'a str, name: &str) -> Option<&'a str> {
    own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let v2 = id == "0" && controllers.is_empty();
        let ours = match name {
            "unified" => v2,
            _ => controllers.split(',').any(|c| c == name),
        };
        ours.then(|| path.trim_start_matches('/'))
    })
}

/// Microseconds of CPU per 100 ms period; at least 1 ms (the kernel's minimum).
fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * 100_000.0) as u64).max(1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cgroup_per_hierarchy() {
        let own = "9:name=systemd:/\n5:devices:/a\n4:memory:/m/x\n1:cpu,cpuacct:/c\n0::/u/v\n";
        assert_eq!(super::own_path(own, "unified"), Some("u/v"));
        assert_eq!(super::own_path(own, "memory"), Some("m/x"));
        assert_eq!(super::own_path(own, "cpu"), Some("c"));
        assert_eq!(super::own_path(own, "pids"), None);
    }

    #[test]
    fn quota() {
        assert_eq!(super::cpu_quota(0.5), 50_000);
        assert_eq!(super::cpu_quota(2.0), 200_000);
        assert_eq!(super::cpu_quota(0.0001), 1000);
    }
}
