//! Gleaner's memory: which files of a watched directory have been processed, kept as a log of
//! small objects in any store `object_store` reaches.
//!
//! The state is the one part of Gleaner that, when wrong, silently loses or duplicates data. This
//! crate keeps it as a **log** rather than one big file, so a commit costs as much as its batch,
//! not as much as the history:
//!
//! * [`State`] — the committed generation and one [`FileEntry`] per tracked [`RelPath`].
//! * [`Plan`] — the files a batch is about to process, recorded before processing, so that a
//!   batch interrupted by a crash is redone identically (same files, same output key).
//! * [`Delta`] — what a committed batch changed. Creating it with create-if-absent semantics is
//!   the commit point, and the fence: a second writer gets [`StateError::Fenced`] and stops.
//! * Snapshots ([`encode_snapshot`]) — the whole state at one generation; once one is stored,
//!   the objects it supersedes are removed, so loading and commits stay cheap for months.
//! * [`StateLog`] — reads and writes those objects under `<state>/<source-id>/`, and
//!   [`verify`](StateLog::verify)s them.
//! * [`Location`] — a storage location given as a path or URL: local, `file://`, `s3://`,
//!   `gs://`, `az://`, `memory://`, with [`StorageOptions`] for retries and timeouts.
//! * [`codec`] — the header (magic, version, codec, length, checksum) and bincode payload of
//!   every object; a damaged object is a named error, never a silent fresh start.
//!
//! # Example
//!
//! ```
//! use state_store::{Delta, FileEntry, Location, Outcome, RelPath, StateLog, encode_snapshot};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), state_store::StateError> {
//! let location = Location::parse("memory://")?;
//! let log = StateLog::new(&location, "pod-1")?;
//!
//! let mut loaded = log.load().await?;
//! assert_eq!(loaded.state.generation(), 0);
//!
//! let delta = Delta {
//!     generation: loaded.state.generation() + 1,
//!     writer_id: log.writer_id(),
//!     upserts: vec![(
//!         RelPath::from("app/2026-11-24.log"),
//!         FileEntry { size: 120, mtime_ns: 0, inode: 7, btime_ns: 0, offset: 120,
//!                     generation: 1, outcome: Outcome::Done, fingerprint: 0 },
//!     )],
//!     ..Delta::default()
//! };
//! log.commit(&delta).await?;
//! loaded.state.apply(&delta).expect("next generation");
//!
//! // Another process with the same state location and source id cannot commit generation 1.
//! let intruder = StateLog::new(&location, "pod-1")?;
//! let theirs = Delta { writer_id: intruder.writer_id(), ..delta.clone() };
//! assert!(matches!(
//!     intruder.commit(&theirs).await,
//!     Err(state_store::StateError::Fenced { generation: 1, .. })
//! ));
//!
//! // Fold the log into a snapshot: loading now reads one object instead of every delta.
//! log.store_snapshot(1, encode_snapshot(&loaded.state, log.writer_id(), 0)).await?;
//! assert_eq!(log.load().await?.state, loaded.state);
//! # Ok(())
//! # }
//! ```

pub mod codec;
mod error;
mod legacy;
mod location;
mod log;
mod model;
mod records;
mod snapshot;

pub use error::StateError;
pub use legacy::decode_delta;
pub use location::{Location, StorageOptions};
pub use log::{
    LoadedState, LogObject, StateLog, Verification, check_writable, list_sources, object_name,
    validate_source_id,
};
pub use model::{FINGERPRINT_BYTES, FileEntry, Outcome, RelPath, State};
pub use records::{Delta, Plan, PlannedFile};
pub use snapshot::{SnapshotHeader, decode_snapshot, encode_snapshot};

/// The current time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
