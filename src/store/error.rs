use std::io;
use std::path::PathBuf;

use super::LockHolder;

/// Everything the store can refuse or fail at. Each variant names the image or path; none
/// repeats its source's text (the CLI prints the chain of causes once).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid image name {name:?}: {rule}")]
    InvalidName { name: String, rule: &'static str },
    #[error("no image store at {path}; give the right --store (or RMACH_STORE), or create the store with an import or bootstrap")]
    NoStore { path: PathBuf },
    #[error("no image {name} in {store}")]
    NotFound { name: String, store: PathBuf },
    #[error(
        "image {name} already exists in {store}{}",
        if *can_force { "; use --force to replace it" } else { "" }
    )]
    Exists {
        name: String,
        store: PathBuf,
        /// The verb has `--force` (an import or bootstrap; not rename or clone).
        can_force: bool,
    },
    #[error("{name} is {holder}")]
    Busy { name: String, holder: LockHolder },
    #[error("image {name} is read-only; make it writable first with `rmach read-only {name} no`")]
    ReadOnly { name: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source: source.into(),
        }
    }
}

/// Attaches a path to an I/O result.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StoreError>;
}

impl<T, E: Into<io::Error>> IoContext<T> for Result<T, E> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(path, e))
    }
}
