use std::io;
use std::path::PathBuf;

/// Everything the store can refuse or fail at. Each variant names the image or path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid image name {name:?}: {rule}")]
    InvalidName { name: String, rule: &'static str },
    #[error("no image {name} in {store}")]
    NotFound { name: String, store: PathBuf },
    #[error("image {name} already exists in {store}; use --force to replace it")]
    Exists { name: String, store: PathBuf },
    #[error("{name} is being {verb} by PID {pid}")]
    Busy {
        name: String,
        verb: String,
        pid: u32,
    },
    #[error("image {name} is read-only; make it writable first with `rmach read-only {name} no`")]
    ReadOnly { name: String },
    #[error("{path}: {source}")]
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
