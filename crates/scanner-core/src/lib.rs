//! Gleaner's pipeline: find the new, complete files of a directory, reduce each to a small
//! result, write one output object per batch, and commit — so that every file's result lands in
//! exactly one output, across crashes and restarts.
//!
//! ```text
//! list → diff → ready? → plan → process → flush → commit
//! ```
//!
//! * [`listing`] walks the watch root ([`Listing`]), [`diff`] merges it with the committed
//!   [`State`](state_store::State) ([`Diff`]), [`readiness`] decides which new files are complete,
//!   [`plan`] cuts them into batches (oldest first, capped).
//! * [`processor`] holds the [`Processor`] trait for your own reductions (or [`from_fn`](processor::from_fn)
//!   for one written as closures) and the built-in [`Stats`], [`Grep`](processor::Grep) and
//!   [`CountBy`](processor::CountBy); [`process`] streams one file through one on a worker
//!   thread, decoding gzip and zstd by their magic bytes, and splits a large file into
//!   line-aligned ranges for processors whose results [`Merge`](processor::Merge).
//! * [`output`] renders a batch as newline-delimited JSON at a key that depends only on its
//!   generation; [`Scanner`] runs the whole loop and commits through
//!   [`StateLog`](state_store::StateLog).
//!
//! # Example: collect a directory once, with your own processor
//!
//! ```
//! use scanner_core::processor::{DynProcessor, LineSplitter, Processor, Reducer};
//! use scanner_core::{Scanner, ScannerConfig};
//! use state_store::Location;
//!
//! /// Counts lines that contain "ERROR".
//! struct Errors;
//! #[derive(Default)]
//! struct ErrorCount { count: u64, lines: LineSplitter }
//!
//! impl Processor for Errors {
//!     type Reducer = ErrorCount;
//!     fn name(&self) -> &str { "errors" }
//!     fn reducer(&self) -> ErrorCount { ErrorCount::default() }
//! }
//!
//! fn count_errors(count: &mut u64, region: &[u8]) {
//!     *count += region.split(|&b| b == b'\n')
//!         .filter(|line| line.windows(5).any(|w| w == b"ERROR"))
//!         .count() as u64;
//! }
//!
//! impl Reducer for ErrorCount {
//!     type Output = u64;
//!     fn update(&mut self, chunk: &[u8]) {
//!         // Chunks end anywhere; the splitter hands over regions of whole lines, and keeps
//!         // the memory of an endless line bounded.
//!         let count = &mut self.count;
//!         self.lines.feed(chunk, |region| count_errors(count, region));
//!     }
//!     fn finish(mut self) -> u64 {
//!         let count = &mut self.count;
//!         self.lines.finish(|region| count_errors(count, region));
//!         self.count
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let watch = dir.path().join("in");
//! std::fs::create_dir(&watch)?;
//! std::fs::write(watch.join("app.log"), "ok\nERROR disk full\nok\nERROR again\n")?;
//!
//! let mut config = ScannerConfig::new(&watch, "example".parse()?);
//! config.readiness.min_age = std::time::Duration::ZERO;
//! let state = Location::parse(dir.path().join("state").to_str().unwrap())?;
//! let output = Location::parse(dir.path().join("out").to_str().unwrap())?;
//! let mut scanner = Scanner::open(config, DynProcessor::new(Errors), &state, &output).await?;
//!
//! let report = scanner.scan(None).await?;
//! assert_eq!(report.batches.len(), 1);
//! let written = std::fs::read_to_string(
//!     dir.path().join("out/example/00000000000000000001.ndjson"))?;
//! let line: serde_json::Value = serde_json::from_str(written.trim())?;
//! assert_eq!(line["path"], "app.log");
//! assert_eq!(line["result"], 2);
//!
//! // Nothing new: a second scan commits nothing.
//! assert!(scanner.scan(None).await?.batches.is_empty());
//! # Ok(())
//! # }
//! ```

pub mod cleanup;
pub mod diff;
mod error;
pub mod events;
pub mod identity;
pub mod labels;
pub mod listing;
pub mod manifest;
pub mod output;
pub mod plan;
pub mod process;
pub mod processor;
pub mod readiness;
pub mod repair;
mod scanner;
pub mod telemetry;
#[cfg(test)]
mod testing;

pub use cleanup::{AfterCommit, CleanupReport, CleanupRules};
pub use diff::{Change, Diff, DiffEntry, OnChange};
pub use error::{ConfigError, ErrorChain, ScanError};
pub use events::{EventTrigger, Touched};
pub use identity::Identity;
pub use labels::{Label, LabelError, Labels};
pub use listing::{DirScope, ListedFile, Listing, ListingProblem};
pub use output::{Compression, OUTPUT_SCHEMA, OutputLayout, OutputSink};
pub use plan::BatchLimits;
pub use process::{Encoding, FailureKind, FileOutcome, ReadLimits};
pub use processor::{DynProcessor, Processor, Reducer, ResultJson, Stats};
pub use readiness::{NameFilter, NotReady, Readiness, ReadyMarker};
pub use scanner::{
    Baseline, BatchReport, DrainMode, DrainReport, Leftover, LeftoverReason, ReplayReport,
    ReplaySelection, RetryPolicy, ScanReport, ScanStatus, Scanner, ScannerConfig, Shutdown,
    ShutdownTrigger, cores, shutdown_channel,
};
pub use telemetry::{Heartbeat, Liveness, LoopPhase};
