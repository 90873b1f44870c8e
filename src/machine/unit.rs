//! Boot-time start through systemd: the shipped `rmach@.service` template and
//! `rmach-machines.target` (files in `units/`), installed into a unit directory with the
//! path of this rmach binary, and each enabled machine a `rmach@NAME.service` link in the
//! target's `.wants` directory, as `systemctl enable` would make it.

use std::path::{Path, PathBuf};

use super::{IoAt, Result};

pub(crate) const SERVICE: &str = include_str!("../../units/rmach@.service");
pub(crate) const TARGET: &str = include_str!("../../units/rmach-machines.target");

/// The unit template with ExecStart pointing at `rmach`.
pub(crate) fn service_text(rmach: &Path) -> String {
    SERVICE.replace("@RMACH@", &rmach.to_string_lossy())
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("rmach-tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

fn link(target: &Path, at: &Path) -> Result<()> {
    if std::fs::read_link(at).ok().as_deref() == Some(target) {
        return Ok(());
    }
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at).at(at)
}

/// Installs the units into `dir` and links `rmach@NAME.service` into the target; returns the
/// links made.
pub(crate) fn enable(dir: &Path, rmach: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let wants = dir.join("rmach-machines.target.wants");
    let multi = dir.join("multi-user.target.wants");
    for d in [dir, &wants, &multi] {
        std::fs::create_dir_all(d).at(d)?;
    }
    let service = dir.join("rmach@.service");
    write_if_changed(&service, &service_text(rmach))?;
    let target = dir.join("rmach-machines.target");
    write_if_changed(&target, TARGET)?;
    let instance = wants.join(format!("rmach@{name}.service"));
    link(&service, &instance)?;
    let target_link = multi.join("rmach-machines.target");
    link(&target, &target_link)?;
    Ok(vec![instance, target_link])
}

/// Removes the machine's link; the units stay for the other machines. Returns whether it was
/// enabled.
pub(crate) fn disable(dir: &Path, name: &str) -> Result<bool> {
    let instance = dir
        .join("rmach-machines.target.wants")
        .join(format!("rmach@{name}.service"));
    match std::fs::remove_file(&instance) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).at(instance),
    }
}

/// Whether systemd runs this host (then `systemctl daemon-reload` makes the change known).
pub(crate) fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}
