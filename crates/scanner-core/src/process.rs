//! Reading planned files through a processor, on worker threads: opening safely, decoding by
//! content, splitting large files into line-aligned ranges, and combining the ranges.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use state_store::PlannedFile;

use crate::listing::{absolute, io_reason};
use crate::processor::{DynProcessor, Partial, ReduceError};

/// A file is split into ranges for parallel workers only if each range gets at least this many
/// bytes.
pub const MIN_RANGE_BYTES: u64 = 16 << 20;

/// How far past a nominal split point a newline is looked for before giving up on that point.
const MAX_BOUNDARY_SEARCH: u64 = 8 << 20;

/// How processing one file ended.
#[derive(Clone, Debug, PartialEq)]
pub enum FileOutcome {
    /// The processor's result, and the bytes it read.
    Done {
        /// The processor's result.
        result: serde_json::Value,
        /// Bytes the processor read (decoded bytes, for a compressed file).
        bytes: u64,
        /// How the file was encoded.
        encoding: Encoding,
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
    /// Its compressed content is damaged.
    Corrupt,
    /// It decodes to more than [`ReadLimits::max_decoded_bytes`] (a decompression bomb, or a
    /// limit set too low).
    TooLarge,
    /// Any other read error.
    Io,
    /// The processor failed or panicked.
    Processor,
}

impl FailureKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Vanished,
        FailureKind::Replaced,
        FailureKind::Truncated,
        FailureKind::PermissionDenied,
        FailureKind::Corrupt,
        FailureKind::TooLarge,
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
            FailureKind::Corrupt => "corrupt",
            FailureKind::TooLarge => "too_large",
            FailureKind::Io => "io",
            FailureKind::Processor => "processor",
        }
    }
}

/// How a file's bytes are encoded, recognised by its first bytes (never by its name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Read as it is.
    #[default]
    Plain,
    /// gzip (`1f 8b`), possibly several members one after the other.
    Gzip,
    /// Zstandard (`28 b5 2f fd`), possibly several frames.
    Zstd,
}

impl Encoding {
    /// Recognises an encoding by the first bytes of a file.
    pub fn sniff(head: &[u8]) -> Encoding {
        if head.starts_with(&[0x1f, 0x8b]) {
            Encoding::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Encoding::Zstd
        } else {
            Encoding::Plain
        }
    }

    /// The name written in output lines, for encodings other than plain.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Encoding::Plain => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
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

/// One piece of work for a worker: a file, or one line-aligned range of a large file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkUnit {
    /// Index of the file in the batch.
    pub file: usize,
    /// Bytes of the file this unit reads.
    pub range: Range<u64>,
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
    },
    /// The unit (and so its file) could not be processed.
    Failed {
        /// The category.
        kind: FailureKind,
        /// A description an operator can act on.
        reason: String,
    },
}

/// Cuts the batch's files into work units. Blocking (it looks for line boundaries in large
/// files).
///
/// A file is split only if the processor can merge ranges, there are several workers, the file
/// is plain text (compressed streams cannot be entered in the middle), and every range gets at
/// least [`MIN_RANGE_BYTES`]. Ranges end just after a newline; where none is found near a split
/// point, the neighbouring ranges stay together.
pub fn plan_units(
    root: &Path,
    files: &[PlannedFile],
    processor: &DynProcessor,
    workers: usize,
) -> Vec<WorkUnit> {
    let mut units = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        let whole = file.start..file.size.max(file.start);
        let length = whole.end - whole.start;
        let parts = (length / MIN_RANGE_BYTES).min(workers as u64);
        let ranges = if processor.is_splittable() && parts > 1 {
            split_at_lines(&absolute(root, &file.path), whole.clone(), parts)
                .unwrap_or_else(|| vec![whole])
        } else {
            vec![whole]
        };
        units.extend(
            ranges
                .into_iter()
                .map(|range| WorkUnit { file: index, range }),
        );
    }
    units
}

/// Line-aligned ranges covering `whole`, about `parts` of them; `None` if the file cannot be
/// split (it is compressed, or cannot be read: its single unit will say why).
fn split_at_lines(path: &Path, whole: Range<u64>, parts: u64) -> Option<Vec<Range<u64>>> {
    let mut file = open(path).ok()?;
    if whole.start == 0 {
        let mut head = [0u8; 4];
        let n = read_up_to(&mut file, &mut head).ok()?;
        if Encoding::sniff(&head[..n]) != Encoding::Plain {
            return None;
        }
    }
    let length = whole.end - whole.start;
    let mut ranges = Vec::new();
    let mut start = whole.start;
    let mut window = vec![0u8; 64 << 10];
    for k in 1..parts {
        let nominal = whole.start + length * k / parts;
        if nominal <= start {
            continue;
        }
        let Some(boundary) = next_line_start(&mut file, nominal, whole.end, &mut window) else {
            continue;
        };
        if boundary > start && boundary < whole.end {
            ranges.push(start..boundary);
            start = boundary;
        }
    }
    ranges.push(start..whole.end);
    Some(ranges)
}

/// The offset just after the first newline at or after `from` (before `end`).
fn next_line_start(file: &mut File, from: u64, end: u64, window: &mut [u8]) -> Option<u64> {
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut at = from;
    while at < end && at - from < MAX_BOUNDARY_SEARCH {
        let want = window.len().min((end - at) as usize);
        let n = read_up_to(file, &mut window[..want]).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(i) = memchr::memchr(b'\n', &window[..n]) {
            return Some(at + i as u64 + 1);
        }
        at += n as u64;
    }
    None
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens without following symbolic links and without blocking (a FIFO swapped in cannot
/// hang the worker).
pub(crate) fn open(path: &Path) -> std::io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
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
pub fn process_unit(
    root: &Path,
    file: &PlannedFile,
    range: Range<u64>,
    processor: &DynProcessor,
    limits: ReadLimits,
) -> Result<UnitOutcome, ResourceError> {
    let failed = |kind, reason: String| Ok(UnitOutcome::Failed { kind, reason });
    let handle = match open(&absolute(root, &file.path)) {
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
    if range.start > 0
        && let Err(e) = handle.seek(SeekFrom::Start(range.start))
    {
        return failed(
            FailureKind::Io,
            format!("cannot seek to {}: {e}", range.start),
        );
    }
    let expected = range.end.saturating_sub(range.start);
    let raw_read = Cell::new(0u64);
    let mut raw = Counting {
        inner: handle.take(expected),
        count: &raw_read,
    };

    // Only a file read from its very start can be a compressed stream.
    let mut head = [0u8; 4];
    let encoding = if range.start == 0 {
        let n = match read_all_of(&mut raw, &mut head) {
            Ok(n) => n,
            Err(e) => return failed(FailureKind::Io, format!("read failed at offset 0: {e}")),
        };
        Encoding::sniff(&head[..n])
    } else {
        Encoding::Plain
    };
    let head_len = if range.start == 0 {
        raw_read.get() as usize
    } else {
        0
    };
    let stream = Cursor::new(&head[..head_len]).chain(raw);
    let reduced = match encoding {
        Encoding::Plain => processor.reduce_partial(&mut { stream }),
        Encoding::Gzip => {
            let decoder =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, stream));
            processor.reduce_partial(&mut Capped::new(decoder, limits.max_decoded_bytes))
        }
        Encoding::Zstd => match zstd::stream::read::Decoder::new(stream) {
            Ok(decoder) => {
                processor.reduce_partial(&mut Capped::new(decoder, limits.max_decoded_bytes))
            }
            Err(e) => return failed(FailureKind::Corrupt, format!("cannot decode zstd: {e}")),
        },
    };
    match reduced {
        Ok((_, _)) if raw_read.get() < expected => failed(
            FailureKind::Truncated,
            format!(
                "shrank while being read: expected {expected} bytes from offset {}, got {}",
                range.start,
                raw_read.get()
            ),
        ),
        Ok((partial, bytes)) => Ok(UnitOutcome::Reduced {
            partial,
            bytes,
            encoding,
        }),
        Err(ReduceError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::FileTooLarge =>
        {
            failed(
                FailureKind::TooLarge,
                format!(
                    "{} decodes to more than the limit of {} bytes (max_decoded_bytes, \
                     `--max-decoded-bytes` of `gleaner run`); not processed",
                    encoding.name().unwrap_or("input"),
                    limits.max_decoded_bytes
                ),
            )
        }
        Err(ReduceError::Read { offset, source }) => match encoding.name() {
            Some(name) if source.kind() != std::io::ErrorKind::PermissionDenied => failed(
                FailureKind::Corrupt,
                format!("cannot decode {name} after {offset} decoded bytes: {source}"),
            ),
            _ => failed(
                FailureKind::Io,
                format!("read failed at offset {}: {source}", range.start + offset),
            ),
        },
        Err(e @ ReduceError::Serialise(_)) => failed(FailureKind::Processor, e.to_string()),
    }
}

/// Combines the outcomes of a file's units, in file order: the first failure wins; otherwise
/// the partials are merged and finished. CPU work: call it from a worker thread.
pub fn combine(processor: &DynProcessor, units: Vec<UnitOutcome>) -> FileOutcome {
    let mut merged: Option<(Partial, u64, Encoding)> = None;
    for unit in units {
        match unit {
            UnitOutcome::Failed { kind, reason } => return FileOutcome::Failed { kind, reason },
            UnitOutcome::Reduced {
                partial,
                bytes,
                encoding,
            } => {
                merged = Some(match merged {
                    None => (partial, bytes, encoding),
                    Some((earlier, total, first)) => {
                        (processor.merge(earlier, partial), total + bytes, first)
                    }
                });
            }
        }
    }
    let Some((partial, bytes, encoding)) = merged else {
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
        },
        Err(e) => FileOutcome::Failed {
            kind: FailureKind::Processor,
            reason: e.to_string(),
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
    )?;
    Ok(combine(processor, vec![unit]))
}

fn read_all_of(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Counts the raw bytes read through it, to tell a complete read from a truncated file.
struct Counting<'a, R> {
    inner: R,
    count: &'a Cell<u64>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Fails once more than `limit` decoded bytes were read.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R> Capped<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("decodes to more than the limit of {} bytes", self.limit),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{Grep, Stats};
    use std::io::Write;
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

    fn done(outcome: FileOutcome) -> (serde_json::Value, u64, Encoding) {
        match outcome {
            FileOutcome::Done {
                result,
                bytes,
                encoding,
            } => (result, bytes, encoding),
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
