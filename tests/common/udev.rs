//! A udev daemon for the duration of one check, on hosts that run none (containers, CI VMs
//! without systemd as PID 1): `systemd-nspawn --image` attaches a loop device and waits for udev
//! to have processed it, so without a daemon it refuses every image. `scripts/test` unpacks the
//! udev package of the host's systemd version into [`UNPACKED`] without installing it (its
//! postinst would start a udevd for good and trigger the host's rules); [`PrivateUdev::start`]
//! runs that binary in the foreground with no rules (it only marks devices as processed) and
//! its drop stops it and removes the `/run/udev` it made, so the host is left as found.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/test unpacks the udev package (`dpkg -x`).
pub const UNPACKED: &str = "/var/cache/rmach-test/udev";

const CONTROL: &str = "/run/udev/control";

/// The host's own udev, or one started for this check, or why neither is there.
pub enum Udev {
    Host,
    Private(PrivateUdev),
}

/// A udevd this test started; stopped and cleaned up on drop.
pub struct PrivateUdev {
    daemon: Child,
}

impl Udev {
    /// The host's udev where it runs one, else a private one from [`UNPACKED`].
    pub fn get() -> Result<Udev, String> {
        if Path::new(CONTROL).exists() {
            return Ok(Udev::Host);
        }
        PrivateUdev::start().map(Udev::Private)
    }
}

impl PrivateUdev {
    fn start() -> Result<PrivateUdev, String> {
        let udevadm = Path::new(UNPACKED).join("bin/udevadm");
        if !udevadm.exists() {
            return Err(format!(
                "no udev on this host and none unpacked at {UNPACKED} (scripts/test does that)"
            ));
        }
        if Path::new("/run/udev").exists() {
            return Err("/run/udev exists but no daemon listens on it".into());
        }
        // udevadm is a multi-call binary: named systemd-udevd it is the daemon. In the
        // foreground, not --daemon: nspawn finds udev's network namespace through the PID
        // that bound the control socket, which --daemon's parent leaves behind dead.
        let daemon = {
            use std::os::unix::process::CommandExt;
            Command::new(&udevadm)
                .arg0("systemd-udevd")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("{}: {e}", udevadm.display()))?
        };
        let udev = PrivateUdev { daemon };
        let start = Instant::now();
        while !Path::new(CONTROL).exists() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("the private udevd did not open its control socket in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(udev)
    }
}

impl Drop for PrivateUdev {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all("/run/udev");
    }
}
