//! Process control for the runner: signal masks and signalfd, raw wait statuses, identity
//! changes, capability sets and exec.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a stack value we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// The signal mask as it was before [`block_signals`]; restored when dropped.
pub(crate) struct SavedMask(libc::sigset_t);

impl Drop for SavedMask {
    fn drop(&mut self) {
        // SAFETY: `self.0` was filled by sigprocmask; restoring it touches no memory of ours.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Blocks `signals` in the calling thread (they stay pending for a signalfd) until the
/// returned guard is dropped.
pub(crate) fn block_signals(signals: &[i32]) -> io::Result<SavedMask> {
    let set = sigset(signals);
    let mut old = sigset(&[]);
    // SAFETY: `set` is initialised and `old` is a valid out pointer.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) })?;
    Ok(SavedMask(old))
}

/// Empties the signal mask and restores default dispositions (before exec of the payload).
pub(crate) fn reset_signals() -> io::Result<()> {
    let set = sigset(&[]);
    // SAFETY: `set` is initialised.
    check(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) })?;
    for s in 1..libc::SIGRTMAX() {
        if s == libc::SIGKILL || s == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; failures for reserved signals are ignored.
        unsafe { libc::signal(s, libc::SIG_DFL) };
    }
    Ok(())
}

/// A signalfd for `signals`, which the caller must have blocked.
pub(crate) fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: `set` is initialised; -1 asks for a new fd, which we own from here on.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one signal number from a signalfd; `None` when none is pending.
pub(crate) fn read_signal(fd: &OwnedFd) -> io::Result<Option<i32>> {
    // SAFETY: signalfd_siginfo is plain data; zeroed is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: we pass a buffer of exactly `size` bytes that we own.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            &mut info as *mut _ as *mut libc::c_void,
            size,
        )
    };
    if n == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(info.ssi_signo as i32))
}

/// Blocks until a signal in `signals` (blocked by the caller) arrives; returns its number.
pub(crate) fn wait_signal(signals: &[i32]) -> io::Result<i32> {
    let set = sigset(signals);
    loop {
        // SAFETY: `set` is initialised; no siginfo is requested.
        let r = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if r != -1 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// waitpid returning the raw status, for any child (`pid` -1) or one, clones included
/// (`__WALL`); `Ok(None)` with `nohang` when the child still runs.
pub(crate) fn wait_raw(pid: i32, nohang: bool) -> io::Result<Option<(i32, i32)>> {
    use rustix::process::{Pid, WaitOptions};
    let mut options = WaitOptions::from_bits_retain(libc::__WALL as u32);
    if nohang {
        options |= WaitOptions::NOHANG;
    }
    let which = match pid {
        -1 => None,
        pid => Some(Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))?),
    };
    loop {
        match rustix::process::waitpid(which, options) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(None) => return Ok(None),
            Ok(Some((pid, status))) => {
                return Ok(Some((pid.as_raw_nonzero().get(), status.as_raw())))
            }
        }
    }
}

/// kill(2) with any signal number: rustix's safe `kill_process` takes named signals only, and
/// the machine's halt is a real-time one (SIGRTMIN+3).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Exits at once without running destructors or atexit handlers (for forked children).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Sets supplementary groups, then gid, then uid (all three of each) of the calling thread,
/// which is all of a forked child.
pub(crate) fn set_identity(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    let groups: Vec<_> = groups
        .iter()
        .map(|g| rustix::fs::Gid::from_raw(*g))
        .collect();
    set_thread_groups(&groups)?;
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    set_thread_res_gid(gid, gid, gid)?;
    set_thread_res_uid(uid, uid, uid)?;
    Ok(())
}

/// Drops every capability not in `keep` (a bit mask) from the bounding set, and clears the
/// inheritable and ambient sets so nothing outside the bounding set survives exec.
pub(crate) fn limit_capabilities(keep: u64) -> io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|cap| keep & (1u64 << cap) == 0) {
        let one = CapabilitySet::from_bits_retain(1u64 << cap);
        match rustix::thread::remove_capability_from_bounding_set(one) {
            // A capability this kernel does not know.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let keep = CapabilitySet::from_bits_retain(keep);
    let sets = rustix::thread::capabilities(None)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: sets.effective & keep,
            permitted: sets.permitted & keep,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(())
}

pub(crate) fn set_no_new_privs() -> io::Result<()> {
    rustix::thread::set_no_new_privs(true).map_err(io::Error::from)
}

/// execve; returns only on failure.
pub(crate) fn execve(path: &CString, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: both arrays are NULL-terminated and point into CStrings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// Duplicates `fd` onto standard input, output or error (`target` 0, 1 or 2), clearing
/// close-on-exec on the copy.
pub(crate) fn dup2(fd: &impl AsFd, target: i32) -> io::Result<()> {
    match target {
        0 => rustix::stdio::dup2_stdin(fd),
        1 => rustix::stdio::dup2_stdout(fd),
        2 => rustix::stdio::dup2_stderr(fd),
        _ => Err(rustix::io::Errno::BADF),
    }
    .map_err(io::Error::from)
}

/// Makes the tty on `fd` the controlling terminal of this (new) session.
pub(crate) fn set_controlling_tty(fd: &impl AsFd) -> io::Result<()> {
    rustix::process::ioctl_tiocsctty(fd).map_err(io::Error::from)
}

/// A pipe whose ends are both close-on-exec: (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

pub(crate) fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

/// Marks every descriptor from `first` up close-on-exec, so nothing rmach inherited from its
/// own parent reaches the machine's payload.
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with the CLOEXEC flag only changes descriptor flags; no memory involved.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from 3 up except those in `keep`, so nothing the caller had open
/// (an inherited descriptor, a lock file) survives into a forked child.
pub(crate) fn close_all_except(keep: &[i32]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep.iter().filter(|f| **f > 2).map(|f| *f as u32).collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for k in keep.into_iter().chain([u32::MAX]) {
        if k > first {
            // SAFETY: close_range closes descriptors in the range; the caller owns no
            // Rust object for them (those it keeps are in `keep`).
            let r = unsafe { libc::syscall(libc::SYS_close_range, first, k - 1, 0) };
            if r == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        first = k.saturating_add(1);
    }
    Ok(())
}

/// Numbered fields of `/proc/self/stat` (1-based, as proc(5) counts them).
fn stat_fields(numbers: &[usize]) -> io::Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which may hold spaces, start at field 3.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    numbers
        .iter()
        .map(|n| {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
        })
        .collect()
}

/// `struct prctl_mm_map` of <linux/prctl.h>.
#[repr(C)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// Replaces what `/proc/PID/cmdline` and `/proc/PID/environ` show for this process (and for
/// children that do not exec) with `cmdline` and `environ` (NUL-separated), and wipes the
/// original strings, so a forked process that never execs reveals nothing of its caller's
/// arguments or environment. Uses `PR_SET_MM_MAP`, which needs no capability.
pub(crate) fn replace_cmdline_and_environ(cmdline: &[u8], environ: &[u8]) -> io::Result<()> {
    let f = stat_fields(&[26, 27, 28, 45, 46, 47, 48, 49, 50, 51])?;
    let (arg_start, arg_end, env_start, env_end) = (f[6], f[7], f[8], f[9]);
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if end > start {
            // SAFETY: the kernel reports [start, end) as this process's own argument or
            // environment strings, mapped and writable (they live on the initial stack); after
            // this nothing reads them as strings longer than what the zeroes leave.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, (end - start) as usize) };
        }
    }
    // Leaked on purpose: the kernel keeps pointing at them for the life of the process.
    let args: &'static [u8] = Box::leak(cmdline.to_vec().into_boxed_slice());
    let env: &'static [u8] = Box::leak(environ.to_vec().into_boxed_slice());
    let span = |b: &[u8]| (b.as_ptr() as u64, b.as_ptr() as u64 + b.len().max(1) as u64);
    let ((arg_start, arg_end), (env_start, env_end)) = (span(args), span(env));
    // SAFETY: sbrk(0) only reports the current program break.
    let brk = unsafe { libc::sbrk(0) } as u64;
    let map = MmMap {
        start_code: f[0],
        end_code: f[1],
        start_stack: f[2],
        start_data: f[3],
        end_data: f[4],
        start_brk: f[5],
        brk,
        arg_start,
        arg_end,
        env_start,
        env_end,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    };
    // SAFETY: `map` is a prctl_mm_map of the size passed; the kernel validates every address.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP as libc::c_ulong,
            &map as *const MmMap as libc::c_ulong,
            std::mem::size_of::<MmMap>() as libc::c_ulong,
            0,
        )
    };
    check(r).map(drop)
}

/// A word of memory shared with every process forked after this call (an anonymous shared
/// mapping, never unmapped): how the machine's init hands the payload's status to the helper
/// without holding any descriptor.
pub(crate) fn shared_word() -> io::Result<&'static std::sync::atomic::AtomicU64> {
    // SAFETY: a fresh anonymous mapping of one page, readable and writable, not aliased by
    // anything else in this process; it is never unmapped, so the 'static borrow stays valid,
    // and an AtomicU64 is valid for any (zeroed) bit pattern at this page-aligned address.
    unsafe {
        let p = rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
        )?;
        Ok(&*(p as *const std::sync::atomic::AtomicU64))
    }
}

/// Sets the filesystem uid and gid (the ids files are created with and checked against),
/// returning the previous ones. Changing them away from 0 also clears the file-system
/// capabilities from the effective set until they are set back to 0.
pub(crate) fn set_fs_ids(uid: u32, gid: u32) -> (u32, u32) {
    // SAFETY: setfsgid/setfsuid take plain integers and return the previous id.
    unsafe { (libc::setfsuid(uid) as u32, libc::setfsgid(gid) as u32) }
}
