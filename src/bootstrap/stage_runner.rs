//! Running one shell script inside the image with /proc and /sys mounted.
//!
//! TEMPORARY: until the runner module lands on main, this uses util-linux's `unshare` (new
//! mount and PID namespaces, so nothing leaks onto the host's mounts) and `chroot`. The second
//! stage is to go through `crate::runner` ("one runner, not two"); this file is then deleted.

use std::path::Path;
use std::process::Command;

pub fn run_script(root: &Path, script: &str) -> Result<(), String> {
    let outer = r#"mount -t proc proc "$0/proc" && mount -t sysfs -o ro sysfs "$0/sys" && exec chroot "$0" /bin/sh -c "$1""#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "sh",
            "-c",
            outer,
        ])
        .arg(root)
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|e| format!("starting unshare: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let code = out
        .status
        .code()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "by signal".into());
    Err(if last.is_empty() {
        format!("exit status {code}")
    } else {
        format!("exit status {code}: {last}")
    })
}
