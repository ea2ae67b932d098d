//! Processors reduce the bytes of one file to a small, serialisable result.
//!
//! Implement [`Processor`] (a factory) and [`Reducer`] (the per-file reduction) to plug your own
//! reduction into the batch loop; wrap it in a [`DynProcessor`] to choose it at run time.
//!
//! ```
//! use scanner_core::processor::{DynProcessor, Processor, Reducer};
//!
//! /// Counts `ERROR` bytes sequences... or anything else: here, the number of `#` bytes.
//! struct Hashes;
//! struct HashCount(u64);
//!
//! impl Processor for Hashes {
//!     type Reducer = HashCount;
//!     fn name(&self) -> &str { "hashes" }
//!     fn reducer(&self) -> HashCount { HashCount(0) }
//! }
//!
//! impl Reducer for HashCount {
//!     type Output = u64;
//!     fn update(&mut self, chunk: &[u8]) {
//!         self.0 += chunk.iter().filter(|&&b| b == b'#').count() as u64;
//!     }
//!     fn finish(self) -> u64 { self.0 }
//! }
//!
//! let processor = DynProcessor::new(Hashes);
//! let (result, bytes) = processor.reduce(&mut &b"# a\n## b\n"[..]).unwrap();
//! assert_eq!((result, bytes), (serde_json::json!(3), 9));
//! ```

mod stats;

use std::io::Read;
use std::sync::Arc;

use serde::Serialize;

pub use stats::{FileStats, Stats, StatsReducer};

/// Size of the buffer each worker reads files through.
pub const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Creates one [`Reducer`] per file. Shared by all workers, so it must be `Sync`.
pub trait Processor: Send + Sync + 'static {
    /// The per-file reduction.
    type Reducer: Reducer;

    /// A short name, written in every output line's `processor` field.
    fn name(&self) -> &str;

    /// Starts the reduction of one file.
    fn reducer(&self) -> Self::Reducer;
}

/// The reduction of one file, fed its bytes in order.
///
/// Chunks arrive in file order and cover the processed bytes exactly once; their boundaries
/// fall anywhere, including inside a line or a UTF-8 sequence. Keep memory bounded: never
/// accumulate the file.
pub trait Reducer: Send + 'static {
    /// The result, written as the `result` field of the file's output line.
    type Output: Serialize;

    /// Feeds the next chunk of the file.
    fn update(&mut self, chunk: &[u8]);

    /// Ends the file and returns its result.
    fn finish(self) -> Self::Output;
}

/// A processor chosen at run time: a cheap, cloneable handle around any [`Processor`].
#[derive(Clone)]
pub struct DynProcessor(Arc<dyn ErasedProcessor>);

impl std::fmt::Debug for DynProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DynProcessor").field(&self.name()).finish()
    }
}

impl DynProcessor {
    /// Wraps a processor.
    pub fn new<P: Processor>(processor: P) -> Self {
        DynProcessor(Arc::new(processor))
    }

    /// The processor's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Reads `input` to its end through a fresh reducer; returns the result and the number of
    /// bytes read. Blocking: call it from a worker thread.
    pub fn reduce(&self, input: &mut dyn Read) -> Result<(serde_json::Value, u64), ReduceError> {
        READ_BUFFER.with_borrow_mut(|buf| {
            if buf.is_empty() {
                buf.resize(READ_BUFFER_BYTES, 0);
            }
            self.0.reduce(input, buf)
        })
    }
}

/// Why a reduction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReduceError {
    /// Reading the input failed.
    #[error("read failed after {offset} bytes: {source}")]
    Read {
        /// Bytes successfully read before the failure.
        offset: u64,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The result could not be turned into JSON.
    #[error("result cannot be serialised: {0}")]
    Serialise(#[from] serde_json::Error),
}

thread_local! {
    // One buffer per worker thread, reused across files: a fresh 256 KiB allocation per file
    // would cost an mmap/munmap pair each time, which dominates on many small files.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

trait ErasedProcessor: Send + Sync {
    fn name(&self) -> &str;
    fn reduce(
        &self,
        input: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<(serde_json::Value, u64), ReduceError>;
}

impl<P: Processor> ErasedProcessor for P {
    fn name(&self) -> &str {
        Processor::name(self)
    }

    fn reduce(
        &self,
        input: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<(serde_json::Value, u64), ReduceError> {
        let mut reducer = self.reducer();
        let mut offset = 0u64;
        loop {
            match input.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    reducer.update(&buf[..n]);
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ReduceError::Read { offset, source }),
            }
        }
        Ok((serde_json::to_value(reducer.finish())?, offset))
    }
}
