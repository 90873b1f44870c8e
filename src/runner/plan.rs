//! The plan: a run specification turned into plain data (namespaces, an ordered mount table,
//! cgroup settings, capabilities, environment) that tests can inspect and one executor runs.

use std::path::{Path, PathBuf};

use super::spec::{Bind, Console, Limits, Network, PrivateUsers, RunSpec};
use super::{caps, RunnerError};
use crate::sys::ns::Namespaces;

/// What is mounted at one place inside the machine. Targets are paths inside the new root;
/// they are resolved with `RESOLVE_IN_ROOT`, so a symlink in the image cannot point them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountKind {
    /// A fresh file system of this type with these options (`tmpfs`, `proc`, `sysfs`, ...).
    Fs { fstype: &'static str, data: String },
    /// A path of the host, bound before the root is pivoted.
    BindHost { source: PathBuf, recursive: bool },
    /// A path inside the machine bound over itself (to change its flags).
    BindSelf,
    /// The mount already at the target gets the entry's flags (a remount of that mount only);
    /// skipped when something else now covers the target.
    Remount,
    /// The machine's /dev/null bound over the target, hiding it.
    Mask,
    /// A symlink created at the target.
    Symlink { to: PathBuf },
    /// A regular file written at the target.
    File { contents: Vec<u8> },
    /// The pty that is the machine's console, bound over /dev/console.
    Console,
    /// A character device node created with mknod (mode 0666), the machine's own inode.
    Node { major: u32, minor: u32 },
}

/// Who carries an entry out, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// rmach's helper, in the machine's mount namespace before the machine's own copy of it is
    /// made, with host root's rights over host paths (a 0700 store, `--bind` sources). The
    /// kernel locks these mounts' flags in a user namespace's copy: read-only stays read-only.
    Host,
    /// The same, after the helper has pivoted into the machine's root, from a process in the
    /// machine's PID (and network) namespace: /proc and /sys, whose read-only parts are locked
    /// the same way.
    Kernel,
    /// The machine itself, in its own mount namespace: file systems of its namespaces
    /// (devpts, mqueue, cgroup2) and its tmpfs mounts.
    Inner,
}

/// One row of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) target: PathBuf,
    pub(crate) kind: MountKind,
    pub(crate) read_only: bool,
    pub(crate) nosuid: bool,
    pub(crate) nodev: bool,
    pub(crate) noexec: bool,
    /// Skip without error when the target (or host source) does not exist.
    pub(crate) optional: bool,
    pub(crate) stage: Stage,
    /// A `--bind`/`--tmpfs` of the user: its mount point is never created in a read-only root.
    pub(crate) from_user: bool,
}

/// A user namespace's single-extent id map: inside 0..count is outside base..base+count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdMap {
    pub(crate) base: u32,
    pub(crate) count: u32,
}

/// How the root is prepared before the table is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootMode {
    /// The directory bound onto itself.
    Bind,
    /// An overlay: the directory as the lower layer, a tmpfs as the upper.
    Ephemeral,
}

/// Everything the executor does, decided in advance.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) root: PathBuf,
    pub(crate) root_mode: RootMode,
    pub(crate) root_read_only: bool,
    pub(crate) hostname: String,
    /// The namespaces the machine is cloned into: PID, UTS and IPC always, network unless
    /// `--network host`, user with an id map. (Its mount namespace is the helper's, or a copy
    /// the machine makes in its user namespace; its cgroup namespace it makes itself once in
    /// its cgroup.)
    pub(crate) namespaces: Namespaces,
    /// The user namespace's id map (None: no user namespace), resolved from `--private-users`.
    pub(crate) id_map: Option<IdMap>,
    /// The root is attached through an idmapped mount (a user namespace that shifts ids).
    pub(crate) idmapped_root: bool,
    /// What `--private-users auto` chose and why, in words (None for the other modes).
    pub(crate) private_users_note: Option<String>,
    pub(crate) mounts: Vec<MountEntry>,
    pub(crate) limits: Limits,
    /// Rules for the cgroup v1 device controller, in `devices.allow` syntax.
    pub(crate) device_allow: Vec<&'static str>,
    /// Refuse a host without a device controller.
    pub(crate) device_policy: bool,
    /// The machine's cgroup, `rmach/NAME-PID` in each hierarchy (the PID is rmach's).
    pub(crate) cgroup: PathBuf,
    /// In the v2 hierarchy, the delegated cgroup the machine's goes below instead of `rmach/`.
    pub(crate) cgroup_parent: Option<PathBuf>,
    /// The host end of the veth pair (with `--network veth`).
    pub(crate) veth: Option<String>,
    pub(crate) bounding_caps: u64,
    pub(crate) no_new_privs: bool,
    /// The seccomp programs the machine runs under, compiled for its capability set.
    pub(crate) seccomp: super::seccomp::SeccompProgram,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) command: Vec<String>,
    pub(crate) user: Option<String>,
    pub(crate) chdir: Option<PathBuf>,
    pub(crate) console: Console,
    pub(crate) boot: bool,
    /// The per-run scratch directory on the host (the ephemeral overlay's layers), removed
    /// when the run ends: `.rmach-PID-UUID` in the spec's scratch directory (`--state-dir`).
    pub(crate) scratch_dir: Option<PathBuf>,
}

/// Device nodes created in the private /dev: name under /dev, major, minor.
pub(crate) const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
    ("net/tun", 10, 200),
];

/// The v1 device controller's allow list: the nodes above, ptys, and mknod of anything
/// (creating a node is harmless when opening it is refused).
pub(crate) const DEVICE_ALLOW: &[&str] = &[
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
        stage: Stage::Inner,
        from_user: false,
    }
}

fn host(mut e: MountEntry) -> MountEntry {
    e.stage = Stage::Host;
    e
}

fn kernel(mut e: MountEntry) -> MountEntry {
    e.stage = Stage::Kernel;
    e
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
    let (private_users, private_users_note) = match spec.private_users {
        PrivateUsers::Auto => {
            let (ok, why) = super::userns::idmap_support(&spec.root);
            if ok {
                (
                    PrivateUsers::Pick,
                    Some(format!("a private user range ({why})")),
                )
            } else {
                (PrivateUsers::No, Some(format!("no user namespace ({why})")))
            }
        }
        p => (p, None),
    };
    let id_map = match private_users {
        PrivateUsers::No | PrivateUsers::Auto => None,
        p => Some(super::userns::pick(p, &spec.root)?),
    };
    let mut namespaces = Namespaces::NEWPID | Namespaces::NEWUTS | Namespaces::NEWIPC;
    if private_net {
        namespaces |= Namespaces::NEWNET;
    }
    if id_map.is_some() {
        namespaces |= Namespaces::NEWUSER;
    }
    let rmach = std::process::id();
    Ok(Plan {
        root: spec.root.clone(),
        root_mode: if spec.ephemeral {
            RootMode::Ephemeral
        } else {
            RootMode::Bind
        },
        root_read_only: spec.read_only,
        hostname: hostname(spec),
        namespaces,
        id_map,
        idmapped_root: id_map.is_some_and(|m| m.base != 0),
        private_users_note,
        mounts: mount_table(spec, &uuid),
        limits: spec.limits,
        device_allow: DEVICE_ALLOW.to_vec(),
        device_policy: spec.device_policy,
        cgroup: Path::new(super::cgroup::PARENT).join(format!("{}-{rmach}", spec.name)),
        cgroup_parent: spec.cgroup_parent.clone(),
        veth: (spec.network == Network::Veth).then(|| veth_name(&spec.name)),
        bounding_caps,
        no_new_privs: spec.no_new_privileges,
        seccomp: super::seccomp::compile_cached(bounding_caps, spec.seccomp_cache.as_deref())?,
        env: environment(spec, &uuid),
        command: spec.command.clone(),
        user: spec.user.clone(),
        chdir: spec.chdir.clone(),
        console: spec.console,
        boot: spec.boot,
        scratch_dir: spec
            .ephemeral
            .then(|| spec.scratch.join(format!(".rmach-{rmach}-{uuid}"))),
    })
}

/// `ve-` and as much of the name as fits in an interface name (15 bytes).
pub(crate) fn veth_name(name: &str) -> String {
    let mut n: String = format!("ve-{name}");
    n.truncate(15);
    n
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
    let mut dev = host(fs("/dev", "tmpfs", "mode=755,size=4m,nr_inodes=64k"));
    dev.nodev = false;
    t.push(dev);
    for (name, major, minor) in DEVICES {
        let mut e = host(entry(
            &format!("/dev/{name}"),
            MountKind::Node {
                major: *major,
                minor: *minor,
            },
        ));
        e.nodev = false;
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
        let mut c = host(entry("/dev/console", MountKind::Console));
        c.nodev = false;
        t.push(c);
    }
    let mut proc_ = kernel(fs("/proc", "proc", ""));
    proc_.noexec = true;
    t.push(proc_);
    for d in PROC_READ_ONLY {
        let mut e = kernel(entry(&format!("/proc/{d}"), MountKind::BindSelf));
        e.read_only = true;
        e.optional = *d != "sys";
        t.push(e);
    }
    if spec.network != Network::Host {
        // The machine's own network stack is its to configure.
        t.push(kernel(entry("/proc/sys/net", MountKind::BindSelf)));
    }
    for f in PROC_MASKED {
        let mut e = kernel(entry(&format!("/proc/{f}"), MountKind::Mask));
        e.read_only = true;
        e.optional = true;
        t.push(e);
    }
    // Mounted by the helper in the machine's network namespace: a sysfs of its own network.
    let mut sys = kernel(fs("/sys", "sysfs", ""));
    sys.read_only = true;
    sys.noexec = true;
    t.push(sys);
    let mut cg = fs("/sys/fs/cgroup", "cgroup2", "");
    cg.noexec = true;
    t.push(cg);
    // Mounted with the binds (host stage), before them: a later tmpfs would hide a user's
    // bind below /run or /tmp (and the supervisor's /run/host/notify).
    t.push(host(fs(
        "/run",
        "tmpfs",
        "mode=755,size=20%,nr_inodes=800k",
    )));
    t.push(host(fs("/tmp", "tmpfs", "mode=1777,size=50%")));
    // What the machine is told about its host, on a small tmpfs of its own (as nspawn's): a
    // user's bind over /run (the bootstrap's second stage) neither receives nor hides it.
    t.push(host(fs(
        "/run/host",
        "tmpfs",
        "mode=755,size=1m,nr_inodes=64",
    )));
    let os_release = std::fs::read("/etc/os-release")
        .or_else(|_| std::fs::read("/usr/lib/os-release"))
        .unwrap_or_default();
    for (path, contents) in [
        ("/run/host/os-release", os_release),
        ("/run/host/container-manager", b"rmach\n".to_vec()),
        ("/run/host/container-uuid", format!("{uuid}\n").into_bytes()),
    ] {
        t.push(host(entry(path, MountKind::File { contents })));
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
        e.from_user = true;
        t.push(host(e));
    }
    for p in &spec.tmpfs {
        let mut e = fs(&p.to_string_lossy(), "tmpfs", "mode=755");
        e.nosuid = false;
        e.from_user = true;
        t.push(host(e));
    }
    // Read-only once the binds below it (the supervisor's /run/host/notify) have their
    // mount points; locked, as a host-stage mount.
    let mut host_ro = host(entry("/run/host", MountKind::Remount));
    host_ro.read_only = true;
    t.push(host_ro);
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
    use std::path::Path;

    fn find<'a>(p: &'a Plan, t: &str) -> Option<&'a MountEntry> {
        p.mounts.iter().find(|m| m.target == Path::new(t))
    }

    /// The run's UUID, as the machine is told it.
    fn run_uuid(p: &Plan) -> &str {
        &p.env.iter().find(|e| e.0 == "container_uuid").unwrap().1
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
        assert_eq!(run_uuid(&p).len(), 36);
        assert!(p.seccomp.filters.len() == 2 && !p.no_new_privs && p.id_map.is_none());
        assert_eq!(
            p.namespaces,
            Namespaces::NEWPID | Namespaces::NEWUTS | Namespaces::NEWIPC,
            "host network, no user namespace"
        );
        assert!(!p.idmapped_root && p.scratch_dir.is_none() && p.veth.is_none());
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
        assert_eq!(
            b.stage,
            Stage::Host,
            "binds are made before the user namespace"
        );
        assert_eq!(p.root_mode, RootMode::Ephemeral);
        assert!(p
            .namespaces
            .contains(Namespaces::NEWNET | Namespaces::NEWUSER));
        assert!(p.idmapped_root, "pick shifts ids: the root is idmapped");
        let scratch = p.scratch_dir.as_deref().unwrap();
        assert!(scratch.starts_with("/run") && scratch.to_string_lossy().contains(run_uuid(&p)));
        assert_eq!(p.env.iter().filter(|e| e.0 == "PATH").count(), 1);
        assert_ne!(
            p.bounding_caps & (1 << 12),
            0,
            "net_admin with a private network"
        );
    }

    #[test]
    fn every_run_option_reaches_the_plan() {
        let mut s = RunSpec::new("/nonexistent/dev", vec!["echo".into(), "hi".into()]);
        s.name = "web".into();
        s.env.push(("A".into(), "b".into()));
        s.user = Some("user".into());
        s.chdir = Some("/srv".into());
        s.binds.push(Bind::parse("/a:/b", false).unwrap());
        s.tmpfs.push("/scratch".into());
        s.read_only = true;
        s.hostname = Some("h".into());
        s.network = Network::Veth;
        s.private_users = PrivateUsers::Range {
            base: 0x90000,
            count: 65536,
        };
        s.limits = Limits {
            memory_max: Some(1 << 30),
            cpus: Some(1.5),
            pids_max: Some(100),
        };
        s.add_caps.push("sys_time".into());
        s.drop_caps.push("mknod".into());
        s.no_new_privileges = true;
        s.console = Console::Interactive;
        s.boot = true;
        s.scratch = "/var/run/x".into();
        s.device_policy = false;
        let p = plan(&s).unwrap();
        assert_eq!(p.root, Path::new("/nonexistent/dev"));
        assert_eq!(p.command, ["echo", "hi"]);
        assert!(p.env.contains(&("A".into(), "b".into())));
        assert!(p.env.iter().any(|e| e.0 == "TERM"), "interactive: TERM");
        assert_eq!(p.user.as_deref(), Some("user"));
        assert_eq!(p.chdir.as_deref(), Some(Path::new("/srv")));
        let b = find(&p, "/b").unwrap();
        assert!(!b.read_only && b.from_user && b.stage == Stage::Host);
        let t = find(&p, "/scratch").unwrap();
        assert!(
            t.from_user
                && matches!(
                    &t.kind,
                    MountKind::Fs {
                        fstype: "tmpfs",
                        ..
                    }
                )
        );
        assert!(p.root_read_only && p.root_mode == RootMode::Bind);
        assert_eq!(p.hostname, "h");
        assert_eq!(
            (p.namespaces.contains(Namespaces::NEWNET), p.veth.as_deref()),
            (true, Some("ve-web"))
        );
        assert_eq!(
            p.id_map,
            Some(IdMap {
                base: 0x90000,
                count: 65536
            })
        );
        assert_eq!(p.limits, s.limits);
        assert_ne!(p.bounding_caps & (1 << 25), 0, "sys_time added");
        assert_eq!(p.bounding_caps & (1 << 27), 0, "mknod dropped");
        assert!(super::super::seccomp::allowed_names(p.bounding_caps).contains(&"settimeofday"));
        assert!(p.no_new_privs && p.boot && !p.device_policy);
        assert_eq!(p.console, Console::Interactive);
        assert!(find(&p, "/dev/console").is_some());
        assert!(p.scratch_dir.is_none(), "no overlay, no scratch directory");
        assert_eq!(
            p.cgroup,
            Path::new(&format!("rmach/web-{}", std::process::id()))
        );
        assert!(p.private_users_note.is_none());
        assert!(
            p.namespaces
                .contains(Namespaces::NEWNET | Namespaces::NEWUSER)
                && p.idmapped_root
        );
        s.private_users = PrivateUsers::Identity;
        s.ephemeral = true;
        let p = plan(&s).unwrap();
        assert_eq!(p.id_map.map(|m| m.base), Some(0));
        assert!(p.namespaces.contains(Namespaces::NEWUSER) && !p.idmapped_root);
        assert_eq!(p.root_mode, RootMode::Ephemeral);
        assert_eq!(
            p.scratch_dir.as_deref().and_then(Path::parent),
            Some(Path::new("/var/run/x")),
            "the overlay's scratch directory is under the spec's (--state-dir)"
        );
        // auto on a root whose file system cannot be told: no user namespace, and why.
        s.private_users = PrivateUsers::Auto;
        let p = plan(&s).unwrap();
        assert!(p.id_map.is_none() && !p.namespaces.contains(Namespaces::NEWUSER));
        assert!(p
            .private_users_note
            .as_deref()
            .unwrap()
            .starts_with("no user namespace"));
        let node = find(&p, "/dev/null").unwrap();
        assert_eq!(node.kind, MountKind::Node { major: 1, minor: 3 });
        assert_eq!(find(&p, "/proc").unwrap().stage, Stage::Kernel);
        assert_eq!(find(&p, "/dev/pts").unwrap().stage, Stage::Inner);
    }
}
