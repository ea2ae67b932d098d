//! The least that Gleaner's system calls on many small files can cost, and whether io_uring
//! lowers it (issue 26; results in BENCHMARKS.md). Nothing but the calls: no state, no output,
//! no plan. Walks DIR's subdirectories on THREADS threads (each takes the next directory, as
//! Gleaner's walk does) and, for every file, makes the calls of MODE and counts its newlines:
//!
//! - `std3`: openat, read, close (the calls ripgrep makes for a file);
//! - `std4`: statx by name, openat, read, close;
//! - `std5`: statx by name, openat, fstat, read, close (the calls Gleaner makes for a new file:
//!   the walk's statx for the plan, the worker's fstat to check that it opened the file listed);
//! - `survey5`: the calls of `std5` in two passes, as Gleaner makes them: every file's statx
//!   first (the survey, which the oldest-first plan needs), then open, fstat, read and close;
//! - `uring3`: openat + read + close as one linked chain per file, DEPTH files (default 32) per
//!   submission, into direct descriptors (no descriptor table);
//! - `mixed4`: statx by name as a system call, then openat + read + close as in `uring3`;
//! - `uring4`: statx + openat + read + close, all four through io_uring.
//!
//! Built outside Gleaner's workspace. `run.sh` runs every mode, ripgrep and `gleaner run
//! --once` in alternated rounds.
//!
//! usage: floor-probe MODE DIR THREADS [DEPTH]
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use io_uring::{IoUring, opcode, squeue, types};

/// Every file of the benchmark's tree fits in one read of this size.
const BUF: usize = 64 * 1024;

fn count(buf: &[u8]) -> u64 {
    buf.iter().filter(|&&b| b == b'\n').count() as u64
}

fn statx_by_name(dirfd: i32, name: &CString) -> libc::statx {
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            dirfd,
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut st,
        )
    };
    assert_eq!(rc, 0);
    st
}

/// The first pass of `survey5`: the walk's statx of every file of `dir`, nothing read.
fn survey_dir(dir: &PathBuf) -> Vec<CString> {
    let d = std::fs::File::open(dir).unwrap();
    let names: Vec<CString> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| CString::new(e.unwrap().file_name().as_bytes()).unwrap())
        .collect();
    for name in &names {
        std::hint::black_box(statx_by_name(d.as_raw_fd(), name));
    }
    names
}

/// The second pass of `survey5`: open, fstat, read and close every file surveyed.
fn read_surveyed(dir: &PathBuf, names: &[CString], buf: &mut Vec<u8>) -> (u64, u64) {
    let d = std::fs::File::open(dir).unwrap();
    let mut lines = 0;
    for name in names {
        let fd = unsafe {
            libc::openat(
                d.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0);
        let mut f = unsafe { <std::fs::File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
        std::hint::black_box(f.metadata().unwrap());
        buf.clear();
        f.read_to_end(buf).unwrap();
        lines += count(buf);
    }
    (names.len() as u64, lines)
}

fn std_dir(mode: &str, dir: &PathBuf, buf: &mut Vec<u8>) -> (u64, u64) {
    let d = std::fs::File::open(dir).unwrap();
    let dirfd = d.as_raw_fd();
    let (mut files, mut lines) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = CString::new(e.file_name().as_bytes()).unwrap();
        if mode != "std3" {
            std::hint::black_box(statx_by_name(dirfd, &name));
        }
        let fd = unsafe { libc::openat(dirfd, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0);
        let mut f = unsafe { <std::fs::File as std::os::unix::io::FromRawFd>::from_raw_fd(fd) };
        if mode == "std5" {
            std::hint::black_box(f.metadata().unwrap());
        }
        buf.clear();
        f.read_to_end(buf).unwrap();
        lines += count(buf);
        files += 1;
    }
    (files, lines)
}

struct Slot {
    name: CString,
    buf: Vec<u8>,
    st: libc::statx,
    read: i32,
}

fn uring_dir(ring: &mut IoUring, mode: &str, depth: usize, dir: &PathBuf) -> (u64, u64) {
    let with_statx = mode == "uring4";
    let d = std::fs::File::open(dir).unwrap();
    let dirfd = d.as_raw_fd();
    let names: Vec<CString> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| CString::new(e.unwrap().file_name().as_bytes()).unwrap())
        .collect();
    let mut slots: Vec<Slot> = (0..depth)
        .map(|_| Slot {
            name: CString::default(),
            buf: vec![0; BUF],
            st: unsafe { std::mem::zeroed() },
            read: 0,
        })
        .collect();
    let (mut files, mut lines) = (0, 0);
    for chunk in names.chunks(depth) {
        let mut ops = 0;
        for (i, name) in chunk.iter().enumerate() {
            let slot = &mut slots[i];
            slot.name = name.clone();
            let ud = (i as u64) << 8;
            if mode == "mixed4" {
                slot.st = statx_by_name(dirfd, &slot.name);
            }
            let mut sq = ring.submission();
            if with_statx {
                let e = opcode::Statx::new(
                    types::Fd(dirfd),
                    slot.name.as_ptr(),
                    &mut slot.st as *mut libc::statx as *mut types::statx,
                )
                .flags(libc::AT_SYMLINK_NOFOLLOW)
                .mask(libc::STATX_BASIC_STATS)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(ud | 1);
                unsafe { sq.push(&e).unwrap() };
                ops += 1;
            }
            // A direct descriptor is never inherited: O_CLOEXEC is refused with EINVAL.
            let open = opcode::OpenAt::new(types::Fd(dirfd), slot.name.as_ptr())
                .flags(libc::O_RDONLY)
                .file_index(Some(
                    types::DestinationSlot::try_from_slot_target(i as u32).unwrap(),
                ))
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(ud | 2);
            let read = opcode::Read::new(types::Fixed(i as u32), slot.buf.as_mut_ptr(), BUF as u32)
                .offset(0)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(ud | 3);
            let close = opcode::Close::new(types::Fixed(i as u32))
                .build()
                .user_data(ud | 4);
            unsafe {
                sq.push(&open).unwrap();
                sq.push(&read).unwrap();
                sq.push(&close).unwrap();
            }
            ops += 3;
        }
        ring.submit_and_wait(ops).unwrap();
        let mut seen = 0;
        for cqe in ring.completion() {
            let i = (cqe.user_data() >> 8) as usize;
            match cqe.user_data() & 0xff {
                3 => slots[i].read = cqe.result(),
                op => assert!(cqe.result() >= 0, "op {op} failed: {}", cqe.result()),
            }
            seen += 1;
        }
        assert_eq!(seen, ops);
        for slot in &slots[..chunk.len()] {
            assert!(
                slot.read >= 0 && (slot.read as usize) < BUF,
                "read {}",
                slot.read
            );
            if mode != "uring3" {
                assert_eq!(slot.st.stx_size as i32, slot.read);
            }
            lines += count(&slot.buf[..slot.read as usize]);
            files += 1;
        }
    }
    (files, lines)
}

/// `survey5`: every directory surveyed on THREADS threads first, then every file read, as
/// Gleaner's plan (oldest first) needs every file's age before the first batch.
fn survey_then_read(dirs: &[PathBuf], threads: usize) {
    let per = dirs.len().div_ceil(threads);
    let surveyed: Vec<Vec<Vec<CString>>> = std::thread::scope(|s| {
        let hs: Vec<_> = dirs
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(survey_dir).collect::<Vec<_>>()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (files, lines) = std::thread::scope(|s| {
        let hs: Vec<_> = dirs
            .chunks(per)
            .zip(&surveyed)
            .map(|(part, names)| {
                s.spawn(move || {
                    let mut buf = Vec::with_capacity(BUF);
                    part.iter()
                        .zip(names)
                        .map(|(d, n)| read_surveyed(d, n, &mut buf))
                        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    println!("survey5: {files} files, {lines} lines");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].clone();
    let root = PathBuf::from(&args[2]);
    let threads: usize = args[3].parse().unwrap();
    let depth: usize = args.get(4).map_or(32, |d| d.parse().unwrap());
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if mode == "survey5" {
        return survey_then_read(&dirs, threads);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (files, lines) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (mode, dirs, next) = (&mode, &dirs, &next);
                s.spawn(move || {
                    let mut ring = (mode.starts_with("uring") || mode == "mixed4").then(|| {
                        let ring = IoUring::new(4 * depth as u32).unwrap();
                        ring.submitter()
                            .register_files_sparse(depth as u32)
                            .unwrap();
                        ring
                    });
                    let mut buf = Vec::with_capacity(BUF);
                    let (mut files, mut lines) = (0, 0);
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(dir) = dirs.get(k) else { break };
                        let (f, l) = match ring.as_mut() {
                            Some(r) => uring_dir(r, mode, depth, dir),
                            None => std_dir(mode, dir, &mut buf),
                        };
                        files += f;
                        lines += l;
                    }
                    (files, lines)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    println!("{mode}: {files} files, {lines} lines");
}
