//! The file-system layer below archive, store and transfer: a [`Root`] handle that resolves
//! paths inside a directory tree with `openat2(RESOLVE_IN_ROOT)`, so that no symlink or `..`
//! in the tree can reach outside it, creates missing parents inside it and works by
//! descriptor; and one [`Metadata`] type restored in the one order that keeps it (owner, mode,
//! xattrs with capabilities last, times). It does not know archives, images or the store; it
//! never prints.

mod metadata;
mod root;

pub(crate) use metadata::{Metadata, RestoreError, CAPABILITY_XATTR};
pub(crate) use root::{is_dir, join, proc_path, remove_existing, Missing, Root};
