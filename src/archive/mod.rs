//! Tar archives with their full metadata: reading ([`reader`]), writing a directory tree
//! ([`write_tree`]), compression detection and coding ([`compress`]), and the safe extractor
//! ([`extract`]) used by import-tar, bootstrap (for .deb data) and pull. It works on plain
//! paths and file descriptors and does not know the store, image names or locks; it never
//! prints: warnings come back in the stats or through callbacks.
//!
//! Why not the `tar` crate's own entry iterator: it parses PAX records by splitting on
//! newlines (binary xattr values and GNU textual ACLs contain 0x0A) and ignores a PAX `size`
//! in raw mode, so a reader that must agree byte for byte with GNU tar frames the archive
//! itself (header fields, checksums, base-256 numbers: [`reader`]).

mod acl;
pub(crate) mod compress;
mod compressed;
mod deferred;
mod error;
mod extract;
mod header;
mod pax;
mod pgzip;
mod pipe;
pub mod reader;
mod sparse;
mod write;
mod writeback;
mod writers;

pub use compress::{Compression, Decoder, Encoder};
pub use compressed::{write_compressed_tree, Packing};
pub use error::ArchiveError;
pub use extract::{extract, ExtractOptions, ExtractStats};
pub use pipe::ThreadedWriter;
pub use reader::{Kind, Member, TarReader};
pub(crate) use write::{write_tree, WriteOptions};
pub(crate) use writeback::WritebackFile;
