//! Running one shell script inside the image through the runner (the same namespaces, /proc,
//! /sys and private /dev that `rmach run` gives), its output captured for the error message.

use std::path::Path;

use crate::runner::{self, Console, RunSpec};

pub fn run_script(root: &Path, hostname: &str, script: &str) -> Result<(), String> {
    let mut spec = RunSpec::new(root, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.name = format!("rmach-bootstrap-{}", std::process::id());
    spec.hostname = Some(hostname.to_string());
    spec.console = Console::Capture;
    let out = runner::output(&spec).map_err(|e| e.to_string())?;
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
