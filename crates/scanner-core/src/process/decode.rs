//! Decoding by content: gzip and zstd are recognised by their first bytes (never by a file's
//! name) and decoded as a stream, within a cap on the decoded size.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufReader, Cursor, ErrorKind, Read};

use super::{Failure, FailureKind, ReadLimits};
use crate::ErrorChain;
use crate::processor::{DynProcessor, Partial, ReduceError};

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

/// How many leading bytes [`Encoding::sniff`] looks at.
const HEAD_BYTES: usize = 4;

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

    /// The encoding of a file just opened (its read position at the start).
    pub(crate) fn of_file(mut file: &File) -> std::io::Result<Encoding> {
        let mut head = [0u8; HEAD_BYTES];
        let n = read_full(&mut file, &mut head)?;
        Ok(Encoding::sniff(&head[..n]))
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

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What reducing one unit gave: the partial result, the (decoded) bytes the processor read,
/// the encoding, and the raw bytes read from the file.
pub(super) struct Decoded {
    pub(super) partial: Partial,
    pub(super) bytes: u64,
    pub(super) encoding: Encoding,
    pub(super) raw_bytes: u64,
}

/// Reduces `raw`, the bytes of one unit starting at file offset `start`, through `processor`.
/// Only a unit read from the very start of its file can be a compressed stream; it is decoded
/// within `limits`.
pub(super) fn reduce(
    raw: impl Read,
    start: u64,
    processor: &DynProcessor,
    limits: ReadLimits,
) -> Result<Decoded, Failure> {
    FIRST_READ.with_borrow_mut(|first| {
        if first.is_empty() {
            first.resize(FIRST_READ_BYTES, 0);
        }
        reduce_with(raw, first, start, processor, limits)
    })
}

/// The first bytes of each unit that starts a file are read at once into this per-thread
/// buffer (the encoding is sniffed from them): a small file is read in one call, not one for
/// the sniff and one for the rest, and no buffer is allocated per file.
const FIRST_READ_BYTES: usize = 64 << 10;

thread_local! {
    static FIRST_READ: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Frees this thread's first-read buffer (see [`super::end_of_work`]).
pub(super) fn release_first_read() {
    FIRST_READ.take();
}

/// Bytes of the first-read buffer this thread holds.
#[cfg(test)]
pub(super) fn first_read_bytes() -> usize {
    FIRST_READ.with_borrow(Vec::capacity)
}

fn reduce_with(
    raw: impl Read,
    first: &mut [u8],
    start: u64,
    processor: &DynProcessor,
    limits: ReadLimits,
) -> Result<Decoded, Failure> {
    let raw_read = Cell::new(0u64);
    let mut raw = Counting {
        inner: raw,
        count: &raw_read,
    };
    let (encoding, head_len) = if start == 0 {
        let n = read_full(&mut raw, first)
            .map_err(|e| Failure::new(FailureKind::Io, format!("read failed at offset 0: {e}")))?;
        (Encoding::sniff(&first[..n.min(HEAD_BYTES)]), n)
    } else {
        (Encoding::Plain, 0)
    };
    let head = &first[..head_len];
    let reduced = match encoding {
        Encoding::Plain => processor.reduce_partial_after(head, &mut raw),
        Encoding::Gzip => {
            let stream = Cursor::new(head).chain(raw);
            let decoder =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, stream));
            processor.reduce_partial(&mut Capped::new(decoder, limits.max_decoded_bytes))
        }
        Encoding::Zstd => {
            let stream = Cursor::new(head).chain(raw);
            let decoder = zstd::stream::read::Decoder::new(stream).map_err(|e| {
                Failure::new(FailureKind::Corrupt, format!("cannot decode zstd: {e}"))
            })?;
            processor.reduce_partial(&mut Capped::new(decoder, limits.max_decoded_bytes))
        }
    };
    let (partial, bytes) = reduced.map_err(|e| reduce_failure(e, encoding, start, limits))?;
    Ok(Decoded {
        partial,
        bytes,
        encoding,
        raw_bytes: raw_read.get(),
    })
}

/// What a failed reduction means for the file.
fn reduce_failure(e: ReduceError, encoding: Encoding, start: u64, limits: ReadLimits) -> Failure {
    match e {
        ReduceError::Read { source, .. } if source.kind() == ErrorKind::FileTooLarge => {
            Failure::new(
                FailureKind::TooLarge,
                format!(
                    "{} decodes to more than the limit of {} bytes (max_decoded_bytes, \
                     `--max-decoded-bytes` of `gleaner run`); not processed",
                    encoding.name().unwrap_or("input"),
                    limits.max_decoded_bytes
                ),
            )
        }
        ReduceError::Read { offset, source } => match encoding.name() {
            Some(name) if source.kind() != ErrorKind::PermissionDenied => Failure::new(
                FailureKind::Corrupt,
                format!("cannot decode {name} after {offset} decoded bytes: {source}"),
            ),
            _ => Failure::new(
                FailureKind::Io,
                format!("read failed at offset {}: {source}", start + offset),
            ),
        },
        e @ ReduceError::Serialise(_) => {
            Failure::new(FailureKind::Processor, ErrorChain(&e).to_string())
        }
    }
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
        crate::telemetry::bytes_read();
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
                ErrorKind::FileTooLarge,
                format!("decodes to more than the limit of {} bytes", self.limit),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
