//! rmach keeps a store of machine images and does everything a person does with them:
//! bootstrap Debian and Ubuntu root filesystems, import and export tarballs, and run or boot
//! any stored image in Linux namespaces.
//!
//! A tour of the modules, from the bottom up:
//!
//! - [`sys`] wraps the system calls the rest needs (`openat2`, `renameat2`, xattrs, file flags,
//!   locks); it is the only module with `unsafe`.
//! - [`fs`] resolves paths inside a directory tree (`openat2(RESOLVE_IN_ROOT)`) and creates
//!   what is missing there, by descriptor, so no symlink in an image can lead outside it.
//! - [`store`] is the only module that knows the store's layout: image names, image kinds,
//!   staging and atomic commit, locks, read-only flags, usage, and full-fidelity tree copies.
//! - [`archive`] reads and writes tar archives with their full metadata, detects and codes
//!   compression, and holds the safe extractor.
//! - `parallel` is the one thread-count policy: one thread per core for CPU-bound work, two
//!   for work that blocks in file-system calls.
//! - [`image`] handles raw disk images: qcow2 and compressed inputs, partition tables, loop
//!   devices and mounts, disks built from trees.
//! - [`http`] speaks HTTP(S) for pulls and the registry client: one agent configuration,
//!   errors that keep their causes, retries.
//! - [`runner`] turns a run specification into a plan (namespaces, mounts, cgroup,
//!   capabilities) and executes it.
//! - [`machine`] keeps started machines running under a supervisor and records them: stop,
//!   signals, shell sessions, live limits, live backups, the systemd unit.
//! - [`oci`] reads and writes OCI images: layouts, docker archives, the registry API, layers
//!   with whiteouts, the shared blob cache.
//! - [`transfer`] runs the import, export and pull verbs over archive, image, oci and store:
//!   staging, digest checks, a full store, the single top directory, temporary output files;
//!   pull-tar and pull-raw over HTTP with checksums and signatures import through the same
//!   functions as import-tar and import-raw.
//! - [`openpgp`] verifies OpenPGP signatures (Release files, checksum lists) against a keyring.
//! - [`bootstrap`] builds a root filesystem from a Debian or Ubuntu mirror.
//! - [`cli`] parses the command line, prints, and maps errors to exit statuses. Nothing in the
//!   library calls it; the library never prints and never exits.

#![warn(unreachable_pub)]

pub mod archive;
pub mod bootstrap;
pub mod cli;
pub mod fs;
pub mod http;
pub mod image;
pub mod machine;
pub mod oci;
pub mod openpgp;
mod parallel;
pub mod runner;
pub mod store;
pub mod sys;
pub mod transfer;
