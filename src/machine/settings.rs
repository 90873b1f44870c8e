//! The per-machine settings file, `STORE/NAME.rmach` beside the image (as systemd-nspawn keeps
//! `NAME.nspawn` beside it in /var/lib/machines): the run options `start`, `boot` and the
//! unit use, in TOML with the options' long names as keys. `rmach set` writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{IoAt, MachineError, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) setenv: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) bind: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) bind_ro: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tmpfs: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ephemeral: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) read_only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hostname: Option<String>,
    /// host, private or veth (started machines: veth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) network: Option<String>,
    /// no, pick, identity or UID[:COUNT] (started machines: pick).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) private_users: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pids_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) capability: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) drop_capability: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) no_new_privileges: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unsafe_no_device_policy: Option<bool>,
}

pub(crate) fn path(store: &Path, name: &str) -> PathBuf {
    store.join(format!("{name}.rmach"))
}

/// Removes a removed image's settings file, if it had one.
pub(crate) fn forget(store: &Path, name: &str) -> Result<()> {
    let path = path(store, name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}

/// Moves a renamed image's settings file along with it (a file of the new name is replaced:
/// it belonged to no image, since the rename succeeded).
pub(crate) fn rename(store: &Path, old: &str, new: &str) -> Result<()> {
    let from = path(store, old);
    match std::fs::rename(&from, path(store, new)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(from),
        _ => Ok(()),
    }
}

/// Gives a cloned image its source's settings file, if it had one, as machinectl's clone copies
/// the `.nspawn` file (written aside and renamed, so a reader never sees half of it).
pub(crate) fn copy(store: &Path, source: &str, destination: &str) -> Result<()> {
    let from = path(store, source);
    let text = match std::fs::read(&from) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at(from),
    };
    let tmp = store.join(format!(".#{destination}.rmach.{}", std::process::id()));
    std::fs::write(&tmp, text).at(&tmp)?;
    let to = path(store, destination);
    std::fs::rename(&tmp, &to).at(to)
}

impl Settings {
    /// The machine's settings; none recorded is the empty set.
    pub(crate) fn load(store: &Path, name: &str) -> Result<Settings> {
        let path = path(store, name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| MachineError::Settings { path, source: e })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e).at(path),
        }
    }

    /// Writes the settings beside the image, atomically; the empty set removes the file.
    pub(crate) fn save(&self, store: &Path, name: &str) -> Result<()> {
        let path = path(store, name);
        if *self == Settings::default() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
                _ => Ok(()),
            };
        }
        let text = toml::to_string(self)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            .at(&path)?;
        let tmp = store.join(format!(".#{name}.rmach.{}", std::process::id()));
        std::fs::write(
            &tmp,
            format!("# rmach settings for {name}: run options by their long names\n{text}"),
        )
        .at(&tmp)?;
        std::fs::rename(&tmp, &path).at(path)
    }

    /// `over` on top of `self`: single values replace, lists add.
    pub(crate) fn merged(&self, over: &Settings) -> Settings {
        let cat = |a: &Vec<String>, b: &Vec<String>| [a.clone(), b.clone()].concat();
        Settings {
            setenv: cat(&self.setenv, &over.setenv),
            bind: cat(&self.bind, &over.bind),
            bind_ro: cat(&self.bind_ro, &over.bind_ro),
            tmpfs: [self.tmpfs.clone(), over.tmpfs.clone()].concat(),
            ephemeral: over.ephemeral.or(self.ephemeral),
            read_only: over.read_only.or(self.read_only),
            hostname: over.hostname.clone().or(self.hostname.clone()),
            network: over.network.clone().or(self.network.clone()),
            private_users: over.private_users.clone().or(self.private_users.clone()),
            memory_max: over.memory_max.clone().or(self.memory_max.clone()),
            cpus: over.cpus.or(self.cpus),
            pids_max: over.pids_max.or(self.pids_max),
            capability: cat(&self.capability, &over.capability),
            drop_capability: cat(&self.drop_capability, &over.drop_capability),
            no_new_privileges: over.no_new_privileges.or(self.no_new_privileges),
            unsafe_no_device_policy: over
                .unsafe_no_device_policy
                .or(self.unsafe_no_device_policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_merge_and_refusal() {
        let store = tempfile::tempdir().unwrap();
        let s = Settings {
            memory_max: Some("1G".into()),
            cpus: Some(2.0),
            bind: vec!["/srv:/srv".into()],
            ..Default::default()
        };
        s.save(store.path(), "dev").unwrap();
        let text = std::fs::read_to_string(path(store.path(), "dev")).unwrap();
        assert!(text.contains("memory-max = \"1G\""), "{text}");
        assert_eq!(Settings::load(store.path(), "dev").unwrap(), s);
        let m = s.merged(&Settings {
            cpus: Some(1.0),
            bind: vec!["/a".into()],
            ..Default::default()
        });
        assert_eq!(
            (m.cpus, m.memory_max.as_deref(), m.bind.len()),
            (Some(1.0), Some("1G"), 2)
        );
        std::fs::write(path(store.path(), "bad"), "memroy-max = 1\n").unwrap();
        assert!(matches!(
            Settings::load(store.path(), "bad"),
            Err(MachineError::Settings { .. })
        ));
        rename(store.path(), "dev", "prod").unwrap();
        assert_eq!(Settings::load(store.path(), "prod").unwrap(), s);
        forget(store.path(), "prod").unwrap();
        assert!(!path(store.path(), "prod").exists());
        forget(store.path(), "prod").unwrap();
        s.save(store.path(), "dev").unwrap();
        Settings::default().save(store.path(), "dev").unwrap();
        assert!(!path(store.path(), "dev").exists());
    }
}
