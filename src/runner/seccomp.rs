//! The seccomp filter: a small classic-BPF deny list of calls that reach the host kernel and
//! that no namespace contains. Everything else is left to capabilities and namespaces.
//! `reboot` stays allowed: inside a PID namespace the kernel turns it into the namespace's end.

use crate::sys::seccomp::Insn;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

/// Calls denied with EPERM, by name (for documentation and tests) and native number.
pub fn denied() -> Vec<(&'static str, u32)> {
    let mut v = vec![
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("kexec_load", libc::SYS_kexec_load),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("acct", libc::SYS_acct),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ];
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    v.push(("kexec_file_load", libc::SYS_kexec_file_load));
    #[cfg(target_arch = "x86_64")]
    v.extend([("iopl", libc::SYS_iopl), ("ioperm", libc::SYS_ioperm)]);
    v.into_iter().map(|(n, nr)| (n, nr as u32)).collect()
}

#[cfg(target_arch = "x86_64")]
const ARCHES: &[(u32, &[u32])] = &[
    // AUDIT_ARCH_I386 and the same calls' i386 numbers, so 32-bit binaries run but cannot use them.
    (
        0x4000_0003,
        &[
            128, 129, 350, 283, 87, 115, 51, 342, 79, 264, 343, 404, 405, 253, 110, 101, 25,
        ],
    ),
];
#[cfg(not(target_arch = "x86_64"))]
const ARCHES: &[(u32, &[u32])] = &[];

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp filter knows x86_64 and aarch64 only");

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Appends "if nr == each: return EPERM" for every number.
fn deny_block(p: &mut Vec<Insn>, nrs: &[u32]) {
    for &nr in nrs {
        p.push(insn(BPF_JEQ_K, 0, 1, nr));
        p.push(insn(BPF_RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32));
    }
    p.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
}

/// The filter program. Unknown architectures are killed: a call number means nothing without it.
pub fn program() -> Vec<Insn> {
    let native: Vec<u32> = denied().iter().map(|d| d.1).collect();
    let mut p = vec![insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH)];
    let mut blocks: Vec<(u32, Vec<Insn>)> = Vec::new();
    let mut body = vec![insn(BPF_LD_W_ABS, 0, 0, OFF_NR)];
    if cfg!(target_arch = "x86_64") {
        // x32 calls carry bit 30; refuse them rather than judge them by the x86_64 numbers.
        body.push(insn(BPF_JGE_K, 0, 1, 0x4000_0000));
        body.push(insn(BPF_RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32));
    }
    deny_block(&mut body, &native);
    blocks.push((NATIVE_ARCH, body));
    for (arch, nrs) in ARCHES {
        let mut b = vec![insn(BPF_LD_W_ABS, 0, 0, OFF_NR)];
        deny_block(&mut b, nrs);
        blocks.push((*arch, b));
    }
    // Dispatch: one jeq per arch, each jumping over the rest of the dispatch to its block.
    let n = blocks.len();
    let mut offset: usize = 1; // the kill instruction after the dispatch
    let sizes: Vec<usize> = blocks.iter().map(|b| b.1.len()).collect();
    for (i, (arch, _)) in blocks.iter().enumerate() {
        let jt = (n - i - 1) + offset;
        p.push(insn(BPF_JEQ_K, jt as u8, 0, *arch));
        offset += sizes[i];
    }
    p.push(insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS));
    for (_, b) in blocks {
        p.extend(b);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the subset the program uses, so the jumps are checked.
    fn eval(p: &[Insn], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == OFF_ARCH { arch } else { nr },
                BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
                BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn denies_module_loading_and_allows_the_rest() {
        let p = program();
        assert!(p.len() < 255);
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for (name, nr) in denied() {
            assert_eq!(eval(&p, NATIVE_ARCH, nr), eperm, "{name}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_reboot,
            libc::SYS_mount,
            libc::SYS_clone,
        ] {
            assert_eq!(eval(&p, NATIVE_ARCH, nr as u32), RET_ALLOW);
        }
        assert_eq!(eval(&p, 0x1234, 0), RET_KILL_PROCESS);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(eval(&p, 0x4000_0003, 128), eperm);
            assert_eq!(eval(&p, 0x4000_0003, 3), RET_ALLOW);
            assert_eq!(
                eval(&p, NATIVE_ARCH, 0x4000_0000 | 175),
                RET_ERRNO | libc::ENOSYS as u32
            );
        }
    }
}
