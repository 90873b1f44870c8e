//! The one place a package's data tar is written into the target.
//!
//! TEMPORARY: until the archive module's safe extractor lands on main, this pipes the tar
//! stream to GNU tar with `--keep-old-files`, as debootstrap itself does. It is replaced by
//! `crate::archive`'s extractor as soon as that exists.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{BootstrapError, Result};

/// Extracts `tar` (an uncompressed tar stream) under `root`, failing on a file that exists
/// (debootstrap's `-k`: two required packages never ship the same path).
pub fn extract(mut tar: Box<dyn Read + Send>, root: &Path, deb: &Path) -> Result<()> {
    let err = |reason: String| BootstrapError::Extract {
        path: deb.into(),
        reason,
    };
    let mut child = Command::new("tar")
        .args([
            "-x",
            "-k",
            "-p",
            "--same-owner",
            "--numeric-owner",
            "-f",
            "-",
            "-C",
        ])
        .arg(root)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("starting tar: {e}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin".into()))?;
    let copied = std::io::copy(&mut tar, &mut stdin);
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    copied.map_err(|e| err(format!("reading the package: {e}")))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("tar failed")
            .to_string()));
    }
    Ok(())
}
