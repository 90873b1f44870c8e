//! The import, export and pull verbs' orchestration over [`crate::archive`],
//! [`crate::image`] and [`crate::store`]: staging an image and committing it only when the
//! input was read whole, checking a SHA-256 while the input streams, telling a full store from
//! a broken input, lifting a single top-level directory, building a raw disk from a tree, and
//! writing an output file beside its target to rename it into place when complete. The CLI
//! and pulls call it with a stream; it never prints (warnings come back in the results) and
//! knows nothing of argv, terminals or progress bars beyond an optional callback. [`pull`]
//! downloads tarballs and disk images over HTTP with checksum and signature checks and
//! imports them through the same functions as import-tar and import-raw, as they arrive.

mod error;
mod export;
mod import;
mod layout;
pub(crate) mod oci;
mod output;
pub(crate) mod pull;
mod tree;

pub(crate) use error::TransferError;
pub(crate) use export::{export_raw, export_tar, ExportTarget};
pub(crate) use import::{extract_tar, import_fs, import_raw, import_tar, write_raw, ImportRequest};
pub(crate) use output::TempOutput;
pub(crate) use tree::{DiskSpec, TreeTarget};
