//! Ctrl-C and SIGTERM for the verbs that create something: say so at once and exit 130, instead
//! of dying silently. What the verb left (its staging entry) is removed by `rmach clean` or by
//! the next operation on the name (design §1); removing it here, while other threads may still
//! be writing into it, would race with them.

/// What the handler writes; set once before the handler is installed.
static MESSAGE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// A file the handler removes: a temporary output outside the store, which `clean` does not
/// look for.
static REMOVE: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();

/// An open `cgroup.freeze` the handler writes "0" to: a machine frozen for a live export is
/// thawed when the export is interrupted (its destructor does not run after `_exit`). -1: none.
static THAW: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    let thaw = THAW.load(std::sync::atomic::Ordering::SeqCst);
    if thaw >= 0 {
        // SAFETY: write(2) is async-signal-safe; the descriptor stays open while registered.
        unsafe { libc::write(thaw, b"0".as_ptr().cast(), 1) };
    }
    if let Some(path) = REMOVE.get() {
        // SAFETY: unlink(2) is async-signal-safe; the path is a NUL-terminated 'static string.
        unsafe { libc::unlink(path.as_ptr()) };
    }
    if let Some(text) = MESSAGE.get() {
        // SAFETY: write(2) is async-signal-safe; the buffer is a 'static str.
        unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
    }
    // SAFETY: _exit(2) is async-signal-safe and runs no destructors or atexit handlers.
    unsafe { libc::_exit(130) };
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP. Child processes get the default back
/// at exec; a runner that blocks these signals to forward them still sees them first.
pub(crate) fn exit_on_interrupt(message: &'static str) -> std::io::Result<()> {
    let _ = MESSAGE.set(message);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid value of the C struct; the fields used are set
        // below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t owned by `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is fully initialised and the handler only calls async-signal-safe
        // functions (it reads a OnceLock already set, which is a plain atomic load).
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// While the returned guard lives, an interrupt writes "0" to `freeze_file` (a cgroup's
/// `cgroup.freeze`, opened now) before the process exits, thawing what a live export froze.
pub(crate) fn thaw_on_interrupt(freeze_file: &std::path::Path) -> std::io::Result<ThawOnInterrupt> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().write(true).open(freeze_file)?;
    THAW.store(file.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    Ok(ThawOnInterrupt { _freeze_file: file })
}

/// Keeps the `cgroup.freeze` descriptor open for the handler (the file is held for its drop,
/// which closes the descriptor after this value's own drop has unregistered it).
pub(crate) struct ThawOnInterrupt {
    _freeze_file: std::fs::File,
}

impl Drop for ThawOnInterrupt {
    fn drop(&mut self) {
        THAW.store(-1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Makes the handler remove `path` (once per process; later calls are ignored).
pub(crate) fn remove_on_interrupt(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        let _ = REMOVE.set(path);
    }
}
