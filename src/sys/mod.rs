//! Thin safe wrappers over system calls that rustix does not cover safely; the only module
//! with `unsafe`. Each block says which invariant makes it sound.

pub(crate) mod bpf;
pub(crate) mod btrfs;
pub(crate) mod interrupt;
pub(crate) mod loopdev;
pub(crate) mod mount;
pub(crate) mod net;
pub(crate) mod ns;
pub(crate) mod ofd;
pub(crate) mod pidfd;
pub(crate) mod process;
pub(crate) mod pty;
pub(crate) mod seccomp;
pub(crate) mod writeback;
