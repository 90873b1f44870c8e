//! The one thread-count policy. Work that keeps a core busy (compressing, decompressing,
//! decoding clusters) gets one thread per core; work that mostly waits in the kernel (creating
//! and copying files, whose system calls block on the file system) gets twice that, so a core
//! is not idle while one thread waits. Both are capped: past 8 cores a single tree or archive
//! stops scaling, and more threads only add memory and contention.

/// Threads for CPU-bound work: one per core, 1 to 8.
pub(crate) fn cpu_workers() -> usize {
    cores().clamp(1, 8)
}

/// Threads for work that blocks in file-system calls: two per core, 4 to 16.
pub(crate) fn io_workers() -> usize {
    (cores() * 2).clamp(4, 16)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
