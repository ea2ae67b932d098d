//! Giving memory back to the system between scans.
//!
//! glibc's allocator keeps what a scan freed (its listing, batch results, a state load's
//! buffers) in its arenas, and an idle sidecar would hold its busiest moment's memory for the
//! hour until the next scan: 116 MiB after committing 100,000 small files, for a state of
//! about 12 MiB. `malloc_trim` returns the free pages of every arena; it is called once after
//! each scan, on a blocking thread (it walks the heap: milliseconds for a large one).
//! Measured in BENCHMARKS.md ("memory").
//!
//! glibc also gives every thread that allocates its own arena (up to eight per core): each one
//! keeps its own free memory and fragments on its own. Two arenas hold the same state in
//! markedly less memory, and Gleaner's threads allocate little while they read files.

use std::time::Duration;

use scanner_core::ScanStatus;
use tokio::sync::watch;

/// After each completed scan (and once the start-up's state load is done), gives the memory
/// freed meanwhile back to the system. Ends when the scanner is gone.
pub async fn trim_after_scans(mut status: watch::Receiver<ScanStatus>) {
    let mut scans = None;
    loop {
        let current = status.borrow_and_update().scans;
        if scans != Some(current) {
            scans = Some(current);
            // A scan's end is followed by its last events and the outputs' drop: a moment later
            // the memory is free.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Limits glibc's allocator to two arenas, and serves every allocation of 1 MiB or more (the
/// state's buffers, a batch's output) from its own mapping. Call it first thing, before any
/// thread starts.
///
/// glibc raises that threshold by itself once a large block is freed, after which large
/// blocks come from the heap: a freed one leaves a hole that small allocations then share,
/// and `malloc_trim` can return only whole free pages. With the threshold fixed at 1 MiB,
/// 100,000 files committed left 24.4–24.9 MiB resident when idle in three runs, against
/// 26.0–32.6 MiB in three without. (At 256 KiB, `count-by` over one large file took 30 % longer:
/// blocks of that size come and go while it runs.)
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointer; called before any other thread exists, it cannot
    // race with an allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Returns the allocator's free memory to the system, where the C library can.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and only rearranges the allocator's own free
    // lists under its locks; it is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
