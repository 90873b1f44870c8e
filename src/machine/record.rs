//! The running-machine record: `STATE/machines/NAME.json`, written by the supervisor and read
//! by every other verb. A record names the supervisor and the machine's leader by PID *and*
//! start time (and the host's boot id), so a PID reused after `kill -9` or a reboot is never
//! taken for the machine: such a record is stale, and reading it removes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{IoAt, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) root: PathBuf,
    pub(crate) supervisor: u32,
    /// The supervisor's start time in clock ticks since boot (/proc/PID/stat field 22).
    pub(crate) supervisor_start: u64,
    pub(crate) boot_id: String,
    /// The machine's PID 1 on the host, once it exists (it changes on reboot).
    pub(crate) leader: Option<u32>,
    pub(crate) leader_start: Option<u64>,
    /// Seconds since the epoch when the current leader was seen first.
    pub(crate) since: u64,
    /// The image's init is systemd: ready means READY=1 arrived, not only exec.
    pub(crate) systemd: bool,
    pub(crate) ready: bool,
    /// The leaf of the machine's cgroup in every hierarchy: `NAME-SUPERVISORPID`.
    pub(crate) cgroup: String,
    /// Where that leaf is in the v2 hierarchy when not below `rmach/`: the cgroup systemd
    /// delegated to the supervisor (`rmach@.service`), relative to the hierarchy's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cgroup_parent: Option<PathBuf>,
    /// The veth's host side, when the machine has one.
    pub(crate) veth: Option<String>,
    /// The run options it was started with, as a settings document.
    pub(crate) settings: super::Settings,
}

pub(crate) fn dir(state: &Path) -> PathBuf {
    state.join("machines")
}

pub(crate) fn path(state: &Path, name: &str) -> PathBuf {
    dir(state).join(format!("{name}.json"))
}

/// Where the supervisor writes the machine's console.
pub(crate) fn console_log(state: &Path, name: &str) -> PathBuf {
    dir(state).join(format!("{name}.console"))
}

/// The socket the machine's init sends READY=1 to (bound into it as /run/host/notify).
pub(crate) fn notify_socket(state: &Path, name: &str) -> PathBuf {
    dir(state).join(format!("{name}.notify"))
}

/// A running process's start time in clock ticks since boot; None when it does not exist or
/// has ended (a zombie nobody reaped yet is not a running supervisor).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The first child of `pid`'s main thread.
pub(crate) fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's PID 1 under a supervisor: supervisor → namespace helper → leader.
pub(crate) fn find_leader(supervisor: u32) -> Option<u32> {
    first_child(first_child(supervisor)?)
}

/// The host PID of the leader (PID 1, the init) of the machine running from image `name`:
/// from a started machine's record, else below the `rmach run` or `boot` holding the image's
/// lock (`holder`: rmach → namespace helper → leader).
pub(crate) fn leader_of(state: &Path, name: &str, holder: Option<u32>) -> Option<u32> {
    match load(state, name) {
        Some(rec) => rec.live_leader(),
        None => find_leader(holder?),
    }
}

impl Record {
    /// Writes the record atomically (a reader sees the old or the new one).
    pub(crate) fn save(&self, state: &Path) -> Result<()> {
        let dir = dir(state);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let path = path(state, &self.name);
        let tmp = dir.join(format!(".{}.json.{}", self.name, std::process::id()));
        let text = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::from)
            .at(&tmp)?;
        std::fs::write(&tmp, text).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)
    }

    /// Whether the supervisor that wrote this record is still the same process.
    pub(crate) fn is_live(&self) -> bool {
        self.boot_id == boot_id() && start_time(self.supervisor) == Some(self.supervisor_start)
    }

    /// The current leader, checked against its recorded start time.
    pub(crate) fn live_leader(&self) -> Option<u32> {
        let pid = self.leader?;
        (start_time(pid) == self.leader_start && find_leader(self.supervisor) == Some(pid))
            .then_some(pid)
    }

    /// The machine's cgroup directories.
    pub(crate) fn machine_cgroup(&self) -> super::cgroup::MachineCgroup {
        super::cgroup::MachineCgroup::of(&self.cgroup, self.cgroup_parent.as_deref())
    }

    /// Seconds since the machine's current leader started.
    pub(crate) fn uptime(&self) -> u64 {
        now().saturating_sub(self.since)
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The live record of `name`; a stale one (its supervisor gone) is removed with its files.
pub(crate) fn load(state: &Path, name: &str) -> Option<Record> {
    let path = path(state, name);
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<Record>(&text) {
        Ok(r) if r.is_live() => Some(r),
        Ok(r) => {
            // Its supervisor was killed before it could clean up. The machine's init dies
            // with it (parent-death signal); whatever might still run there is killed, and
            // the cgroups are removed.
            let cg = r.machine_cgroup();
            cg.kill_all();
            cg.remove();
            remove(state, name);
            None
        }
        Err(_) => {
            remove(state, name);
            None
        }
    }
}

/// Removes a record and the files beside it.
pub(crate) fn remove(state: &Path, name: &str) {
    for p in [path(state, name), notify_socket(state, name)] {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_and_staleness() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        let state = tempfile::tempdir().unwrap();
        let mut r = Record {
            name: "m".into(),
            root: "/".into(),
            supervisor: me,
            supervisor_start: start_time(me).unwrap(),
            boot_id: boot_id(),
            leader: None,
            leader_start: None,
            since: now(),
            systemd: false,
            ready: false,
            cgroup: "m-1".into(),
            cgroup_parent: None,
            veth: None,
            settings: Default::default(),
        };
        r.save(state.path()).unwrap();
        assert_eq!(load(state.path(), "m").as_ref(), Some(&r));
        // The same PID with another start time is another process: the record is stale.
        r.supervisor_start += 1;
        r.save(state.path()).unwrap();
        assert!(load(state.path(), "m").is_none());
        assert!(!path(state.path(), "m").exists());
    }
}
