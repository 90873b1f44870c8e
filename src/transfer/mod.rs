//! The verbs that move images in and out of the store, orchestrated over `archive`, `oci` and
//! `store`. [`pull`] downloads tarballs and disk images over HTTP with checksum and signature
//! checks and imports them as they arrive. The module does not print; it reports progress through
//! callbacks and returns typed errors.

pub mod pull;
