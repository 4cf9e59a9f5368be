//! Keeps the agent's heap to what it uses: anonymous memory, the part of
//! its resident set that is the agent's own (its code and libc are file
//! pages, shared with every other process running them and kept by the
//! page cache either way).
//!
//! - [`limit_malloc_arenas`], before the agent's runtimes start: glibc
//!   gives each thread that allocates an arena of its own (the blocking
//!   threads for disk writes and system checks come and go, and each
//!   arena keeps its free memory); one arena serves an agent whose work is
//!   a few threads' at most.
//! - [`trim_heap_after_start_up`]: start-up (config parsing, loading the
//!   KV store and the index from disk, the first exchanges) allocates
//!   more than the agent keeps; `malloc_trim` hands the free pages back to
//!   the system 5 s and 60 s after start.
//!
//! Until 0.2.0 this module also dropped the agent's own code pages from
//! its page tables (`MADV_DONTNEED` on the executable's and libc's clean
//! mappings). That freed no memory: the pages stayed in the page cache (and
//! a cgroup still charged them), `VmRSS` only stopped counting them until
//! they faulted back, and code unmapped that way is what memory pressure
//! evicts first, so failure handling would take major faults exactly when
//! the host is stressed. It is gone; the memory figures count what the
//! process holds (`RssAnon`, `PSS`, `USS`; see docs/benchmarks.md).

/// Caps glibc's malloc arenas at one per process (no-op elsewhere).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// When (after start-up) [`trim_heap_after_start_up`] returns free heap
/// pages: once the agent has loaded its state and made its first join
/// attempt, and again once joining is long over.
pub const TRIM_AT: [std::time::Duration; 2] = [
    std::time::Duration::from_secs(5),
    std::time::Duration::from_secs(60),
];

/// Returns free heap pages to the system at [`TRIM_AT`]. Spawned once by
/// the daemon; ends after the last.
pub async fn trim_heap_after_start_up() {
    let started = tokio::time::Instant::now();
    for at in TRIM_AT {
        tokio::time::sleep_until(started + at).await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
