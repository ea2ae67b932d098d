//! Reading planned files through a processor, on worker threads.
//!
//! * `open.rs` opens a planned file safely and checks it is the file that was listed; an
//!   errno becomes a [`FailureKind`];
//! * `decode.rs` recognises gzip and zstd by content ([`Encoding`]) and decodes them, capped;
//! * `split.rs` cuts a large file into line-aligned ranges ([`plan_units`]), and finds the
//!   whole lines appended to a file;
//! * this module reads one unit ([`process_unit`]) and combines a file's units ([`combine`]).

mod decode;
mod open;
mod split;

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use state_store::PlannedFile;

use crate::processor::{DynProcessor, Partial};

pub use decode::Encoding;
pub(crate) use decode::read_full;
pub(crate) use open::open;
pub(crate) use split::{AppendRange, whole_lines};
pub use split::{MIN_RANGE_BYTES, WorkUnit, plan_units};

/// Gives back what this thread keeps from file to file for [`process_unit`] (the directory it
/// holds open, its read buffers, the `grep` searcher: about 400 KiB). The scanner's workers call
/// it when their batch is done; call it on your own threads once they have no more units to
/// process for a while.
///
/// Kept per thread, they would live as long as the thread, and the runtime's blocking pool
/// keeps every thread it ever started while work keeps coming (it wakes its idle threads in
/// turn, so none stays idle long enough to exit): a sidecar under a steady emitter grew by the
/// buffers of every thread that ever ran a worker. Allocated again by the next batch: a few
/// allocations per batch, not per file.
pub fn end_of_work() {
    open::close_directory();
    decode::release_first_read();
    crate::processor::release_thread_buffers();
}

/// Bytes this thread holds for reading and reducing files.
#[cfg(test)]
pub(crate) fn thread_scratch_bytes() -> usize {
    decode::first_read_bytes() + crate::processor::thread_buffer_bytes()
}

/// How processing one file ended.
#[derive(Clone, Debug)]
pub enum FileOutcome {
    /// The processor's result, and the bytes it read.
    Done {
        /// The processor's result, as JSON.
        result: crate::processor::ResultJson,
        /// Bytes the processor read (decoded bytes, for a compressed file).
        bytes: u64,
        /// How the file was encoded.
        encoding: Encoding,
        /// The file's status change time (ctime, nanoseconds since the Unix epoch) when it was
        /// opened for reading (for a file read in several units, the earliest): recorded
        /// in its output line, it shows `gleaner state repair` whether the file in the watched
        /// directory is still the one read.
        ctime_ns: i64,
    },
    /// The file could not be processed.
    Failed {
        /// A short, stable category, used as a metric label.
        kind: FailureKind,
        /// A description an operator can act on.
        reason: String,
    },
}

impl PartialEq for FileOutcome {
    /// Results are equal when their JSON texts are.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            // The ctime is when the file was read, not what was read.
            (
                FileOutcome::Done {
                    result,
                    bytes,
                    encoding,
                    ..
                },
                FileOutcome::Done {
                    result: other_result,
                    bytes: other_bytes,
                    encoding: other_encoding,
                    ..
                },
            ) => {
                result.get() == other_result.get()
                    && bytes == other_bytes
                    && encoding == other_encoding
            }
            (
                FileOutcome::Failed { kind, reason },
                FileOutcome::Failed {
                    kind: other_kind,
                    reason: other_reason,
                },
            ) => kind == other_kind && reason == other_reason,
            _ => false,
        }
    }
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
    /// Its compressed content is damaged.
    Corrupt,
    /// It decodes to more than [`ReadLimits::max_decoded_bytes`] (a decompression bomb, or a
    /// limit set too low).
    TooLarge,
    /// Any other read error.
    Io,
    /// The processor failed or panicked.
    Processor,
    /// The process ended abnormally (killed: out of memory?) every time it processed this
    /// file alone, again and again: given up rather than redone forever.
    Abandoned,
}

impl FailureKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Vanished,
        FailureKind::Replaced,
        FailureKind::Truncated,
        FailureKind::PermissionDenied,
        FailureKind::Corrupt,
        FailureKind::TooLarge,
        FailureKind::Io,
        FailureKind::Processor,
        FailureKind::Abandoned,
    ];

    /// True for failures that may pass by themselves or by an operator's hand (permission
    /// denied, an IO error such as `EIO` or `ESTALE`): the file is tried again, with backoff, a
    /// few times before the failure is final.
    pub fn may_pass(self) -> bool {
        matches!(self, FailureKind::PermissionDenied | FailureKind::Io)
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Vanished => "vanished",
            FailureKind::Replaced => "replaced",
            FailureKind::Truncated => "truncated",
            FailureKind::PermissionDenied => "permission_denied",
            FailureKind::Corrupt => "corrupt",
            FailureKind::TooLarge => "too_large",
            FailureKind::Io => "io",
            FailureKind::Processor => "processor",
            FailureKind::Abandoned => "abandoned",
        }
    }
}

/// The process, not the file, is short of something (file descriptors, memory): no file should
/// be recorded as failed for it. The batch fails and is retried.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {path} for lack of resources; the batch will be retried")]
pub struct ResourceError {
    /// The file that could not be opened, relative to the watch root.
    pub path: String,
    /// The IO error.
    #[source]
    pub source: std::io::Error,
}

/// Limits on reading files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// A compressed file that decodes to more bytes than this fails (a decompression bomb
    /// must not keep a worker busy for hours).
    pub max_decoded_bytes: u64,
}

impl Default for ReadLimits {
    /// 64 GiB of decoded bytes per file.
    fn default() -> Self {
        Self {
            max_decoded_bytes: 64 << 30,
        }
    }
}

/// The result of one [`WorkUnit`].
#[derive(Debug)]
pub enum UnitOutcome {
    /// The partial reduction of the unit's bytes.
    Reduced {
        /// To be merged with the file's other units, then finished.
        partial: Partial,
        /// Bytes the processor read.
        bytes: u64,
        /// How the file was encoded.
        encoding: Encoding,
        /// The file's status change time when the unit opened it (see
        /// [`FileOutcome::Done`]).
        ctime_ns: i64,
    },
    /// The unit (and so its file) could not be processed.
    Failed {
        /// The category.
        kind: FailureKind,
        /// A description an operator can act on.
        reason: String,
    },
}

/// Why a file failed: recorded in its output line and its state entry.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    reason: String,
}

impl Failure {
    fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// Why a unit was not reduced: a problem of its file, or a shortage of the process.
#[derive(Debug)]
enum Unprocessable {
    Failed(Failure),
    Resources(ResourceError),
}

impl From<Failure> for Unprocessable {
    fn from(failure: Failure) -> Self {
        Unprocessable::Failed(failure)
    }
}

/// Reads one unit: bytes `range` of `file` under `root`. Blocking.
///
/// Never reads past the planned size: a file that grew since it was listed is processed as it
/// was listed, so that a redone batch reads the same bytes. The file is checked to be the very
/// file that was listed (same inode and birth time). A unit that starts at the beginning of the
/// file recognises gzip and zstd by their first bytes and decodes them as a stream.
///
/// Problems of the file make an [`UnitOutcome::Failed`]; a shortage of the process (too many
/// open files, no memory) is a [`ResourceError`] instead.
///
/// The calling thread keeps the file's directory open and its buffers for the next unit, until
/// [`end_of_work`].
pub fn process_unit(
    root: &Path,
    file: &PlannedFile,
    range: Range<u64>,
    processor: &DynProcessor,
    limits: ReadLimits,
) -> Result<UnitOutcome, ResourceError> {
    match reduce_unit(root, file, range, processor, limits) {
        Ok((decoded, ctime_ns)) => Ok(UnitOutcome::Reduced {
            partial: decoded.partial,
            bytes: decoded.bytes,
            encoding: decoded.encoding,
            ctime_ns,
        }),
        Err(Unprocessable::Failed(Failure { kind, reason })) => {
            Ok(UnitOutcome::Failed { kind, reason })
        }
        Err(Unprocessable::Resources(e)) => Err(e),
    }
}

fn reduce_unit(
    root: &Path,
    file: &PlannedFile,
    range: Range<u64>,
    processor: &DynProcessor,
    limits: ReadLimits,
) -> Result<(decode::Decoded, i64), Unprocessable> {
    let (mut handle, ctime_ns) = open::open_planned(root, file)?;
    if range.start > 0 {
        handle.seek(SeekFrom::Start(range.start)).map_err(|e| {
            Failure::new(
                FailureKind::Io,
                format!("cannot seek to {}: {e}", range.start),
            )
        })?;
    }
    let expected = range.end.saturating_sub(range.start);
    let decoded = decode::reduce(handle.take(expected), range.start, processor, limits)?;
    if decoded.raw_bytes < expected {
        return Err(Failure::new(
            FailureKind::Truncated,
            format!(
                "shrank while being read: expected {expected} bytes from offset {}, got {}",
                range.start, decoded.raw_bytes
            ),
        )
        .into());
    }
    Ok((decoded, ctime_ns))
}

/// Combines the outcomes of a file's units, in file order: the first failure wins; otherwise
/// the partials are merged and finished. CPU work: call it from a worker thread.
pub fn combine(processor: &DynProcessor, units: Vec<UnitOutcome>) -> FileOutcome {
    let mut merged: Option<(Partial, u64, Encoding, i64)> = None;
    for unit in units {
        match unit {
            UnitOutcome::Failed { kind, reason } => return FileOutcome::Failed { kind, reason },
            UnitOutcome::Reduced {
                partial,
                bytes,
                encoding,
                ctime_ns,
            } => {
                merged = Some(match merged {
                    None => (partial, bytes, encoding, ctime_ns),
                    // The earliest ctime the units saw: a change while they were read makes
                    // the file's ctime later than it, so the file never passes for unchanged.
                    Some((earlier, total, first, ctime)) => (
                        processor.merge(earlier, partial),
                        total + bytes,
                        first,
                        ctime.min(ctime_ns),
                    ),
                });
            }
        }
    }
    let Some((partial, bytes, encoding, ctime_ns)) = merged else {
        return FileOutcome::Failed {
            kind: FailureKind::Processor,
            reason: "no work unit was planned for the file".into(),
        };
    };
    match processor.finish(partial) {
        Ok(result) => FileOutcome::Done {
            result,
            bytes,
            encoding,
            ctime_ns,
        },
        Err(e) => FileOutcome::Failed {
            kind: FailureKind::Processor,
            reason: crate::ErrorChain(&e).to_string(),
        },
    }
}

/// Processes one whole planned file (a single unit). Blocking.
pub fn process_file(
    root: &Path,
    file: &PlannedFile,
    processor: &DynProcessor,
) -> Result<FileOutcome, ResourceError> {
    let unit = process_unit(
        root,
        file,
        file.start..file.size.max(file.start),
        processor,
        ReadLimits::default(),
    );
    end_of_work();
    Ok(combine(processor, vec![unit?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{Grep, Stats};
    use std::io::Write;

    use crate::testing::planned_file as planned;

    fn done(outcome: FileOutcome) -> (serde_json::Value, u64, Encoding) {
        match outcome {
            FileOutcome::Done {
                result,
                bytes,
                encoding,
                ..
            } => (serde_json::from_str(result.get()).unwrap(), bytes, encoding),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_exactly_the_planned_range() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"one two\nthree\n").unwrap();
        let mut file = planned(dir.path(), "a");
        std::fs::write(dir.path().join("a"), b"one two\nthree\nfour five\n").unwrap();
        let stats = DynProcessor::splittable(Stats);
        let (result, bytes, _) = done(process_file(dir.path(), &file, &stats).unwrap());
        assert_eq!(bytes, 14);
        assert_eq!(result["words"], 3);

        file.start = 8;
        let (result, _, _) = done(process_file(dir.path(), &file, &stats).unwrap());
        assert_eq!(result["bytes"], 6);
    }

    #[test]
    fn gzip_and_zstd_are_recognised_by_content_and_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"alpha beta\ngamma\n".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        // Two gzip members one after the other decode as one stream.
        std::fs::write(dir.path().join("logs.txt"), [gz.clone(), gz].concat()).unwrap();
        std::fs::write(
            dir.path().join("data.bin"),
            zstd::encode_all(&text[..], 3).unwrap(),
        )
        .unwrap();
        let stats = DynProcessor::splittable(Stats);
        let (result, bytes, encoding) =
            done(process_file(dir.path(), &planned(dir.path(), "logs.txt"), &stats).unwrap());
        assert_eq!((bytes, encoding), (2 * text.len() as u64, Encoding::Gzip));
        assert_eq!(result["lines"], 4000);
        let (result, _, encoding) =
            done(process_file(dir.path(), &planned(dir.path(), "data.bin"), &stats).unwrap());
        assert_eq!(encoding, Encoding::Zstd);
        assert_eq!(result["words"], 3000);
    }

    #[test]
    fn corrupt_and_oversized_compressed_files_fail_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..20_000u64)
            .map(|i| format!("line {i} {}\n", i * 7919 % 10_007))
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let good = gz.finish().unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0xff;
        let mut bad_crc = good.clone();
        bad_crc[good.len() - 6] ^= 0x01;
        std::fs::write(dir.path().join("bad.gz"), &flipped).unwrap();
        std::fs::write(dir.path().join("crc.gz"), &bad_crc).unwrap();
        std::fs::write(dir.path().join("cut.gz"), &good[..good.len() / 3]).unwrap();
        let stats = DynProcessor::splittable(Stats);
        for name in ["bad.gz", "crc.gz", "cut.gz"] {
            let outcome = process_file(dir.path(), &planned(dir.path(), name), &stats).unwrap();
            assert!(
                matches!(&outcome, FileOutcome::Failed { kind: FailureKind::Corrupt, reason } if reason.starts_with("cannot decode gzip")),
                "{name}: {outcome:?}"
            );
        }
        // A bomb: a megabyte of zeros decodes to more than a 1000-byte limit.
        std::fs::write(
            dir.path().join("bomb.zst"),
            zstd::encode_all(&vec![0u8; 1 << 20][..], 19).unwrap(),
        )
        .unwrap();
        let file = planned(dir.path(), "bomb.zst");
        let unit = process_unit(
            dir.path(),
            &file,
            0..file.size,
            &stats,
            ReadLimits {
                max_decoded_bytes: 1000,
            },
        )
        .unwrap();
        assert!(
            matches!(&unit, UnitOutcome::Failed { kind: FailureKind::TooLarge, reason } if reason.contains("more than the limit of 1000 bytes")),
            "{unit:?}"
        );
    }

    #[test]
    fn large_files_split_at_lines_and_merge_to_the_whole_result() {
        let dir = tempfile::tempdir().unwrap();
        let line = b"level=ERROR service=checkout words and more words here\n";
        let mut data = line.repeat(((MIN_RANGE_BYTES * 3) / line.len() as u64 + 7) as usize);
        data.extend_from_slice(b"tail without newline");
        std::fs::write(dir.path().join("big.log"), &data).unwrap();
        let file = planned(dir.path(), "big.log");
        for processor in [
            DynProcessor::splittable(Stats),
            DynProcessor::splittable(Grep::new("ERROR|tail", 3).unwrap()),
        ] {
            let units = plan_units(dir.path(), std::slice::from_ref(&file), &processor, 4);
            assert_eq!(units.len(), 3, "about MIN_RANGE_BYTES each");
            for pair in units.windows(2) {
                assert_eq!(pair[0].range.end, pair[1].range.start);
                assert_eq!(data[pair[0].range.end as usize - 1], b'\n');
            }
            let outcomes: Vec<UnitOutcome> = units
                .iter()
                .map(|u| {
                    process_unit(
                        dir.path(),
                        &file,
                        u.range.clone(),
                        &processor,
                        ReadLimits::default(),
                    )
                    .unwrap()
                })
                .collect();
            let split = combine(&processor, outcomes);
            let whole = process_file(dir.path(), &file, &processor).unwrap();
            assert_eq!(split, whole, "{}", processor.name());
        }
        // Processors that cannot merge, and compressed files, are never split.
        let single = DynProcessor::new(Stats);
        assert_eq!(
            plan_units(dir.path(), std::slice::from_ref(&file), &single, 4).len(),
            1
        );
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
