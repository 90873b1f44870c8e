//! The import and export verbs' orchestration over [`crate::archive`] and [`crate::store`]:
//! staging an image and committing it only when the input was read whole, checking an expected
//! SHA-256 while the input streams, telling a full store from a broken archive, lifting a
//! single top-level directory, and writing an output file beside its target to rename it into
//! place when complete. The CLI and pulls call it with a stream; it never prints (warnings
//! come back in the results) and knows nothing of argv, terminals or progress bars beyond an
//! optional callback. [`pull`] downloads tarballs and disk images over HTTP with checksum and
//! signature checks and imports them as they arrive.

mod error;
mod export;
mod import;
mod layout;
pub mod pull;

pub use error::TransferError;
pub use export::{export_tar, export_tree, ExportRequest, ExportTarget, Exported, TempOutput};
pub use import::{extract_tar, import_tar, ImportRequest, Imported};
pub use layout::{is_os_tree, strip_single_top_dir};
