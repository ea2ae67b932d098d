//! Reading one planned file through a processor, on a worker thread.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use state_store::PlannedFile;

use crate::listing::{absolute, io_reason};
use crate::processor::{DynProcessor, ReduceError};

/// How processing one file ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FileOutcome {
    /// The processor's result, and the bytes it read.
    Done {
        /// The processor's result.
        result: serde_json::Value,
        /// Bytes read (the planned range).
        bytes: u64,
    },
    /// The file could not be processed.
    Failed {
        /// A short, stable category, used as a metric label.
        kind: FailureKind,
        /// A description an operator can act on.
        reason: String,
    },
}

/// Categories of per-file failures; each is a value of the `reason` label of
/// `gleaner_files_failed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The file no longer exists.
    Vanished,
    /// Another file (or a link, FIFO, directory) now has its name.
    Replaced,
    /// It became shorter than planned.
    Truncated,
    /// Permission to read it was denied.
    PermissionDenied,
    /// Any other read error.
    Io,
    /// The processor failed or panicked.
    Processor,
}

impl FailureKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Vanished,
        FailureKind::Replaced,
        FailureKind::Truncated,
        FailureKind::PermissionDenied,
        FailureKind::Io,
        FailureKind::Processor,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Vanished => "vanished",
            FailureKind::Replaced => "replaced",
            FailureKind::Truncated => "truncated",
            FailureKind::PermissionDenied => "permission_denied",
            FailureKind::Io => "io",
            FailureKind::Processor => "processor",
        }
    }
}

/// The process, not the file, is short of something (file descriptors, memory): no file should
/// be recorded as failed for it. The batch fails and is retried.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {path}: {source} (the batch will be retried)")]
pub struct ResourceError {
    /// The file that could not be opened, relative to the watch root.
    pub path: String,
    /// The IO error.
    #[source]
    pub source: std::io::Error,
}

/// Processes bytes `start..size` of `file` under `root`. Blocking.
///
/// Never reads past the planned size: a file that grew since it was listed is processed as it
/// was listed, so that a redone batch reads the same bytes. The file is opened without following
/// symbolic links and without blocking (a FIFO swapped in cannot hang the worker), and is checked
/// to be the very file that was listed (same inode and birth time).
///
/// Problems of the file make a [`FileOutcome::Failed`]; a shortage of the process (too many open
/// files, no memory) is a [`ResourceError`] instead.
pub fn process_file(
    root: &Path,
    file: &PlannedFile,
    processor: &DynProcessor,
) -> Result<FileOutcome, ResourceError> {
    let failed = |kind, reason: String| Ok(FileOutcome::Failed { kind, reason });
    let path = absolute(root, &file.path);
    let handle = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return failed(
                FailureKind::Vanished,
                "vanished before it could be read".into(),
            );
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return failed(
                FailureKind::Replaced,
                "was replaced by a symbolic link".into(),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return failed(FailureKind::PermissionDenied, "permission denied".into());
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
            ) =>
        {
            return Err(ResourceError {
                path: file.path.to_string(),
                source: e,
            });
        }
        Err(e) => {
            return failed(
                FailureKind::Io,
                format!("cannot open: {}", io_reason(Some(&e))),
            );
        }
    };
    let meta = match handle.metadata() {
        Ok(meta) => meta,
        Err(e) => return failed(FailureKind::Io, format!("cannot examine: {e}")),
    };
    if !meta.is_file() {
        return failed(FailureKind::Replaced, "is no longer a regular file".into());
    }
    let reborn = file.btime_ns != 0 && {
        let now = crate::listing::btime_ns(&meta);
        now != 0 && now != file.btime_ns
    };
    if (file.inode != 0 && meta.ino() != file.inode) || reborn {
        return failed(
            FailureKind::Replaced,
            format!(
                "was replaced by another file after it was listed (inode {} is now {})",
                file.inode,
                meta.ino()
            ),
        );
    }
    if meta.len() < file.size {
        return failed(
            FailureKind::Truncated,
            format!(
                "shrank from {} to {} bytes after it was listed",
                file.size,
                meta.len()
            ),
        );
    }
    let mut handle = handle;
    if file.start > 0
        && let Err(e) = handle.seek(SeekFrom::Start(file.start))
    {
        return failed(
            FailureKind::Io,
            format!("cannot seek to {}: {e}", file.start),
        );
    }
    let expected = file.size.saturating_sub(file.start);
    Ok(match processor.reduce(&mut handle.take(expected)) {
        Ok((_, read)) if read < expected => FileOutcome::Failed {
            kind: FailureKind::Truncated,
            reason: format!(
                "shrank while being read: expected {expected} bytes from offset {}, got {read}",
                file.start
            ),
        },
        Ok((result, bytes)) => FileOutcome::Done { result, bytes },
        Err(ReduceError::Read { offset, source }) => FileOutcome::Failed {
            kind: FailureKind::Io,
            reason: format!("read failed at offset {}: {source}", file.start + offset),
        },
        Err(e @ ReduceError::Serialise(_)) => FileOutcome::Failed {
            kind: FailureKind::Processor,
            reason: e.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::Stats;
    use std::os::unix::fs::MetadataExt;

    fn planned(root: &Path, name: &str) -> PlannedFile {
        let meta = std::fs::metadata(root.join(name)).unwrap();
        PlannedFile {
            path: name.into(),
            size: meta.len(),
            mtime_ns: 0,
            inode: meta.ino(),
            btime_ns: crate::listing::btime_ns(&meta),
            start: 0,
        }
    }

    #[test]
    fn reads_exactly_the_planned_range() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"one two\nthree\n").unwrap();
        let mut file = planned(dir.path(), "a");
        std::fs::write(dir.path().join("a"), b"one two\nthree\nfour five\n").unwrap();
        let stats = DynProcessor::new(Stats);
        let outcome = process_file(dir.path(), &file, &stats).unwrap();
        let FileOutcome::Done { result, bytes } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(bytes, 14);
        assert_eq!(result["words"], 3);

        file.start = 8;
        let FileOutcome::Done { result, .. } = process_file(dir.path(), &file, &stats).unwrap()
        else {
            panic!()
        };
        assert_eq!(result["bytes"], 6);
    }

    #[test]
    fn a_new_file_under_the_planned_name_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"old\n").unwrap();
        let file = planned(dir.path(), "a");
        // File systems hand the freed inode number to the next file: the birth time tells.
        std::fs::remove_file(dir.path().join("a")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(dir.path().join("a"), b"new\n").unwrap();
        let outcome = process_file(dir.path(), &file, &DynProcessor::new(Stats)).unwrap();
        assert!(
            matches!(
                outcome,
                FileOutcome::Failed {
                    kind: FailureKind::Replaced,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn vanished_truncated_and_replaced_files_fail_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let stats = DynProcessor::new(Stats);
        std::fs::write(dir.path().join("a"), b"0123456789").unwrap();
        let file = planned(dir.path(), "a");

        std::fs::write(dir.path().join("a"), b"01234").unwrap();
        let outcome = process_file(dir.path(), &file, &stats).unwrap();
        assert!(
            matches!(&outcome, FileOutcome::Failed { kind: FailureKind::Truncated, reason } if reason.contains("shrank from 10 to 5")),
            "{outcome:?}"
        );

        std::fs::remove_file(dir.path().join("a")).unwrap();
        let outcome = process_file(dir.path(), &file, &stats).unwrap();
        assert!(matches!(
            outcome,
            FileOutcome::Failed {
                kind: FailureKind::Vanished,
                ..
            }
        ));

        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("a")).unwrap();
        let outcome = process_file(dir.path(), &file, &stats).unwrap();
        assert!(matches!(
            outcome,
            FileOutcome::Failed {
                kind: FailureKind::Replaced,
                ..
            }
        ));
    }
}
