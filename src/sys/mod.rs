//! Thin safe wrappers over system calls that rustix does not cover safely; the only module
//! with `unsafe`. Each block says which invariant makes it sound.

pub mod bpf;
pub mod btrfs;
pub mod interrupt;
pub mod loopdev;
pub mod mount;
pub mod net;
pub mod ns;
pub mod ofd;
pub mod pidfd;
pub mod process;
pub mod pty;
pub mod seccomp;
pub mod writeback;
