//! Raw disk images: import (raw, bare file systems and qcow2, compressed or not, into a sparse
//! raw file), export (the same bytes sparse, compressed, or as qcow2), partition tables (MBR,
//! GPT and the Discoverable Partitions Specification), and mounting an image's file systems
//! through auto-clearing loop devices in a private mount namespace so that a machine can run
//! from it, and building such a disk from a directory tree. It does not know image names,
//! locks or staging (the store's), nor how a machine runs (the runner's).

mod disk;
mod error;
mod export;
mod gpt;
mod import;
mod mount;
pub(crate) mod partition;
pub(crate) mod qcow2;
pub(crate) mod sparse;

pub(crate) use disk::{build_disk, default_size, DiskFs};
pub(crate) use error::ImageError;
pub(crate) use export::{export_raw, ExportFormat, Target};
pub(crate) use import::{import_raw, ImportReport, Source};
pub(crate) use mount::{mount_image, MountedImage};
