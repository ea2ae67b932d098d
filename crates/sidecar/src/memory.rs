//! Giving memory back to the system between scans.
//!
//! glibc's allocator keeps what a scan freed (its listing, batch results, a state load's
//! buffers) in its arenas, and an idle sidecar would hold its busiest moment's memory for the
//! hour until the next scan: 116 MiB after committing 100,000 small files, for a state of
//! about 12 MiB. `malloc_trim` returns the free pages of every arena; it is called once after
//! each scan, on a blocking thread (it walks the heap: milliseconds for a large one).
//! Measured in BENCHMARKS.md ("memory").
//!
//! What stays resident after that is mostly the state itself and the pages of the binary that
//! ran once: a sidecar over 100,000 files kept 10.6 MiB of file-backed pages (9.1 MiB of them
//! its own code and read-only data) beside a 9.2 MiB state. Once no scan has run for
//! [`IDLE_AFTER`], those pages are handed back too (`MADV_PAGEOUT`): the kernel drops the ones
//! no other process maps, and the next scan reads back the few it runs. Measured in
//! BENCHMARKS.md ("An idle sidecar").
//!
//! glibc also gives threads that allocate at once arenas of their own, each with its own lock
//! and free memory: enough of them that the threads reading files do not wait for each other's
//! allocations ([`tune_allocator`]). A sidecar that keeps running turns off the threads' own
//! caches of freed blocks, which `malloc_trim` cannot return
//! ([`restart_without_thread_caches`]).

use std::time::Duration;

use scanner_core::ScanStatus;
use tokio::sync::watch;

/// How long the scanner must have been quiet (no scan, no batch, nothing pending that changed)
/// before the pages of the binary are handed back. Scans closer together than this (an emitter
/// that keeps writing, file-system events) never pay for reading the code back; a sidecar
/// scanning once a minute or an hour pays it once per scan, a few milliseconds.
pub const IDLE_AFTER: Duration = Duration::from_secs(30);

/// After each completed scan (and once the start-up's state load is done), gives the memory
/// freed meanwhile back to the system, and the binary's pages once the scanner has been quiet
/// for [`IDLE_AFTER`]. Ends when the scanner is gone.
pub async fn trim_after_scans(mut status: watch::Receiver<ScanStatus>) {
    let mut scans = None;
    let mut paged_out = false;
    loop {
        let current = status.borrow_and_update().scans;
        if scans != Some(current) {
            scans = Some(current);
            paged_out = false;
            // A scan's end is followed by its last events and the outputs' drop: a moment later
            // the memory is free.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
        let changed = if paged_out {
            status.changed().await
        } else {
            match tokio::time::timeout(IDLE_AFTER, status.changed()).await {
                Ok(changed) => changed,
                Err(_quiet) => {
                    paged_out = true;
                    let _ = tokio::task::spawn_blocking(page_out_code).await;
                    continue;
                }
            }
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Sets glibc's allocator for Gleaner's work. Call it first thing, before any thread starts.
///
/// - **Every allocation of 1 MiB or more** (the state's buffers, a batch's output) comes from its
///   own mapping. glibc raises that threshold by itself once a large block is freed, after
///   which large blocks come from the heap: a freed one leaves a hole that small allocations
///   then share, and `malloc_trim` can return only whole free pages. With the threshold fixed
///   at 1 MiB, 100,000 files committed left 24.4–24.9 MiB resident when idle in three runs,
///   against 26.0–32.6 MiB in three without. (At 256 KiB, `count-by` over one large file took
///   30 % longer: blocks of that size come and go while it runs.)
/// - **Up to [`arenas`] arenas.** Each arena has one lock: a thread that allocates while
///   another holds it sleeps in the kernel. A batch allocates on every thread at once (the
///   readers' results, the walkers' names, the loop's output lines). With the two arenas this
///   used to allow, 100,000 files of 4 KiB put a thread to sleep on an arena's lock about 250
///   times in one `run --once`, and 22–29 times with eight (`perf record -e
///   sched:sched_switch`).
///
/// Tried and not kept: glibc's trim threshold at 16 MiB and the heap grown 4 MiB at a time.
/// Fixing the mmap threshold also fixes the trim threshold at 128 KiB, so what a batch frees at
/// the top of the heap goes back to the kernel at once and the next batch faults it in again.
/// Keeping it saved about 2 % more on small files, but an arena's heap is trimmed only above
/// that threshold, even by `malloc_trim`: the idle sidecar kept 10 MiB more.
///
/// With eight arenas, `run --once` over 100,000 files of 4 KiB took 3–9 % less time in paired
/// rounds, and the idle sidecar held what it held. The peak of `run --once` over 1,000,000
/// files rose by 1–3 MB, to 93–95 MB with the state on local disk (`BENCHMARKS.md`, "The
/// allocator's arenas"; with the state in S3 that peak is at its 100 MiB goal with two arenas
/// or eight: "Nothing new over 1,000,000 files with the state in S3").
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointer; called before any other thread exists, it cannot
    // race with an allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(
            libc::M_ARENA_MAX,
            i32::try_from(arenas()).unwrap_or(i32::MAX),
        );
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// glibc's tunable for how many freed blocks of each size class (up to 1 KiB) a thread keeps
/// for itself, outside every arena (seven by default).
const THREAD_CACHE_TUNABLE: &str = "glibc.malloc.tcache_count";

/// Starts this program again in place, with glibc's per-thread caches of freed blocks off:
/// `exec` of `/proc/self/exe` with the same arguments and process ID, and
/// `glibc.malloc.tcache_count=0` added to `GLIBC_TUNABLES`. Call it for a process that keeps
/// running (a watching sidecar), first thing, before any thread starts. Returns when the
/// environment already sets that tunable (the restarted process, or a user who chose a
/// count: theirs is kept) with `None`, and when the `exec` failed (a sandbox that forbids it,
/// no `/proc`) with the error: the process then goes on with the caches.
///
/// glibc reads its tunables only when a program starts, and has no `mallopt` for these
/// caches. Each thread that frees a block keeps up to seven of each size, and `malloc_trim`
/// cannot return them: they count as in use. Scattered over the arenas, they also keep the
/// pages around them resident. Under a steady emitter, the readers' threads take turns with
/// files of every size, so the caches filled over hours: RSS rose by slower and slower steps,
/// 16.5 → 24.5 MiB in 135 minutes, still +0.8 MiB an hour at the end. With the caches off, it
/// was flat from the first minute at 16.7 MiB (median), for the same CPU per GiB
/// (`BENCHMARKS.md`, "The threads' caches of freed blocks"). `run --once` keeps them: it
/// exits before they matter, and `grep` over many small files took 1.5 % longer without.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn restart_without_thread_caches() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let tunables = without_thread_caches(std::env::var_os("GLIBC_TUNABLES").as_deref())?;
    let mut args = std::env::args_os();
    let program = args.next()?;
    Some(
        std::process::Command::new("/proc/self/exe")
            .arg0(program)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec(),
    )
}

/// Other C libraries have no such caches to turn off.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn restart_without_thread_caches() -> Option<std::io::Error> {
    None
}

/// `GLIBC_TUNABLES` with the threads' caches off, or `None` when `current` already sets how
/// many blocks they keep. Tunables are `name=value` pairs separated by colons.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn without_thread_caches(current: Option<&std::ffi::OsStr>) -> Option<std::ffi::OsString> {
    let current = current.unwrap_or_default();
    let sets_it = current
        .as_encoded_bytes()
        .split(|&byte| byte == b':')
        .any(|tunable| {
            tunable.split(|&byte| byte == b'=').next() == Some(THREAD_CACHE_TUNABLE.as_bytes())
        });
    if sets_it {
        return None;
    }
    let mut tunables = current.to_os_string();
    if !tunables.is_empty() {
        tunables.push(":");
    }
    tunables.push(THREAD_CACHE_TUNABLE);
    tunables.push("=0");
    Some(tunables)
}

/// How many arenas the allocator may make: one for each thread that allocates while files are
/// read (a reader and a walker per core, the batch loop, the runtime's threads), and at least
/// eight. glibc's own limit is eight per core; it makes a new arena only for a thread that
/// finds its arena locked, so fewer threads make fewer.
fn arenas() -> usize {
    scanner_core::cores().saturating_mul(4).max(8)
}

/// How many threads the async runtime's blocking pool may have, for `workers` files processed
/// at once: twice the readers (a batch's readers may still be returning while the next
/// batch's start), and [`BLOCKING_SPARE`] for the rest. Tasks beyond wait for a thread.
///
/// Without a bound the pool only grew. tokio wakes its idle blocking threads in turn, so under
/// steady work none stays idle for its keep-alive, and the pool keeps the most threads it
/// ever ran at once: a sidecar under a steady emitter went from 9 threads to 40 in an hour,
/// the jump to 40 right after a snapshot's removals, each thread keeping its stack and its
/// allocator caches (about 1 MiB for those 18; `BENCHMARKS.md`, "An hour under the steady
/// emitter"). No blocking task of Gleaner's waits for another one, so a queue cannot stall
/// them: the walk runs on scoped threads of its own, and a decoder waits only for downloads,
/// which run on the runtime.
pub fn blocking_threads(workers: usize) -> usize {
    workers.saturating_mul(2).saturating_add(BLOCKING_SPARE)
}

/// Blocking threads beyond the readers: for the survey, the cleanup, the snapshot's fold, the
/// memory's release and the local store's calls (10 removals at once in `object_store`'s
/// `delete_stream`).
const BLOCKING_SPARE: usize = 16;

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

/// Asks the kernel to reclaim the resident pages of every read-only file mapping of this
/// process (the binary's code and constants, the C library's where the binary is dynamic).
/// The kernel skips pages that another process maps too (a shared C library), and the pages
/// are clean, so nothing is written: the next scan faults back in what it runs. Returns how
/// many mappings were advised; a kernel without `MADV_PAGEOUT` (before 5.4) or a sandbox that
/// refuses it leaves the pages resident, which is only memory.
pub fn page_out_code() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let before = resident_file_kib();
    let advised = read_only_file_mappings(&maps)
        .filter(|&(start, end)| advise_page_out(start, end))
        .count();
    tracing::debug!(
        advised,
        resident_file_kib_before = before,
        resident_file_kib_after = resident_file_kib(),
        "idle: handed the binary's pages back"
    );
    advised
}

/// The address ranges of the read-only mappings of files in a `/proc/PID/maps` text. Writable
/// mappings are left alone: pages written to are anonymous copies, which would need swap.
fn read_only_file_mappings(maps: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        let inode = fields.nth(2)?;
        let path = fields.next()?;
        if perms.starts_with("r") && !perms.contains('w') && inode != "0" && path.starts_with('/') {
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start < end).then_some((start, end))
        } else {
            None
        }
    })
}

#[cfg(target_os = "linux")]
fn advise_page_out(start: usize, end: usize) -> bool {
    // SAFETY: the range is a whole mapping of this process, read from /proc/self/maps, and
    // MADV_PAGEOUT only changes where its clean pages live, never their contents: a page the
    // process touches afterwards is read back from the file.
    #[allow(unsafe_code)]
    let result =
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
    result == 0
}

#[cfg(not(target_os = "linux"))]
fn advise_page_out(_start: usize, _end: usize) -> bool {
    false
}

/// `RssFile` of this process in KiB, for the log line (0 where it cannot be read).
fn resident_file_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("RssFile:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_caches_are_turned_off_beside_other_tunables_unless_already_set() {
        let tunables = |current: Option<&str>| {
            without_thread_caches(current.map(std::ffi::OsStr::new))
                .map(|t| t.into_string().unwrap())
        };
        let off = "glibc.malloc.tcache_count=0";
        assert_eq!(tunables(None).as_deref(), Some(off));
        assert_eq!(tunables(Some("")).as_deref(), Some(off));
        assert_eq!(
            tunables(Some("glibc.malloc.perturb=85")).as_deref(),
            Some("glibc.malloc.perturb=85:glibc.malloc.tcache_count=0")
        );
        // A count already set, alone or among others, is the user's.
        assert_eq!(tunables(Some("glibc.malloc.tcache_count=7")), None);
        assert_eq!(
            tunables(Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")),
            None
        );
        // Only the exact name counts: another tcache tunable does not set the count.
        assert_eq!(
            tunables(Some("glibc.malloc.tcache_count_max=1")).as_deref(),
            Some("glibc.malloc.tcache_count_max=1:glibc.malloc.tcache_count=0")
        );
    }

    #[test]
    fn only_read_only_mappings_of_files_are_chosen() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234    /usr/bin/gleaner
55d0c0100000-55d0c0900000 r-xp 00100000 fd:01 1234    /usr/bin/gleaner
55d0c0900000-55d0c0a00000 rw-p 00900000 fd:01 1234    /usr/bin/gleaner
55d0c1000000-55d0c2000000 rw-p 00000000 00:00 0       [heap]
7f0000000000-7f0000001000 r--p 00000000 00:00 0
7f0000002000-7f0000003000 r-xp 00000000 00:00 0       [vdso]
7f0000004000-7f0000005000 ---p 00000000 fd:01 99      /usr/lib/libc.so.6
7f0000006000-7f0000008000 r-xp 00000000 fd:01 99      /usr/lib/libc.so.6
";
        let chosen: Vec<_> = read_only_file_mappings(maps).collect();
        assert_eq!(
            chosen,
            [
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0900000),
                (0x7f0000006000, 0x7f0000008000),
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn paging_out_gives_back_resident_pages_of_the_binary() {
        // Run through a good part of this test binary's code first, so that it is resident.
        // The other tests of this binary run at the same time, each in its own process under
        // nextest, and the kernel keeps the pages that another process maps: try again until
        // they have ended (each takes well under a second).
        let mut tries = Vec::new();
        let handed_back = (0..100).any(|_| {
            let before = resident_file_kib();
            assert!(before > 0, "RssFile should be readable");
            assert!(page_out_code() > 0, "no mapping could be advised");
            let after = resident_file_kib();
            tries.push((before, after));
            after < before || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        });
        assert!(
            handed_back,
            "RssFile (before, after) KiB: {tries:?}: nothing was handed back"
        );
    }
}
