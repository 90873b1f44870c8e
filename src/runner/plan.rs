//! The plan: a run specification turned into plain data (namespaces, an ordered mount table,
//! cgroup settings, capabilities, environment) that tests can inspect and one executor runs.

use std::path::{Path, PathBuf};

use super::spec::{Bind, Console, Limits, Network, PrivateUsers, RunSpec};
use super::{caps, RunnerError};

/// What is mounted at one place inside the machine. Targets are paths inside the new root;
/// they are resolved with `RESOLVE_IN_ROOT`, so a symlink in the image cannot point them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A fresh file system of this type with these options (`tmpfs`, `proc`, `sysfs`, ...).
    Fs { fstype: &'static str, data: String },
    /// A path of the host, bound before the root is pivoted.
    BindHost { source: PathBuf, recursive: bool },
    /// A path inside the machine bound over itself (to change its flags).
    BindSelf,
    /// The machine's /dev/null bound over the target, hiding it.
    Mask,
    /// A symlink created at the target.
    Symlink { to: PathBuf },
    /// A regular file written at the target.
    File { contents: Vec<u8> },
    /// The pty that is the machine's console, bound over /dev/console.
    Console,
}

/// One row of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: PathBuf,
    pub kind: MountKind,
    pub read_only: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    /// Skip without error when the target (or host source) does not exist.
    pub optional: bool,
}

/// A user namespace's single-extent id map: inside 0..count is outside base..base+count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub base: u32,
    pub count: u32,
}

/// How the root is prepared before the table is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMode {
    /// The directory bound onto itself.
    Bind,
    /// An overlay: the directory as the lower layer, a tmpfs as the upper.
    Ephemeral,
}

/// Everything the executor does, decided in advance.
#[derive(Debug, Clone)]
pub struct Plan {
    pub root: PathBuf,
    pub root_mode: RootMode,
    pub root_read_only: bool,
    pub name: String,
    pub hostname: String,
    /// Mount, PID, UTS, IPC and cgroup namespaces are always new; these are the optional ones.
    pub network: Network,
    pub user_ns: Option<PrivateUsers>,
    pub mounts: Vec<MountEntry>,
    pub limits: Limits,
    /// Rules for the cgroup v1 device controller, in `devices.allow` syntax.
    pub device_allow: Vec<&'static str>,
    pub bounding_caps: u64,
    pub no_new_privs: bool,
    pub seccomp: bool,
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
    pub user: Option<String>,
    pub chdir: Option<PathBuf>,
    pub console: Console,
    pub boot: bool,
    pub uuid: String,
    pub scratch: PathBuf,
}

/// Host devices bound into the private /dev (by name under /dev).
pub const DEVICES: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "net/tun",
];

/// The v1 device controller's allow list: the nodes above, ptys, and mknod of anything
/// (creating a node is harmless when opening it is refused).
pub const DEVICE_ALLOW: &[&str] = &[
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
    "c *:* m",
    "b *:* m",
];

/// /proc files that reveal or change host kernel state, hidden behind /dev/null.
const PROC_MASKED: &[&str] = &["kcore", "keys", "timer_list", "kallsyms", "sysrq-trigger"];
/// /proc directories that are host-wide, made read-only.
const PROC_READ_ONLY: &[&str] = &["sys", "bus", "fs", "irq", "acpi", "scsi", "asound"];

fn entry(target: &str, kind: MountKind) -> MountEntry {
    MountEntry {
        target: PathBuf::from(target),
        kind,
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: false,
        optional: false,
    }
}

fn fs(target: &str, fstype: &'static str, data: &str) -> MountEntry {
    entry(
        target,
        MountKind::Fs {
            fstype,
            data: data.into(),
        },
    )
}

/// Builds the plan. Fails on bad names in the spec, never touches the system except to read
/// the host's os-release.
pub fn plan(spec: &RunSpec) -> Result<Plan, RunnerError> {
    let private_net = spec.network != Network::Host;
    let bounding_caps = caps::bounding_set(&spec.add_caps, &spec.drop_caps, private_net)?;
    let uuid = new_uuid();
    Ok(Plan {
        root: spec.root.clone(),
        root_mode: if spec.ephemeral {
            RootMode::Ephemeral
        } else {
            RootMode::Bind
        },
        root_read_only: spec.read_only,
        name: spec.name.clone(),
        hostname: hostname(spec),
        network: spec.network,
        user_ns: (spec.private_users != PrivateUsers::No).then_some(spec.private_users),
        mounts: mount_table(spec, &uuid),
        limits: spec.limits,
        device_allow: DEVICE_ALLOW.to_vec(),
        bounding_caps,
        no_new_privs: spec.no_new_privileges,
        seccomp: true,
        env: environment(spec, &uuid),
        command: spec.command.clone(),
        user: spec.user.clone(),
        chdir: spec.chdir.clone(),
        console: spec.console,
        boot: spec.boot,
        uuid,
        scratch: spec.scratch.clone(),
    })
}

/// `--hostname`, or the machine's name cut to the kernel's 64-byte limit.
fn hostname(spec: &RunSpec) -> String {
    let mut h = spec.hostname.clone().unwrap_or_else(|| spec.name.clone());
    while h.len() > 64 {
        h.pop();
    }
    h
}

fn mount_table(spec: &RunSpec, uuid: &str) -> Vec<MountEntry> {
    let mut t = Vec::new();
    let mut dev = fs("/dev", "tmpfs", "mode=755,size=4m,nr_inodes=64k");
    dev.nodev = false;
    t.push(dev);
    for d in DEVICES {
        let mut e = entry(
            &format!("/dev/{d}"),
            MountKind::BindHost {
                source: Path::new("/dev").join(d),
                recursive: false,
            },
        );
        e.nodev = false;
        e.optional = d.contains('/');
        t.push(e);
    }
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        t.push(entry(link, MountKind::Symlink { to: to.into() }));
    }
    let mut pts = fs(
        "/dev/pts",
        "devpts",
        "newinstance,ptmxmode=0666,mode=620,gid=5",
    );
    pts.noexec = true;
    pts.nodev = false;
    t.push(pts);
    t.push(fs("/dev/shm", "tmpfs", "mode=1777,size=50%"));
    let mut mq = fs("/dev/mqueue", "mqueue", "");
    mq.noexec = true;
    t.push(mq);
    if spec.console.has_pty() {
        let mut c = entry("/dev/console", MountKind::Console);
        c.nodev = false;
        t.push(c);
    }
    let mut proc_ = fs("/proc", "proc", "");
    proc_.noexec = true;
    t.push(proc_);
    for d in PROC_READ_ONLY {
        let mut e = entry(&format!("/proc/{d}"), MountKind::BindSelf);
        e.read_only = true;
        e.optional = *d != "sys";
        t.push(e);
    }
    if spec.network != Network::Host {
        // The machine's own network stack is its to configure.
        t.push(entry("/proc/sys/net", MountKind::BindSelf));
    }
    for f in PROC_MASKED {
        let mut e = entry(&format!("/proc/{f}"), MountKind::Mask);
        e.read_only = true;
        e.optional = true;
        t.push(e);
    }
    let mut sys = if spec.network == Network::Host && spec.private_users != PrivateUsers::No {
        // A new sysfs needs a network namespace owned by the user namespace; bind the host's.
        entry(
            "/sys",
            MountKind::BindHost {
                source: "/sys".into(),
                recursive: true,
            },
        )
    } else {
        fs("/sys", "sysfs", "")
    };
    sys.read_only = true;
    sys.noexec = true;
    t.push(sys);
    let mut cg = fs("/sys/fs/cgroup", "cgroup2", "");
    cg.noexec = true;
    t.push(cg);
    t.push(fs("/run", "tmpfs", "mode=755,size=20%,nr_inodes=800k"));
    t.push(fs("/tmp", "tmpfs", "mode=1777,size=50%"));
    let os_release = std::fs::read("/etc/os-release")
        .or_else(|_| std::fs::read("/usr/lib/os-release"))
        .unwrap_or_default();
    for (path, contents) in [
        ("/run/host/os-release", os_release),
        ("/run/host/container-manager", b"rmach\n".to_vec()),
        ("/run/host/container-uuid", format!("{uuid}\n").into_bytes()),
    ] {
        t.push(entry(path, MountKind::File { contents }));
    }
    for Bind {
        source,
        target,
        read_only,
    } in &spec.binds
    {
        let mut e = entry(
            &target.to_string_lossy(),
            MountKind::BindHost {
                source: source.clone(),
                recursive: true,
            },
        );
        e.read_only = *read_only;
        e.nosuid = false;
        e.nodev = false;
        t.push(e);
    }
    for p in &spec.tmpfs {
        let mut e = fs(&p.to_string_lossy(), "tmpfs", "mode=755");
        e.nosuid = false;
        t.push(e);
    }
    t
}

fn environment(spec: &RunSpec, uuid: &str) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("container".into(), "rmach".into()),
        ("container_uuid".into(), uuid.into()),
    ];
    if spec.console.has_pty() {
        let term = std::env::var("TERM").unwrap_or_else(|_| "vt220".into());
        env.push(("TERM".into(), term));
    }
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// A random version 4 UUID (systemd's container interface wants one per run).
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(p: &'a Plan, t: &str) -> Option<&'a MountEntry> {
        p.mounts.iter().find(|m| m.target == Path::new(t))
    }

    #[test]
    fn table_like_nspawn() {
        let p = plan(&RunSpec::new("/srv/dev", vec!["true".into()])).unwrap();
        assert_eq!(p.hostname, "dev");
        let idx = |t: &str| {
            p.mounts
                .iter()
                .position(|m| m.target == Path::new(t))
                .unwrap()
        };
        // /dev first (masks need its null), /proc before what is bound over /proc.
        assert!(idx("/dev") < idx("/dev/null") && idx("/dev/null") < idx("/proc/kcore"));
        assert!(idx("/proc") < idx("/proc/sys") && idx("/sys") < idx("/sys/fs/cgroup"));
        assert!(find(&p, "/proc/sys").unwrap().read_only);
        assert_eq!(find(&p, "/proc/kcore").unwrap().kind, MountKind::Mask);
        assert!(find(&p, "/sys").unwrap().read_only);
        assert!(find(&p, "/proc/sys/net").is_none());
        assert!(find(&p, "/dev/console").is_none(), "pipes have no console");
        let pts = find(&p, "/dev/pts").unwrap();
        assert!(matches!(&pts.kind, MountKind::Fs { data, .. } if data.contains("newinstance")));
        assert!(find(&p, "/run/host/os-release").is_some());
        assert!(p.env.contains(&("container".into(), "rmach".into())));
        assert_eq!(p.uuid.len(), 36);
        assert!(p.seccomp && !p.no_new_privs && p.user_ns.is_none());
    }

    #[test]
    fn options_change_the_table() {
        let mut s = RunSpec::new("/srv/dev", vec![]);
        s.network = Network::Private;
        s.console = Console::Interactive;
        s.binds.push(Bind::parse("/home:/mnt/h", true).unwrap());
        s.tmpfs.push("/var/tmp".into());
        s.private_users = PrivateUsers::Pick;
        s.ephemeral = true;
        s.env.push(("PATH".into(), "/bin".into()));
        let p = plan(&s).unwrap();
        assert!(find(&p, "/proc/sys/net").is_some());
        assert_eq!(find(&p, "/dev/console").unwrap().kind, MountKind::Console);
        let b = find(&p, "/mnt/h").unwrap();
        assert!(
            b.read_only
                && matches!(&b.kind, MountKind::BindHost { source, .. } if source == Path::new("/home"))
        );
        assert!(find(&p, "/var/tmp").is_some());
        assert!(matches!(
            find(&p, "/sys").unwrap().kind,
            MountKind::Fs { .. }
        ));
        assert_eq!(p.root_mode, RootMode::Ephemeral);
        assert_eq!(p.env.iter().filter(|e| e.0 == "PATH").count(), 1);
        assert_ne!(
            p.bounding_caps & (1 << 12),
            0,
            "net_admin with a private network"
        );
    }
}
