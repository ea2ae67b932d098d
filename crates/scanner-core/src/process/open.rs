//! Opening a planned file: safely (no link followed, never blocking on a FIFO), and only if it
//! is still the very file that was listed.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use state_store::PlannedFile;

use super::{Failure, FailureKind, ResourceError, Unprocessable};
use crate::listing::io_reason;

/// Opens `path` for reading without following a symbolic link in its last component and
/// without blocking: a FIFO swapped in for a file cannot hang the worker. Never `mmap`ed by
/// anyone: the emitter may truncate files under us, which would kill the process with SIGBUS.
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// The directory of the last file a thread opened: the files of a batch come in path order, so
/// most share their directory with the one before, and opening them relative to it spares the
/// kernel the lookup of every component of the whole path (about a tenth of the work for a
/// small file).
struct OpenDirectory {
    root: PathBuf,
    dir: Vec<u8>,
    handle: OwnedFd,
}

thread_local! {
    static OPEN_DIRECTORY: RefCell<Option<OpenDirectory>> = const { RefCell::new(None) };
}

/// Closes the directory this thread keeps open, if any: workers call it when their batch is
/// done ([`super::end_of_work`]), so that nothing stays open between scans.
pub(crate) fn close_directory() {
    OPEN_DIRECTORY.with_borrow_mut(Option::take);
}

/// [`open`] of `rel` below `root`, relative to its directory, which stays open for the next
/// file of the same directory. Intermediate components are followed as a whole path would be;
/// the last one never is.
fn open_in_directory(root: &Path, rel: &[u8]) -> std::io::Result<File> {
    let (dir, name) = match memchr::memrchr(b'/', rel) {
        Some(slash) => (&rel[..slash], &rel[slash + 1..]),
        None => (&b""[..], rel),
    };
    OPEN_DIRECTORY.with_borrow_mut(|cached| {
        let open = match cached {
            Some(open) if open.dir == dir && open.root == root => open,
            _ => {
                // The previous one is closed first: never two held at once.
                *cached = None;
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let handle =
                    rustix::fs::open(root.join(OsStr::from_bytes(dir)), flags, Mode::empty())?;
                cached.insert(OpenDirectory {
                    root: root.to_path_buf(),
                    dir: dir.to_vec(),
                    handle,
                })
            }
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(
            &open.handle,
            OsStr::from_bytes(name),
            flags,
            Mode::empty(),
        )?))
    })
}

/// Opens the planned file below `root` and checks that it is the file that was listed (same
/// inode and birth time, still a regular file) and no shorter than planned. Returns the open
/// file and its status change time (ctime) as it was opened, before any byte is read: the
/// output line records it, so that `gleaner state repair` can tell this file from one written
/// over it later (see [`crate::repair`]).
///
/// A problem of the file is a [`Failure`]; a shortage of the process (descriptors, memory) is
/// a [`ResourceError`]: the batch is retried rather than the file failed for it.
pub(super) fn open_planned(root: &Path, file: &PlannedFile) -> Result<(File, i64), Unprocessable> {
    let handle =
        open_in_directory(root, file.path.as_bytes()).map_err(|e| open_failure(e, file))?;
    let meta = handle
        .metadata()
        .map_err(|e| Failure::new(FailureKind::Io, format!("cannot examine: {e}")))?;
    if !meta.is_file() {
        return Err(Failure::new(FailureKind::Replaced, "is no longer a regular file").into());
    }
    let reborn = file.btime_ns != 0 && {
        let now = crate::listing::btime_ns(&meta);
        now != 0 && now != file.btime_ns
    };
    if (file.inode != 0 && meta.ino() != file.inode) || reborn {
        return Err(Failure::new(
            FailureKind::Replaced,
            format!(
                "was replaced by another file after it was listed (inode {} is now {})",
                file.inode,
                meta.ino()
            ),
        )
        .into());
    }
    if meta.len() < file.size {
        return Err(Failure::new(
            FailureKind::Truncated,
            format!(
                "shrank from {} to {} bytes after it was listed",
                file.size,
                meta.len()
            ),
        )
        .into());
    }
    Ok((handle, crate::listing::ctime_ns(&meta)))
}

/// What an error opening a planned file means: a failure of the file, by its errno, or a
/// shortage of the process.
fn open_failure(e: std::io::Error, file: &PlannedFile) -> Unprocessable {
    let errno = Errno::from_io_error(&e);
    let failure = |kind, reason: &str| Failure::new(kind, reason).into();
    match e.kind() {
        ErrorKind::NotFound => failure(FailureKind::Vanished, "vanished before it could be read"),
        _ if errno == Some(Errno::LOOP) => {
            failure(FailureKind::Replaced, "was replaced by a symbolic link")
        }
        ErrorKind::PermissionDenied => failure(FailureKind::PermissionDenied, "permission denied"),
        _ if matches!(errno, Some(Errno::MFILE | Errno::NFILE | Errno::NOMEM)) => {
            Unprocessable::Resources(ResourceError {
                path: file.path.to_string(),
                source: e,
            })
        }
        _ => Failure::new(
            FailureKind::Io,
            format!("cannot open: {}", io_reason(Some(&e))),
        )
        .into(),
    }
}
