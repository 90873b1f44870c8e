//! The seccomp filters, compiled with libseccomp from the allow list in `syscalls` for every
//! architecture whose system calls the kernel accepts (x86_64 with its i386 and x32 entry
//! points; aarch64 with 32-bit arm). The result is plain classic BPF the child installs with one
//! `prctl` each, so nothing of libseccomp runs in the forked child.
//!
//! Two programs, both inherited by everything the machine runs:
//! 1. the allow list: calls not in it fail with `EPERM`; other architectures are killed;
//! 2. refusals inside allowed calls: `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)` fail with `EPERM`,
//!    and audit netlink sockets with `EAFNOSUPPORT` (as nspawn: audit does not work in
//!    containers, and that errno tells audit userspace it is off).

use std::io::Read;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use super::syscalls::{GROUPS, REFUSED_IOCTLS};
use super::{caps, RunnerError};
use crate::sys::seccomp::Insn;

#[cfg(target_arch = "x86_64")]
const ARCHES: &[ScmpArch] = &[ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32];
#[cfg(target_arch = "aarch64")]
const ARCHES: &[ScmpArch] = &[ScmpArch::Aarch64, ScmpArch::Arm];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: &[ScmpArch] = &[ScmpArch::Native];

/// The compiled programs, in the order they are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProgram {
    pub(crate) filters: Vec<Vec<Insn>>,
}

fn fail(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> RunnerError {
    RunnerError::Seccomp {
        what: what.to_string(),
        source: e.into(),
    }
}

fn context(default: ScmpAction, bad_arch: ScmpAction) -> Result<ScmpFilterContext, RunnerError> {
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| fail("new filter", e))?;
    for arch in ARCHES {
        // The native architecture is already present; adding it again is refused.
        let _ = ctx.add_arch(*arch);
    }
    ctx.set_act_badarch(bad_arch)
        .and_then(|c| c.set_ctl_nnp(false))
        .map_err(|e| fail("filter attributes", e))?;
    Ok(ctx)
}

/// Names allowed with the capability bounding set `caps` (bit N: capability N).
pub(crate) fn allowed_names(bounding_caps: u64) -> Vec<&'static str> {
    let keeps = |name: &str| caps::number(name).is_ok_and(|n| bounding_caps & (1u64 << n) != 0);
    let mut names: Vec<&'static str> = GROUPS
        .iter()
        .filter(|g| g.capability.is_none_or(keeps))
        .flat_map(|g| g.calls.iter().copied())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn allow_list(bounding_caps: u64) -> Result<ScmpFilterContext, RunnerError> {
    let mut ctx = context(ScmpAction::Errno(libc::EPERM), ScmpAction::KillProcess)?;
    for name in allowed_names(bounding_caps) {
        // A name unknown to libseccomp, or to one architecture, is skipped (as nspawn does).
        if let Ok(call) = ScmpSyscall::from_name(name) {
            let _ = ctx.add_rule(ScmpAction::Allow, call);
        }
    }
    Ok(ctx)
}

fn refusals() -> Result<ScmpFilterContext, RunnerError> {
    let mut ctx = context(ScmpAction::Allow, ScmpAction::Allow)?;
    let ioctl = ScmpSyscall::from_name("ioctl").map_err(|e| fail("ioctl", e))?;
    for (name, request) in REFUSED_IOCTLS {
        // The kernel reads the request as a 32-bit int: compare only those bits.
        let cmp = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xffff_ffff), *request);
        ctx.add_rule_conditional(ScmpAction::Errno(libc::EPERM), ioctl, &[cmp])
            .map_err(|e| fail(name, e))?;
    }
    let socket = ScmpSyscall::from_name("socket").map_err(|e| fail("socket", e))?;
    let audit = [
        ScmpArgCompare::new(0, ScmpCompareOp::Equal, libc::AF_NETLINK as u64),
        ScmpArgCompare::new(2, ScmpCompareOp::Equal, libc::NETLINK_AUDIT as u64),
    ];
    // On i386 socket() may come multiplexed through socketcall, where arguments are in memory:
    // libseccomp refuses the rule there, and audit stays merely unusable, as nspawn leaves it.
    let _ = ctx.add_rule_conditional(ScmpAction::Errno(libc::EAFNOSUPPORT), socket, &audit);
    Ok(ctx)
}

/// Exports a filter as classic BPF instructions.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<Insn>, RunnerError> {
    let fd = rustix::fs::memfd_create("rmach-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| fail("memfd", e))?;
    ctx.export_bpf(&fd).map_err(|e| fail("export", e))?;
    let mut file = std::fs::File::from(fd);
    std::io::Seek::rewind(&mut file).map_err(|e| fail("read back", e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| fail("read back", e))?;
    Ok(bytes.chunks_exact(8).map(insn_of).collect())
}

/// Like [`compile`], through a cache directory: libseccomp takes 5-30 ms to build the filters,
/// most of a `run`'s time. The file name carries everything the program depends on (the
/// capabilities that gate groups, the list, libseccomp's and rmach's versions), the file a
/// SHA-256 of its contents; anything unreadable or inconsistent is compiled afresh.
pub(crate) fn compile_cached(
    bounding_caps: u64,
    cache: Option<&std::path::Path>,
) -> Result<SeccompProgram, RunnerError> {
    let Some(dir) = cache else {
        return compile(bounding_caps);
    };
    let path = dir.join(format!("seccomp-{}.bpf", cache_key(bounding_caps)));
    if let Some(p) = std::fs::read(&path).ok().and_then(|b| decode(&b)) {
        return Ok(p);
    }
    let program = compile(bounding_caps)?;
    // A failed write only costs the next run the compile time.
    let tmp = dir.join(format!(".seccomp-{}.tmp", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, encode(&program)))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(program)
}

fn cache_key(bounding_caps: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for g in GROUPS {
        let kept = g
            .capability
            .is_none_or(|c| caps::number(c).is_ok_and(|n| bounding_caps & (1u64 << n) != 0));
        h.update([kept as u8]);
        h.update(g.calls.join(",").as_bytes());
    }
    for (name, request) in REFUSED_IOCTLS {
        h.update(name.as_bytes());
        h.update(request.to_ne_bytes());
    }
    let v =
        libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro));
    h.update(v.unwrap_or_default().as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(&h.finalize()[..12])
}

fn insn_bytes(i: &Insn) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&i.code.to_ne_bytes());
    b[2] = i.jt;
    b[3] = i.jf;
    b[4..].copy_from_slice(&i.k.to_ne_bytes());
    b
}

fn insn_of(b: &[u8]) -> Insn {
    Insn {
        code: u16::from_ne_bytes([b[0], b[1]]),
        jt: b[2],
        jf: b[3],
        k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    }
}

/// Each filter as a 4-byte instruction count and its instructions; then a SHA-256 of it all.
fn encode(p: &SeccompProgram) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut v = Vec::new();
    for f in &p.filters {
        v.extend_from_slice(&(f.len() as u32).to_ne_bytes());
        for i in f {
            v.extend_from_slice(&insn_bytes(i));
        }
    }
    let sum = Sha256::digest(&v);
    v.extend_from_slice(&sum);
    v
}

fn decode(bytes: &[u8]) -> Option<SeccompProgram> {
    use sha2::{Digest, Sha256};
    let (body, sum) = bytes.split_at(bytes.len().checked_sub(32)?);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut filters = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = u32::from_ne_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let insns = rest.get(4..4 + n.checked_mul(8)?)?;
        filters.push(insns.chunks_exact(8).map(insn_of).collect());
        rest = &rest[4 + n * 8..];
    }
    (filters.len() == 2).then_some(SeccompProgram { filters })
}

/// Compiles both programs for a machine with the capability bounding set `bounding_caps`.
pub(crate) fn compile(bounding_caps: u64) -> Result<SeccompProgram, RunnerError> {
    Ok(SeccompProgram {
        filters: vec![export(&allow_list(bounding_caps)?)?, export(&refusals()?)?],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `probe` in a forked child under the filters; returns its exit code.
    fn under_filters(p: &SeccompProgram, probe: fn() -> i32) -> i32 {
        match crate::sys::ns::fork_threadsafe().unwrap() {
            None => {
                for f in &p.filters {
                    if crate::sys::seccomp::install(f).is_err() {
                        crate::sys::process::exit_now(100);
                    }
                }
                crate::sys::process::exit_now(probe())
            }
            Some(pid) => {
                let (_, status) = crate::sys::process::wait_raw(pid, false).unwrap().unwrap();
                libc::WEXITSTATUS(status)
            }
        }
    }

    fn errno_of(r: libc::c_long) -> i32 {
        if r == -1 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn keyrings_fanotify_and_tiocsti_are_refused_and_ordinary_calls_work() {
        let p = compile(caps::bounding_set(&[], &[], false).unwrap()).unwrap();
        // SAFETY: (tests) raw calls with valid or null pointers; failures are what we check.
        let add_key = || unsafe {
            errno_of(libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"rmach-test".as_ptr(),
                c"x".as_ptr(),
                1usize,
                libc::KEY_SPEC_PROCESS_KEYRING,
            ))
        };
        assert_eq!(under_filters(&p, add_key), libc::EPERM);
        // SAFETY: as above.
        let fanotify = || unsafe { errno_of(libc::syscall(libc::SYS_fanotify_init, 0, 0)) };
        assert_eq!(under_filters(&p, fanotify), libc::EPERM);
        // SAFETY: as above; TIOCSTI on stdin (whatever it is) is refused before the driver.
        let tiocsti = || unsafe {
            let c = b'x';
            errno_of(libc::ioctl(0, libc::TIOCSTI, &c) as libc::c_long)
        };
        assert_eq!(under_filters(&p, tiocsti), libc::EPERM);
        // SAFETY: as above: the upper 32 bits are ignored by the kernel, and by the filter.
        let tiocsti_high = || unsafe {
            let c = b'x';
            let req = libc::TIOCSTI as libc::c_long | (1 << 32);
            errno_of(libc::syscall(libc::SYS_ioctl, 0, req, &c))
        };
        assert_eq!(under_filters(&p, tiocsti_high), libc::EPERM);
        // SAFETY: as above.
        let ordinary = || unsafe { errno_of(libc::syscall(libc::SYS_getpid)) };
        assert_eq!(under_filters(&p, ordinary), 0);
    }

    #[test]
    fn capability_gated_groups_follow_the_bounding_set() {
        let default = allowed_names(caps::bounding_set(&[], &[], false).unwrap());
        assert!(default.contains(&"reboot") && default.contains(&"ptrace"));
        for refused in [
            "add_key",
            "keyctl",
            "request_key",
            "bpf",
            "fanotify_init",
            "init_module",
            "kexec_load",
            "open_by_handle_at",
            "perf_event_open",
            "swapon",
            "settimeofday",
            "iopl",
            "acct",
            "mlock",
        ] {
            assert!(!default.contains(&refused), "{refused}");
        }
        let more =
            caps::bounding_set(&[], &[], false).unwrap() | 1 << caps::number("sys_time").unwrap();
        assert!(allowed_names(more).contains(&"settimeofday"));
        let less = caps::bounding_set(&[], &[], false).unwrap()
            & !(1 << caps::number("sys_boot").unwrap());
        assert!(!allowed_names(less).contains(&"reboot"));
    }

    #[test]
    fn docs_list_every_group_and_call() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runner.md"))
            .unwrap();
        for g in GROUPS {
            assert!(
                doc.contains(&format!("`{}`", g.name)),
                "docs/runner.md lacks {}",
                g.name
            );
            for call in g.calls {
                assert!(
                    doc.contains(call),
                    "docs/runner.md lacks {call} ({})",
                    g.name
                );
            }
        }
    }

    #[test]
    fn the_cache_returns_what_was_compiled_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let caps = caps::bounding_set(&[], &[], false).unwrap();
        let fresh = compile_cached(caps, Some(dir.path())).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(compile_cached(caps, Some(dir.path())).unwrap(), fresh);
        let mut bytes = std::fs::read(files[0].path()).unwrap();
        bytes[10] ^= 0xff;
        std::fs::write(files[0].path(), &bytes).unwrap();
        assert_eq!(compile_cached(caps, Some(dir.path())).unwrap(), fresh);
        assert_eq!(decode(&bytes), None);
        let more = caps | 1 << caps::number("sys_time").unwrap();
        assert_ne!(cache_key(more), cache_key(caps));
        let net = caps | 1 << caps::number("net_admin").unwrap();
        assert_eq!(cache_key(net), cache_key(caps), "net_admin gates no group");
    }
}
