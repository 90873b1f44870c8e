//! The image store (being written): see docs/architecture.md.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid image name {name:?}: {rule}")]
    InvalidName { name: String, rule: &'static str },
}

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    pub state_dir: PathBuf,
}

impl Store {
    pub fn open(root: &Path, state_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            root: root.into(),
            state_dir: state_dir.into(),
        })
    }
}
