//! Opening a planned file: safely (no link followed, never blocking on a FIFO), and only if it
//! is still the very file that was listed.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use state_store::PlannedFile;

use super::{Failure, FailureKind, ResourceError, Unprocessable};
use crate::listing::{absolute, io_reason};

/// Opens `path` for reading without following a symbolic link in its last component and
/// without blocking: a FIFO swapped in for a file cannot hang the worker. Never `mmap`ed by
/// anyone: the emitter may truncate files under us, which would kill the process with SIGBUS.
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// Opens the planned file below `root` and checks that it is the file that was listed (same
/// inode and birth time, still a regular file) and no shorter than planned.
///
/// A problem of the file is a [`Failure`]; a shortage of the process (descriptors, memory) is
/// a [`ResourceError`]: the batch is retried rather than the file failed for it.
pub(super) fn open_planned(root: &Path, file: &PlannedFile) -> Result<File, Unprocessable> {
    let handle = open(&absolute(root, &file.path)).map_err(|e| open_failure(e, file))?;
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
    Ok(handle)
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
