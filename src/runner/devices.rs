//! The device policy on cgroup v2: an eBPF program built from the same allow list the v1
//! device controller gets (`plan::DEVICE_ALLOW`). Creating any node (mknod) is allowed;
//! reading or writing one is allowed only for the listed devices.

use crate::sys::bpf::BpfInsn;

const LDX_W: u8 = 0x61;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const AND64_K: u8 = 0x57;
const RSH64_K: u8 = 0x77;
const JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;
/// `bpf_cgroup_dev_ctx.access_type` low half: block 1, char 2; high half: mknod 1, read 2, write 4.
const ACC_MKNOD: i32 = 1;

fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// A parsed `devices.allow` rule: type (1 block, 2 char), major and minor (None: any).
type Rule = (i32, Option<i32>, Option<i32>);

fn parse(rule: &str) -> Option<Rule> {
    let mut f = rule.split_whitespace();
    let ty = match f.next()? {
        "b" => 1,
        "c" => 2,
        _ => return None,
    };
    let (maj, min) = f.next()?.split_once(':')?;
    let access = f.next()?;
    if !access.contains('r') && !access.contains('w') {
        return None; // mknod-only rules are covered by the general mknod clause
    }
    let num = |s: &str| {
        if s == "*" {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    Some((ty, num(maj)?, num(min)?))
}

/// The program: r2 = access, r3 = type, r4 = major, r5 = minor; allow mknod, then each rule.
pub(crate) fn program(allow: &[&str]) -> Vec<BpfInsn> {
    let mut p = vec![
        i(LDX_W, 2, 1, 0, 0),
        i(MOV64_X, 3, 2, 0, 0),
        i(AND64_K, 3, 0, 0, 0xffff),
        i(RSH64_K, 2, 0, 0, 16),
        i(LDX_W, 4, 1, 4, 0),
        i(LDX_W, 5, 1, 8, 0),
        // mknod alone: allowed (opening the node is what the rules below decide).
        i(JNE_K, 2, 0, 2, ACC_MKNOD),
        i(MOV64_K, 0, 0, 0, 1),
        i(EXIT, 0, 0, 0, 0),
    ];
    for (ty, maj, min) in allow.iter().filter_map(|r| parse(r)) {
        let mut checks = vec![(3u8, ty)];
        checks.extend(maj.map(|m| (4u8, m)));
        checks.extend(min.map(|m| (5u8, m)));
        let n = checks.len();
        for (k, (reg, val)) in checks.into_iter().enumerate() {
            // Skip the rest of this rule's checks plus its "allow; exit" pair.
            p.push(i(JNE_K, reg, 0, (n - k - 1 + 2) as i16, val));
        }
        p.push(i(MOV64_K, 0, 0, 0, 1));
        p.push(i(EXIT, 0, 0, 0, 0));
    }
    p.push(i(MOV64_K, 0, 0, 0, 0));
    p.push(i(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on (access, type, major, minor) with a tiny interpreter.
    fn eval(p: &[BpfInsn], access: i64, ty: i64, major: i64, minor: i64) -> i64 {
        let mut r = [0i64; 11];
        let ctx = [(access << 16) | ty, major, minor];
        let mut pc = 0usize;
        loop {
            let x = p[pc];
            let (d, s) = ((x.regs & 0xf) as usize, (x.regs >> 4) as usize);
            let imm = x.imm as i64;
            let mut jump = |cond: bool| {
                if cond {
                    pc = (pc as i64 + x.off as i64) as usize
                }
            };
            match x.code {
                LDX_W => r[d] = ctx[x.off as usize / 4],
                MOV64_X => r[d] = r[s],
                MOV64_K => r[d] = imm,
                AND64_K => r[d] &= imm,
                RSH64_K => r[d] >>= imm,
                JNE_K => jump(r[d] != imm),
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn allows_listed_devices_and_mknod_only() {
        let p = program(crate::runner::plan::DEVICE_ALLOW);
        let (read, write, mknod) = (2, 4, 1);
        assert_eq!(eval(&p, read | write, 2, 1, 3), 1, "/dev/null");
        assert_eq!(eval(&p, read, 2, 136, 7), 1, "a pty");
        assert_eq!(eval(&p, read, 2, 10, 200), 1, "tun");
        assert_eq!(eval(&p, read, 1, 254, 0), 0, "a disk");
        assert_eq!(eval(&p, read, 2, 1, 1), 0, "/dev/mem");
        assert_eq!(eval(&p, mknod, 1, 254, 0), 1, "creating a disk node");
        assert_eq!(eval(&p, read, 2, 4, 1), 0, "a virtual console");
    }
}
