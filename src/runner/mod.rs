//! Running a command in, or booting, a root filesystem in Linux namespaces: a run
//! specification becomes a plain-data plan which one place executes. It does not know the store.
