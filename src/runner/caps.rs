//! Capability names and the default bounding set, which follows systemd-nspawn's.

use super::RunnerError;

/// Every capability the kernel knew about when this was written, by number.
pub(crate) const NAMES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// systemd-nspawn's default: everything a full OS needs inside, nothing that reaches the host
/// kernel (no sys_module, sys_rawio, sys_time, sys_pacct, mac_*, syslog, wake_alarm, bpf, ...).
const DEFAULT: &[&str] = &[
    "audit_control",
    "audit_write",
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "ipc_owner",
    "kill",
    "lease",
    "linux_immutable",
    "mknod",
    "net_bind_service",
    "net_broadcast",
    "net_raw",
    "setfcap",
    "setgid",
    "setpcap",
    "setuid",
    "sys_admin",
    "sys_boot",
    "sys_chroot",
    "sys_nice",
    "sys_ptrace",
    "sys_resource",
    "sys_tty_config",
];

/// Looks a capability up by `CAP_NAME`, `name` or number.
pub(crate) fn number(name: &str) -> Result<u32, RunnerError> {
    let lower = name.to_ascii_lowercase();
    let short = lower.strip_prefix("cap_").unwrap_or(&lower);
    if let Some(i) = NAMES.iter().position(|n| *n == short) {
        return Ok(i as u32);
    }
    short
        .parse::<u32>()
        .ok()
        .filter(|n| (*n as usize) < NAMES.len())
        .ok_or_else(|| RunnerError::BadCapability { name: name.into() })
}

/// The bounding set as a bit mask: the default, plus net_admin with a private network, plus
/// `add`, minus `drop` (`all` is accepted in both).
pub(crate) fn bounding_set(
    add: &[String],
    drop: &[String],
    private_net: bool,
) -> Result<u64, RunnerError> {
    let mut set = 0u64;
    for n in DEFAULT {
        set |= 1 << number(n)?;
    }
    if private_net {
        set |= 1 << number("net_admin")?;
    }
    let all = (1u64 << NAMES.len()) - 1;
    for a in add {
        set |= if a.eq_ignore_ascii_case("all") {
            all
        } else {
            1 << number(a)?
        };
    }
    for d in drop {
        set &= if d.eq_ignore_ascii_case("all") {
            0
        } else {
            !(1 << number(d)?)
        };
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_matches_nspawn() {
        let set = bounding_set(&[], &[], false).unwrap();
        for denied in [
            "sys_module",
            "sys_rawio",
            "sys_time",
            "mac_admin",
            "net_admin",
            "bpf",
        ] {
            assert_eq!(set & (1 << number(denied).unwrap()), 0, "{denied}");
        }
        for kept in ["sys_admin", "sys_boot", "chown", "mknod"] {
            assert_ne!(set & (1 << number(kept).unwrap()), 0, "{kept}");
        }
        assert_eq!(set.count_ones(), 26);
        let net = bounding_set(&[], &[], true).unwrap();
        assert_ne!(net & (1 << 12), 0);
    }

    #[test]
    fn add_and_drop() {
        let set = bounding_set(&["CAP_SYS_TIME".into()], &["mknod".into()], false).unwrap();
        assert_ne!(set & (1 << 25), 0);
        assert_eq!(set & (1 << 27), 0);
        assert_eq!(bounding_set(&[], &["all".into()], false).unwrap(), 0);
        assert!(number("cap_nonsense").is_err());
        assert_eq!(number("CAP_NET_ADMIN").unwrap(), 12);
    }
}
