//! The least that Gleaner's system calls on many small files can cost, and whether io_uring
//! lowers it (issue 26; results in BENCHMARKS.md). Nothing but the calls: no state, no output,
//! no plan. Walks DIR's subdirectories on THREADS threads (each takes the next directory, as
//! Gleaner's walk does), reads each directory once (`getdents64`), and for every file makes
//! the calls of MODE and counts its newlines. A file is read with one `read` of at most 64 KiB,
//! as Gleaner reads a small file whose size it knows (the probe checks that it got all of it).
//!
//! - `std3`: `openat`, `read`, `close`;
//! - `std4`: `statx` by name, `openat`, `read`, `close`;
//! - `std5`: `statx` by name, `openat`, `statx` of the open file (`fstat`), `read`, `close`:
//!   the calls Gleaner makes for a new file (the walk's `statx` for the plan, the worker's
//!   `fstat` to check that the file it opened is the file listed);
//! - `survey5`: the calls of `std5` in two passes, as Gleaner makes them: every file's `statx`
//!   first (the survey, which the oldest-first plan needs), then the other four;
//! - `uring3`: `openat` + `read` + `close` as one linked io_uring chain per file, DEPTH files
//!   (default 32) per submission, into direct descriptors (no descriptor table);
//! - `mixed4`: `statx` by name as a system call, then the chain of `uring3`;
//! - `uring4`: `statx` + `openat` + `read` + `close`, all four through io_uring.
//!
//! Built outside Gleaner's workspace. `run.sh` runs every mode, ripgrep and `gleaner run
//! --once` in alternated rounds.
//!
//! usage: floor-probe MODE DIR THREADS [DEPTH]
use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use io_uring::{IoUring, opcode, squeue, types};

/// Every file of the benchmark's tree fits in one read of this size.
const BUF: usize = 64 * 1024;

fn count(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The names of `dir`'s entries, and `dir` open for the calls relative to it.
fn names_of(dir: &Path) -> (File, Vec<CString>) {
    let names = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| CString::new(e.unwrap().file_name().as_bytes()).unwrap())
        .collect();
    (File::open(dir).unwrap(), names)
}

/// `statx` of `name` in `dirfd`, or of `dirfd` itself when `name` is empty (an `fstat`, as
/// Rust's `File::metadata` makes it).
fn statx(dirfd: RawFd, name: &CStr) -> libc::statx {
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    let rc = unsafe { libc::statx(dirfd, name.as_ptr(), flags, mask, &mut st) };
    assert_eq!(rc, 0, "statx {name:?}");
    st
}

/// `openat`, an `fstat` if asked, one `read` and `close` of `name` in `dirfd`: its lines.
fn read_file(dirfd: RawFd, name: &CStr, fstat: bool, buf: &mut [u8]) -> u64 {
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "openat {name:?}");
    if fstat {
        std::hint::black_box(statx(fd, c""));
    }
    let read = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        read >= 0 && (read as usize) < buf.len(),
        "read {name:?}: {read}"
    );
    unsafe { libc::close(fd) };
    count(&buf[..read as usize])
}

/// Runs `work` on every directory of `dirs`, on `threads` threads that each take the next
/// directory, each with its own `init()` state. Returns what `work` gave for each directory,
/// in `dirs`' order.
fn on_threads<S, T: Send>(
    dirs: &[PathBuf],
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize, &Path) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..dirs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut state = init();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(dir) = dirs.get(k) else { break };
                    let done = work(&mut state, k, dir);
                    results.lock().unwrap()[k] = Some(done);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    results.into_iter().map(Option::unwrap).collect()
}

/// `std3`, `std4` and `std5` over one directory: (files, lines).
fn std_dir(mode: &str, dir: &Path, buf: &mut [u8]) -> (u64, u64) {
    let (d, names) = names_of(dir);
    let mut lines = 0;
    for name in &names {
        if mode != "std3" {
            std::hint::black_box(statx(d.as_raw_fd(), name));
        }
        lines += read_file(d.as_raw_fd(), name, mode == "std5", buf);
    }
    (names.len() as u64, lines)
}

/// `survey5`: every directory surveyed first (names and a `statx` of each file), then every
/// file read with the other four calls: (files, lines).
fn survey_then_read(dirs: &[PathBuf], threads: usize) -> (u64, u64) {
    let surveyed = on_threads(
        dirs,
        threads,
        || (),
        |_, _, dir| {
            let (d, names) = names_of(dir);
            for name in &names {
                std::hint::black_box(statx(d.as_raw_fd(), name));
            }
            names
        },
    );
    let counts = on_threads(
        dirs,
        threads,
        || vec![0; BUF],
        |buf, k, dir| {
            let d = File::open(dir).unwrap();
            let lines: u64 = surveyed[k]
                .iter()
                .map(|name| read_file(d.as_raw_fd(), name, true, buf))
                .sum();
            (surveyed[k].len() as u64, lines)
        },
    );
    sum(counts)
}

/// One file in flight through io_uring: what its operations write into stays here until they
/// have all completed.
struct Slot {
    name: CString,
    buf: Vec<u8>,
    st: libc::statx,
    read: i32,
}

/// Queues one file's chain: [`statx` →] `openat` into direct descriptor `i` → `read` →
/// `close`. A failed `statx` or `openat` cancels the rest; the `close` follows the `read`
/// whatever it returned. Returns the number of operations queued.
fn push_chain(ring: &mut IoUring, i: usize, slot: &mut Slot, dirfd: RawFd, statx: bool) -> usize {
    let data = (i as u64) << 8;
    let mut ops = Vec::with_capacity(4);
    if statx {
        let st = (&mut slot.st as *mut libc::statx).cast::<types::statx>();
        ops.push(
            opcode::Statx::new(types::Fd(dirfd), slot.name.as_ptr(), st)
                .flags(libc::AT_SYMLINK_NOFOLLOW)
                .mask(libc::STATX_BASIC_STATS | libc::STATX_BTIME)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(data | 1),
        );
    }
    let fixed = i as u32;
    let slot_target = types::DestinationSlot::try_from_slot_target(fixed).unwrap();
    // A direct descriptor is never inherited: O_CLOEXEC is refused with EINVAL.
    ops.push(
        opcode::OpenAt::new(types::Fd(dirfd), slot.name.as_ptr())
            .flags(libc::O_RDONLY)
            .file_index(Some(slot_target))
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(data | 2),
    );
    ops.push(
        opcode::Read::new(types::Fixed(fixed), slot.buf.as_mut_ptr(), BUF as u32)
            .offset(0)
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(data | 3),
    );
    ops.push(
        opcode::Close::new(types::Fixed(fixed))
            .build()
            .user_data(data | 4),
    );
    let mut queue = ring.submission();
    for op in &ops {
        // The slot's name, buffer and statx outlive the operations: they are reused only
        // after `collect` has seen every completion.
        unsafe { queue.push(op).unwrap() };
    }
    ops.len()
}

/// Waits for `ops` completions, checks that none failed, and records each read's length.
fn collect(ring: &mut IoUring, slots: &mut [Slot], ops: usize) {
    ring.submit_and_wait(ops).unwrap();
    let mut seen = 0;
    for done in ring.completion() {
        let i = (done.user_data() >> 8) as usize;
        match done.user_data() & 0xff {
            3 => slots[i].read = done.result(),
            op => assert!(done.result() >= 0, "op {op} failed: {}", done.result()),
        }
        seen += 1;
    }
    assert_eq!(seen, ops);
}

/// `uring3`, `mixed4` and `uring4` over one directory: (files, lines).
fn uring_dir(ring: &mut IoUring, slots: &mut [Slot], mode: &str, dir: &Path) -> (u64, u64) {
    let (d, names) = names_of(dir);
    let dirfd = d.as_raw_fd();
    let mut lines = 0;
    for chunk in names.chunks(slots.len()) {
        let mut ops = 0;
        for (i, name) in chunk.iter().enumerate() {
            let slot = &mut slots[i];
            slot.name = name.clone();
            if mode == "mixed4" {
                slot.st = statx(dirfd, name);
            }
            ops += push_chain(ring, i, slot, dirfd, mode == "uring4");
        }
        collect(ring, slots, ops);
        for slot in &slots[..chunk.len()] {
            let read = usize::try_from(slot.read).unwrap();
            assert!(read < BUF, "read {read}");
            if mode != "uring3" {
                assert_eq!(slot.st.stx_size, read as u64);
            }
            lines += count(&slot.buf[..read]);
        }
    }
    (names.len() as u64, lines)
}

/// A ring of `depth` files' chains, with `depth` direct descriptors, and their slots.
fn ring_of(depth: usize) -> (IoUring, Vec<Slot>) {
    let ring = IoUring::new(4 * depth as u32).unwrap();
    ring.submitter()
        .register_files_sparse(depth as u32)
        .unwrap();
    let slots = (0..depth)
        .map(|_| Slot {
            name: CString::default(),
            buf: vec![0; BUF],
            st: unsafe { std::mem::zeroed() },
            read: 0,
        })
        .collect();
    (ring, slots)
}

fn sum(counts: Vec<(u64, u64)>) -> (u64, u64) {
    counts
        .into_iter()
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: floor-probe MODE DIR THREADS [DEPTH]";
    let mode = args.get(1).expect(usage).as_str();
    let root = PathBuf::from(args.get(2).expect(usage));
    let threads: usize = args.get(3).expect(usage).parse().expect(usage);
    let depth: usize = args.get(4).map_or(32, |d| d.parse().expect(usage));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let (files, lines) = match mode {
        "std3" | "std4" | "std5" => sum(on_threads(
            &dirs,
            threads,
            || vec![0; BUF],
            |buf, _, dir| std_dir(mode, dir, buf),
        )),
        "survey5" => survey_then_read(&dirs, threads),
        "uring3" | "mixed4" | "uring4" => sum(on_threads(
            &dirs,
            threads,
            || ring_of(depth),
            |(ring, slots), _, dir| uring_dir(ring, slots, mode, dir),
        )),
        _ => panic!("unknown mode {mode}; {usage}"),
    };
    println!("{mode}: {files} files, {lines} lines");
}
