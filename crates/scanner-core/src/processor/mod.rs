//! Processors reduce the bytes of one file to a small, serialisable result.
//!
//! Implement [`Processor`] (a factory) and [`Reducer`] (the per-file reduction) to plug your own
//! reduction into the batch loop, or write one from closures with [`from_fn`]; wrap it in a
//! [`DynProcessor`] to choose it at run time. A reducer that also implements [`Merge`] can work
//! on line-aligned ranges of one large file in parallel ([`DynProcessor::splittable`]).
//!
//! Line-oriented reductions get their lines from a [`LineSplitter`], which hands over whole
//! regions of complete lines (so a matcher can search a region at once) and caps the memory an
//! endless line can take.
//!
//! ```
//! use scanner_core::processor::{DynProcessor, Merge, Processor, Reducer, from_fn};
//!
//! /// Counts `#` bytes.
//! struct Hashes;
//! #[derive(Default)]
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
//! // Counts add up, so a large file may be split into ranges counted in parallel.
//! impl Merge for HashCount {
//!     fn merge(&mut self, later: Self) { self.0 += later.0 }
//! }
//!
//! let processor = DynProcessor::splittable(Hashes);
//! let (result, bytes) = processor.reduce(&mut &b"# a\n## b\n"[..]).unwrap();
//! // The result comes rendered as JSON, as it goes into the output line.
//! assert_eq!((result.get(), bytes), ("3", 9));
//!
//! // The same from closures: initial state, update, result.
//! let zeros = from_fn("zeros", || 0u64, |n, chunk| *n += bytecount(chunk), |n| n);
//! fn bytecount(chunk: &[u8]) -> u64 { chunk.iter().filter(|&&b| b == 0).count() as u64 }
//! let (result, _) = DynProcessor::new(zeros).reduce(&mut &[0u8, 1, 0][..]).unwrap();
//! assert_eq!(result.get(), "2");
//! ```

mod count_by;
mod grep;
mod lines;
mod stats;

use std::any::Any;
use std::io::Read;
use std::sync::Arc;

use serde::Serialize;

pub use count_by::{
    CountBy, CountByConfig, CountByError, CountByReducer, CountByResult, KeyCount, KeySource,
    MAX_KEY_BYTES, OtherCount,
};
pub use grep::{Grep, GrepReducer, GrepResult, SAMPLE_BYTES};
pub use lines::LineSplitter;
pub use stats::{FileStats, Stats, StatsReducer};

/// Size of the buffer each worker reads files through.
pub const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Creates one [`Reducer`] per file. Shared by all workers, so it must be `Sync`.
pub trait Processor: Send + Sync + 'static {
    /// The per-file reduction.
    type Reducer: Reducer;

    /// A short name, written in every output line's `processor` field.
    fn name(&self) -> &str;

    /// Starts the reduction of one file (or of one range of it).
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

/// A reducer whose work can be split: reducers of consecutive line-aligned ranges of a file,
/// merged in file order, give the result of one reducer over the whole file.
///
/// Every range but the last ends just after a newline, and every range but the first starts at
/// the beginning of a line.
pub trait Merge: Reducer {
    /// Folds in the reducer of the range that follows this one.
    fn merge(&mut self, later: Self);
}

/// A processor written as closures: see [`from_fn`].
pub struct FnProcessor<S, O> {
    name: String,
    functions: Arc<FnParts<S, O>>,
}

/// How a chunk updates the state of a [`FnProcessor`].
type UpdateFn<S> = dyn Fn(&mut S, &[u8]) + Send + Sync;

struct FnParts<S, O> {
    init: Box<dyn Fn() -> S + Send + Sync>,
    update: Box<UpdateFn<S>>,
    finish: Box<dyn Fn(S) -> O + Send + Sync>,
}

/// The reducer of a [`FnProcessor`].
pub struct FnReducer<S, O> {
    state: S,
    functions: Arc<FnParts<S, O>>,
}

/// Writes a processor from three closures: the initial state of a file, how a chunk updates
/// it, and how the final state becomes the result.
pub fn from_fn<S, O>(
    name: &str,
    init: impl Fn() -> S + Send + Sync + 'static,
    update: impl Fn(&mut S, &[u8]) + Send + Sync + 'static,
    finish: impl Fn(S) -> O + Send + Sync + 'static,
) -> FnProcessor<S, O>
where
    S: Send + 'static,
    O: Serialize + 'static,
{
    FnProcessor {
        name: name.to_string(),
        functions: Arc::new(FnParts {
            init: Box::new(init),
            update: Box::new(update),
            finish: Box::new(finish),
        }),
    }
}

impl<S: Send + 'static, O: Serialize + 'static> Processor for FnProcessor<S, O> {
    type Reducer = FnReducer<S, O>;

    fn name(&self) -> &str {
        &self.name
    }

    fn reducer(&self) -> FnReducer<S, O> {
        FnReducer {
            state: (self.functions.init)(),
            functions: Arc::clone(&self.functions),
        }
    }
}

impl<S: Send + 'static, O: Serialize + 'static> Reducer for FnReducer<S, O> {
    type Output = O;

    fn update(&mut self, chunk: &[u8]) {
        (self.functions.update)(&mut self.state, chunk);
    }

    fn finish(self) -> O {
        (self.functions.finish)(self.state)
    }
}

/// A processor chosen at run time: a cheap, cloneable handle around any [`Processor`].
#[derive(Clone)]
pub struct DynProcessor(Arc<dyn ErasedProcessor>);

impl std::fmt::Debug for DynProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynProcessor")
            .field("name", &self.name())
            .field("splittable", &self.is_splittable())
            .finish()
    }
}

/// A file's result, rendered as JSON once, on the worker that finished it: it goes into the
/// output line as it is (a tree of `serde_json::Value`s per file cost more, in allocations and
/// a second serialisation, than reading a small file). Parse it with
/// `serde_json::from_str(result.get())` to look inside.
pub type ResultJson = Box<serde_json::value::RawValue>;

/// The reduction of one range of a file, to be merged with its neighbours and finished.
pub struct Partial(Box<dyn Any + Send>);

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Partial")
    }
}

impl DynProcessor {
    /// Wraps a processor whose files are reduced whole, by one reducer each.
    pub fn new<P: Processor>(processor: P) -> Self {
        DynProcessor(Arc::new(Whole(processor)))
    }

    /// Wraps a processor whose large files may be split into line-aligned ranges reduced in
    /// parallel and merged.
    pub fn splittable<P>(processor: P) -> Self
    where
        P: Processor,
        P::Reducer: Merge,
    {
        DynProcessor(Arc::new(Splittable(processor)))
    }

    /// The processor's name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// True if large files may be split into ranges.
    pub fn is_splittable(&self) -> bool {
        self.0.splittable()
    }

    /// Reads `input` to its end through a fresh reducer; returns the result and the number of
    /// bytes read. Blocking: call it from a worker thread.
    pub fn reduce(&self, input: &mut dyn Read) -> Result<(ResultJson, u64), ReduceError> {
        let (partial, bytes) = self.reduce_partial(input)?;
        Ok((self.finish(partial)?, bytes))
    }

    /// Reads `input` (a whole file, or one range of it) to its end; returns its partial
    /// reduction and the number of bytes read. Blocking.
    pub fn reduce_partial(&self, input: &mut dyn Read) -> Result<(Partial, u64), ReduceError> {
        self.reduce_partial_after(&[], input)
    }

    /// [`DynProcessor::reduce_partial`] of `head` followed by `rest`: bytes already in memory
    /// (a small file's only read) go to the reducer as they are, not copied through another
    /// buffer first. Blocking.
    pub fn reduce_partial_after(
        &self,
        head: &[u8],
        rest: &mut dyn Read,
    ) -> Result<(Partial, u64), ReduceError> {
        READ_BUFFER.with_borrow_mut(|buf| {
            if buf.is_empty() {
                buf.resize(READ_BUFFER_BYTES, 0);
            }
            self.0.reduce(head, rest, buf)
        })
    }

    /// Merges the partial reduction of the range that follows `earlier`'s.
    ///
    /// # Panics
    ///
    /// If the processor is not splittable, or the partials come from another processor.
    pub fn merge(&self, earlier: Partial, later: Partial) -> Partial {
        self.0.merge(earlier, later)
    }

    /// Turns a (merged) partial reduction into the file's result.
    pub fn finish(&self, partial: Partial) -> Result<ResultJson, ReduceError> {
        self.0.finish(partial)
    }
}

/// Why a reduction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReduceError {
    /// Reading (or decoding) the input failed.
    #[error("read failed after {offset} bytes")]
    Read {
        /// Bytes successfully read before the failure.
        offset: u64,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The result could not be turned into JSON.
    #[error("result cannot be serialised")]
    Serialise(#[from] serde_json::Error),
}

thread_local! {
    // One buffer per worker thread, reused across files: a fresh 256 KiB allocation per file
    // would cost an mmap/munmap pair each time, which dominates on many small files.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Frees what this thread keeps for reducing files, its read buffer and its searcher: a worker
/// calls it when its batch is done (see `process::end_of_work`).
pub(crate) fn release_thread_buffers() {
    READ_BUFFER.take();
    grep::release_searcher();
}

/// Bytes this thread holds for reducing files: its read buffer and its searcher.
#[cfg(test)]
pub(crate) fn thread_buffer_bytes() -> usize {
    READ_BUFFER.with_borrow(Vec::capacity) + grep::searcher_bytes()
}

trait ErasedProcessor: Send + Sync {
    fn name(&self) -> &str;
    fn splittable(&self) -> bool;
    fn reduce(
        &self,
        head: &[u8],
        input: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<(Partial, u64), ReduceError>;
    fn merge(&self, earlier: Partial, later: Partial) -> Partial;
    fn finish(&self, partial: Partial) -> Result<ResultJson, ReduceError>;
}

struct Whole<P>(P);
struct Splittable<P>(P);

/// Feeds `head`, then `input` chunk by chunk, to `reducer`; returns the bytes fed.
fn feed<R: Reducer>(
    reducer: &mut R,
    head: &[u8],
    input: &mut dyn Read,
    buf: &mut [u8],
) -> Result<u64, ReduceError> {
    if !head.is_empty() {
        reducer.update(head);
    }
    let mut offset = head.len() as u64;
    loop {
        match input.read(buf) {
            Ok(0) => return Ok(offset),
            Ok(n) => {
                reducer.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(ReduceError::Read { offset, source }),
        }
    }
}

/// Reads `head`, then `input` to its end, through a fresh reducer of `processor`.
fn reduce_with<P: Processor>(
    processor: &P,
    head: &[u8],
    input: &mut dyn Read,
    buf: &mut [u8],
) -> Result<(Partial, u64), ReduceError> {
    let mut reducer = processor.reducer();
    let bytes = feed(&mut reducer, head, input, buf)?;
    Ok((Partial(Box::new(reducer)), bytes))
}

/// The result of a partial reduction made by a reducer of `P`.
fn finish_with<P: Processor>(partial: Partial) -> Result<ResultJson, ReduceError> {
    let reducer: P::Reducer = unwrap_partial(partial);
    Ok(serde_json::value::to_raw_value(&reducer.finish())?)
}

fn unwrap_partial<R: 'static>(partial: Partial) -> R {
    *partial
        .0
        .downcast::<R>()
        .expect("a partial reduction is finished by the processor that made it")
}

impl<P: Processor> ErasedProcessor for Whole<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn splittable(&self) -> bool {
        false
    }

    fn reduce(
        &self,
        head: &[u8],
        input: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<(Partial, u64), ReduceError> {
        reduce_with(&self.0, head, input, buf)
    }

    fn merge(&self, _: Partial, _: Partial) -> Partial {
        panic!(
            "processor {:?} cannot merge partial reductions",
            self.0.name()
        )
    }

    fn finish(&self, partial: Partial) -> Result<ResultJson, ReduceError> {
        finish_with::<P>(partial)
    }
}

impl<P> ErasedProcessor for Splittable<P>
where
    P: Processor,
    P::Reducer: Merge,
{
    fn name(&self) -> &str {
        self.0.name()
    }

    fn splittable(&self) -> bool {
        true
    }

    fn reduce(
        &self,
        head: &[u8],
        input: &mut dyn Read,
        buf: &mut [u8],
    ) -> Result<(Partial, u64), ReduceError> {
        reduce_with(&self.0, head, input, buf)
    }

    fn merge(&self, earlier: Partial, later: Partial) -> Partial {
        let mut earlier: P::Reducer = unwrap_partial(earlier);
        earlier.merge(unwrap_partial(later));
        Partial(Box::new(earlier))
    }

    fn finish(&self, partial: Partial) -> Result<ResultJson, ReduceError> {
        finish_with::<P>(partial)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for processor tests: feed inputs in every chunking, split at every line.

    use super::*;

    /// The result of `processor` over `data`, fed in chunks of `chunk` bytes.
    pub(crate) fn run_chunked<P: Processor>(
        processor: &P,
        data: &[u8],
        chunk: usize,
    ) -> serde_json::Value {
        let mut reducer = processor.reducer();
        for piece in data.chunks(chunk.max(1)) {
            reducer.update(piece);
        }
        if data.is_empty() {
            reducer.update(&[]);
        }
        serde_json::to_value(reducer.finish()).unwrap()
    }

    /// The result of `processor` over `data` split after the newline at each of `cuts`
    /// (byte offsets of newlines), each range reduced on its own and merged in order.
    pub(crate) fn run_split<P>(
        processor: &P,
        data: &[u8],
        cuts: &[usize],
        chunk: usize,
    ) -> serde_json::Value
    where
        P: Processor,
        P::Reducer: Merge,
    {
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c + 1).collect();
        bounds.push(data.len());
        let mut start = 0;
        let mut merged: Option<P::Reducer> = None;
        for end in bounds {
            let mut reducer = processor.reducer();
            for piece in data[start..end].chunks(chunk.max(1)) {
                reducer.update(piece);
            }
            match &mut merged {
                None => merged = Some(reducer),
                Some(m) => m.merge(reducer),
            }
            start = end;
        }
        serde_json::to_value(merged.expect("at least one range").finish()).unwrap()
    }

    /// Offsets of the newlines of `data`.
    pub(crate) fn newlines(data: &[u8]) -> Vec<usize> {
        memchr::memchr_iter(b'\n', data).collect()
    }
}
