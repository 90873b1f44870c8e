//! Tar archives with their full metadata: reading, writing, compression detection and coding,
//! and the safe extractor used by import-tar, bootstrap and pull. It does not know the store.
