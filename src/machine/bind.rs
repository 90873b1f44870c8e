//! `bind`: a host directory or file mounted into a running machine, as `machinectl bind` does.
//! The mount is cloned on the host (`open_tree`), made read-only there if asked, and attached
//! from inside the machine's namespaces (`move_mount` after joining them), where the target
//! path resolves in the machine's own root. The mount lives as long as the machine.

use std::path::Path;

use super::record::Record;
use super::{shell, MachineError, Result};

pub(crate) fn bind(
    rec: &Record,
    source: &Path,
    target: &Path,
    read_only: bool,
    mkdir: bool,
) -> Result<()> {
    let fail = |what: String| {
        let name = rec.name.clone();
        move |source| MachineError::Enter { name, what, source }
    };
    if !target.is_absolute() {
        return Err(MachineError::Outside {
            path: target.into(),
        });
    }
    let is_dir = std::fs::metadata(source)
        .map_err(fail(format!("bind source {}", source.display())))?
        .is_dir();
    let tree = crate::sys::mount::clone_tree(source)
        .map_err(fail(format!("clone the mount of {}", source.display())))?;
    if read_only {
        crate::sys::mount::read_only_tree(&tree)
            .map_err(fail(format!("make {} read-only", source.display())))?;
    }
    shell::join(rec)?;
    let shown = || format!("{} in the machine", target.display());
    match (target.exists(), mkdir) {
        (true, _) => {}
        (false, true) if is_dir => std::fs::create_dir_all(target).map_err(fail(shown()))?,
        (false, true) => {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(fail(shown()))?;
            }
            std::fs::File::create(target).map_err(fail(shown()))?;
        }
        (false, false) => {
            return Err(fail(format!(
                "{}: no such mount point; --mkdir creates it",
                shown()
            ))(std::io::ErrorKind::NotFound.into()))
        }
    }
    crate::sys::mount::attach_tree(&tree, target).map_err(fail(format!("mount on {}", shown())))
}
