//! A running machine's cgroup seen from the host: usage for `status`, limits changed while it
//! runs (`set`), freezing for live backups, and joining it (`shell`). The runner creates
//! `rmach/NAME-SUPERVISORPID` in each hierarchy (in the v2 one below the cgroup systemd
//! delegated to the supervisor, when it runs as `rmach@.service`); this module finds the same
//! directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{IoAt, Result};
use crate::runner::Limits;

const ROOT: &str = "/sys/fs/cgroup";

/// The machine's cgroup directories.
#[derive(Debug, Clone)]
pub(crate) struct MachineCgroup {
    /// The v2 directory: `/sys/fs/cgroup/rmach/LEAF`, or under `unified/` on a hybrid host.
    pub(crate) v2: PathBuf,
    /// v1 controller directories on a hybrid host, by controller name.
    pub(crate) v1: Vec<(String, PathBuf)>,
}

impl MachineCgroup {
    /// The directories of the machine whose cgroup leaf is `leaf`: below `rmach/` in each
    /// hierarchy, or below `v2_parent` (a delegated cgroup) in the v2 one.
    pub(crate) fn of(leaf: &str, v2_parent: Option<&Path>) -> MachineCgroup {
        let root = Path::new(ROOT);
        let v2_parent = v2_parent.unwrap_or(Path::new("rmach"));
        if root.join("cgroup.controllers").exists() {
            return MachineCgroup {
                v2: root.join(v2_parent).join(leaf),
                v1: Vec::new(),
            };
        }
        let v1 = ["memory", "pids", "cpu", "devices"]
            .iter()
            .map(|c| (c.to_string(), root.join(c).join("rmach").join(leaf)))
            .filter(|(_, d)| d.is_dir())
            .collect();
        MachineCgroup {
            v2: root.join("unified").join(v2_parent).join(leaf),
            v1,
        }
    }

    fn controller(&self, name: &str) -> Option<&Path> {
        self.v1.iter().find(|c| c.0 == name).map(|c| c.1.as_path())
    }

    fn read_u64(path: &Path) -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Memory in use, in bytes.
    pub(crate) fn memory_bytes(&self) -> Option<u64> {
        match self.controller("memory") {
            Some(d) => Self::read_u64(&d.join("memory.usage_in_bytes")),
            None => Self::read_u64(&self.v2.join("memory.current")),
        }
    }

    /// CPU time used, in nanoseconds (cpu.stat is kept by every v2 cgroup).
    pub(crate) fn cpu_nanos(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.v2.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse::<u64>()
            .ok()
            .map(|us| us * 1000)
    }

    pub(crate) fn tasks(&self) -> Option<u64> {
        let d = self.controller("pids").unwrap_or(&self.v2);
        Self::read_u64(&d.join("pids.current")).or_else(|| {
            std::fs::read_to_string(self.v2.join("cgroup.procs"))
                .ok()
                .map(|s| s.lines().count() as u64)
        })
    }

    /// Writes the limits that are set (others stay as they are), at once.
    pub(crate) fn set_limits(&self, limits: &Limits) -> Result<()> {
        let write = |path: PathBuf, value: String| std::fs::write(&path, value).at(path);
        if let Some(m) = limits.memory_max {
            match self.controller("memory") {
                Some(d) => write(d.join("memory.limit_in_bytes"), m.to_string())?,
                None => write(self.v2.join("memory.max"), m.to_string())?,
            }
        }
        if let Some(p) = limits.pids_max {
            let d = self.controller("pids").unwrap_or(&self.v2);
            write(d.join("pids.max"), p.to_string())?;
        }
        if let Some(c) = limits.cpus {
            let quota = ((c * 100_000.0) as u64).max(1000);
            match self.controller("cpu") {
                Some(d) => {
                    write(d.join("cpu.cfs_period_us"), "100000".into())?;
                    write(d.join("cpu.cfs_quota_us"), quota.to_string())?;
                }
                None => write(self.v2.join("cpu.max"), format!("{quota} 100000"))?,
            }
        }
        Ok(())
    }

    /// The v2 file that freezes and thaws the machine.
    pub(crate) fn freeze_file(&self) -> PathBuf {
        self.v2.join("cgroup.freeze")
    }

    /// Freezes (or thaws) every process of the machine and waits until the kernel says so.
    pub(crate) fn freeze(&self, frozen: bool) -> Result<()> {
        let file = self.freeze_file();
        std::fs::write(&file, if frozen { "1" } else { "0" }).at(&file)?;
        let events = self.v2.join("cgroup.events");
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&events).at(&events)?;
            if text.lines().any(|l| l == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::from(std::io::ErrorKind::TimedOut)).at(events);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills every process left in the machine's cgroup (`cgroup.kill`, or SIGKILL to each
    /// where the kernel has no cgroup.kill) and waits until it is empty.
    pub(crate) fn kill_all(&self) {
        if std::fs::write(self.v2.join("cgroup.kill"), "1").is_err() {
            for pid in procs_below(&self.v2) {
                let _ = crate::sys::process::kill(pid, libc::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !procs_below(&self.v2).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the machine's (empty) cgroups, deepest first, retrying while the kernel still
    /// frees the last processes; a cgroup with live processes stays.
    pub(crate) fn remove(&self) {
        let dirs = self.v1.iter().map(|c| c.1.clone()).chain([self.v2.clone()]);
        for d in dirs {
            for _ in 0..100 {
                if remove_tree(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Moves this process into the machine's cgroups. In v2 the machine's own root may hold
    /// no processes once its init enabled controllers below it; `fallback` (the leader's
    /// cgroup) is used then.
    pub(crate) fn join(&self, fallback: Option<PathBuf>) -> Result<()> {
        let me = std::process::id().to_string();
        for (_, d) in &self.v1 {
            let f = d.join("cgroup.procs");
            std::fs::write(&f, &me).at(f)?;
        }
        let f = self.v2.join("cgroup.procs");
        match std::fs::write(&f, &me) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => match fallback {
                Some(d) => std::fs::write(d.join("cgroup.procs"), &me).at(d),
                None => Err(e).at(f),
            },
            r => r.at(f),
        }
    }
}

/// The root of the v2 hierarchy: the unified one on a hybrid host.
fn v2_root() -> PathBuf {
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        PathBuf::from(ROOT)
    } else {
        Path::new(ROOT).join("unified")
    }
}

/// A process's v2 cgroup, relative to the hierarchy's root.
fn v2_path_of(pid: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from(rel.trim_start_matches('/')))
}

/// The v2 cgroup directory a process is in.
pub(crate) fn v2_dir_of(pid: u32) -> Option<PathBuf> {
    Some(v2_root().join(v2_path_of(&pid.to_string())?))
}

/// Where the cgroup of whoever delegated one to us is left to this process, as
/// systemd-nspawn@.service's is to nspawn: the cgroup this process is in (relative to the v2
/// root) when its manager delegated it (systemd marks a `Delegate=yes` unit's cgroup with the
/// `trusted.delegate` or `user.delegate` attribute). This process moves into `supervisor`
/// below it, since a cgroup that hands controllers to children may hold no processes itself;
/// the machine's cgroup is to go beside it. None, and nothing moved, outside such a cgroup or
/// when other processes share it.
pub(crate) fn enter_delegated() -> Result<Option<PathBuf>> {
    let Some(rel) = v2_path_of("self").filter(|r| !r.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let dir = v2_root().join(&rel);
    let delegated = ["trusted.delegate", "user.delegate"].iter().any(|attr| {
        let mut value = [0u8; 8];
        rustix::fs::getxattr(&dir, *attr, &mut value).is_ok_and(|n| &value[..n] == b"1")
    });
    // Only a supervisor alone there (the unit's main process) takes it over: a parent left
    // in it (`rmach start` run from a unit's script) would keep controllers from children.
    let me = std::process::id().to_string();
    let alone = std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.lines().all(|p| p.trim() == me));
    if !delegated || !alone {
        return Ok(None);
    }
    let own = dir.join("supervisor");
    match std::fs::create_dir(&own) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e).at(own),
        _ => {}
    }
    let procs = own.join("cgroup.procs");
    std::fs::write(&procs, &me).at(procs)?;
    Ok(Some(rel))
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

fn procs_below(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(procs_below(&e.path()));
        }
    }
    out
}
