//! What a caller asks for: a root directory, a command, and how to isolate it.

use std::path::PathBuf;

/// How the machine's network is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network namespace.
    #[default]
    Host,
    /// A network namespace with only the loopback interface, brought up.
    Private,
    /// A private namespace plus a veth pair: `ve-NAME` on the host, `host0` inside (unconfigured).
    Veth,
}

/// Whether and how the machine gets a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivateUsers {
    /// No user namespace: root inside is root outside.
    #[default]
    No,
    /// `Pick` where the kernel and the root's file system support idmapped mounts, else `No`
    /// (the CLI's default for run and boot).
    Auto,
    /// A 65536-id range picked from the image's root directory owner or from a free slot.
    Pick,
    /// A user namespace mapping ids 0..65536 onto themselves.
    Identity,
    /// An explicit base and count.
    Range { base: u32, count: u32 },
}

/// Where the payload's standard input, output and error go (systemd-nspawn's `--console`;
/// docs/console.md says exactly which caller fds reach the machine in each mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Console {
    /// A pty as the machine's 0-2 and /dev/console, relayed both ways (raw mode on a terminal).
    Interactive,
    /// A pty as the machine's 0-2 and /dev/console; its output is relayed, input is not.
    ReadOnly,
    /// The caller's stdin, stdout and stderr, passed through unchanged.
    #[default]
    Pipe,
    /// A pty as the machine's 0-2 and /dev/console, connected to nothing (output discarded).
    Passive,
    /// stdin /dev/null, stdout and stderr collected and returned (library callers only).
    Capture,
}

impl Console {
    /// Whether the machine gets a pty as its console (and as fds 0-2).
    pub(crate) fn has_pty(self) -> bool {
        matches!(
            self,
            Console::Interactive | Console::ReadOnly | Console::Passive
        )
    }
}

/// A bind mount from the host into the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub(crate) source: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) read_only: bool,
}

impl Bind {
    /// Parses `SRC[:DST]` as `--bind` takes it; DST defaults to SRC.
    pub(crate) fn parse(arg: &str, read_only: bool) -> Result<Bind, super::RunnerError> {
        let (src, dst) = match arg.split_once(':') {
            Some((s, d)) => (s, d),
            None => (arg, arg),
        };
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(super::RunnerError::BadBind { arg: arg.into() });
        }
        Ok(Bind {
            source: src.into(),
            target: dst.into(),
            read_only,
        })
    }
}

/// Resource limits, applied through the machine's own cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub(crate) memory_max: Option<u64>,
    pub(crate) cpus: Option<f64>,
    pub(crate) pids_max: Option<u64>,
}

/// Everything needed to run one command in (or boot) a root directory.
///
/// Build one with [`RunSpec::new`] and adjust the public fields; [`super::run`] executes it.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The root directory of the machine (an image's path in the store, or any directory).
    pub(crate) root: PathBuf,
    /// The machine's name: hostname default, cgroup and veth names.
    pub(crate) name: String,
    /// The command and its arguments; empty means root's login shell (or init when booting).
    pub command: Vec<String>,
    /// Extra environment variables, over the defaults (PATH, HOME, container, ...).
    pub env: Vec<(String, String)>,
    /// User name or numeric uid to run as (resolved in the image's /etc/passwd).
    pub(crate) user: Option<String>,
    /// Working directory inside.
    pub(crate) chdir: Option<PathBuf>,
    pub(crate) binds: Vec<Bind>,
    pub(crate) tmpfs: Vec<PathBuf>,
    /// Run on an overlay whose upper layer is a tmpfs: changes vanish at exit.
    pub(crate) ephemeral: bool,
    pub(crate) read_only: bool,
    /// Hostname inside; defaults to `name`.
    pub(crate) hostname: Option<String>,
    pub(crate) network: Network,
    pub(crate) private_users: PrivateUsers,
    pub(crate) limits: Limits,
    /// Capabilities to keep beyond the default bounding set (names like `CAP_NET_ADMIN` or `net_admin`).
    pub(crate) add_caps: Vec<String>,
    /// Capabilities to drop from the default bounding set.
    pub(crate) drop_caps: Vec<String>,
    pub(crate) no_new_privileges: bool,
    pub console: Console,
    /// Run the image's init as PID 1 (boot) instead of a command under a small init.
    pub(crate) boot: bool,
    /// A directory on the host for per-run scratch mount points (removed at exit).
    pub(crate) scratch: PathBuf,
    /// Refuse to run where the host has no device controller (v1 `devices`); false runs
    /// without a device policy.
    pub(crate) device_policy: bool,
    /// A directory where compiled seccomp programs are kept between runs (None: compile each
    /// time).
    pub(crate) seccomp_cache: Option<PathBuf>,
    /// Where in the v2 hierarchy (relative to its root) the machine's cgroup goes instead of
    /// `rmach/`: a cgroup systemd delegated to the caller (a unit with `Delegate=yes`), so the
    /// unit's KillMode reaches the machine. v1 controller hierarchies keep `rmach/`.
    pub(crate) cgroup_parent: Option<PathBuf>,
}

impl RunSpec {
    /// A spec with nspawn-like defaults: no user namespace, host network, pipes as console.
    pub fn new(root: impl Into<PathBuf>, command: Vec<String>) -> RunSpec {
        let root = root.into();
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "machine".into());
        RunSpec {
            root,
            name,
            command,
            env: Vec::new(),
            user: None,
            chdir: None,
            binds: Vec::new(),
            tmpfs: Vec::new(),
            ephemeral: false,
            read_only: false,
            hostname: None,
            network: Network::Host,
            private_users: PrivateUsers::No,
            limits: Limits::default(),
            add_caps: Vec::new(),
            drop_caps: Vec::new(),
            no_new_privileges: false,
            console: Console::Pipe,
            boot: false,
            scratch: PathBuf::from("/run"),
            device_policy: true,
            seccomp_cache: None,
            cgroup_parent: None,
        }
    }
}

/// Parses a size like `512M`, `2G`, `1048576` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, super::RunnerError> {
    let bad = || super::RunnerError::BadSize { value: s.into() };
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some(c @ ('K' | 'k' | 'M' | 'm' | 'G' | 'g' | 'T' | 't')) => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => 1 << 40,
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

/// Parses `--private-users`: `auto`, `no`, `pick`, `identity`, `UID` or `UID:COUNT`.
pub fn parse_private_users(s: &str) -> Result<PrivateUsers, super::RunnerError> {
    let bad = || super::RunnerError::BadPrivateUsers { value: s.into() };
    Ok(match s {
        "auto" => PrivateUsers::Auto,
        "no" | "false" => PrivateUsers::No,
        "pick" | "yes" => PrivateUsers::Pick,
        "identity" => PrivateUsers::Identity,
        _ => {
            let (b, c) = s.split_once(':').unwrap_or((s, "65536"));
            let base: u32 = b.parse().map_err(|_| bad())?;
            let count: u32 = c.parse().map_err(|_| bad())?;
            if count == 0 || base.checked_add(count).is_none() {
                return Err(bad());
            }
            PrivateUsers::Range { base, count }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn binds_and_users() {
        let b = Bind::parse("/a:/b", true).unwrap();
        assert_eq!(
            (b.source.to_str(), b.target.to_str()),
            (Some("/a"), Some("/b"))
        );
        assert_eq!(
            Bind::parse("/a", false).unwrap().target.to_str(),
            Some("/a")
        );
        assert!(Bind::parse("rel", false).is_err());
        assert_eq!(parse_private_users("pick").unwrap(), PrivateUsers::Pick);
        assert_eq!(parse_private_users("auto").unwrap(), PrivateUsers::Auto);
        assert_eq!(
            parse_private_users("100000:65536").unwrap(),
            PrivateUsers::Range {
                base: 100000,
                count: 65536
            }
        );
        assert!(parse_private_users("4294967295:2").is_err());
    }
}
