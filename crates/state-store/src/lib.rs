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
//! * Snapshots ([`StateLog::store_snapshot`]) — the whole state at one generation; once one is
//!   stored, the objects it supersedes are removed, so loading and commits stay cheap for months.
//! * [`StateLog`] — reads and writes those objects under `<state>/<source-id>/` (a
//!   [`SourceId`]), and [`verify`](StateLog::verify)s them. A load merges the deltas after the
//!   snapshot into it as it streams in; give it a directory on local disk
//!   ([`StateLog::with_spool_dir`]) and deltas of an object store too large to hold in memory
//!   are merged from copies there instead of folded afterwards ([`DeltasRead`]).
//! * [`Lease`] — a running writer's note that it is alive, renewed every [`LEASE_RENEW`]: what
//!   tools that must not act under a live writer look at ([`StateLog::activity`]).
//! * [`Location`] — a storage location given as a path or URL: local, `file://`, `s3://`,
//!   `gs://`, `az://`, `memory://`, with [`StorageOptions`] for retries and timeouts.
//! * Every object has a header (magic, format version, codec, length, checksum) before its
//!   bincode payload ([`ObjectKind`] says what it holds); a damaged object is a named
//!   [`StateError`], never a silent fresh start.
//!
//! The modules depend on each other in one direction: `model` (paths and entries) →
//! `records` (plans and deltas) → `state` → the encoding (`codec`, `stream`, `merge`,
//! `snapshot`, `legacy`) → `log` (with `spool`), which stores through `location`.
//!
//! # Example
//!
//! ```
//! use state_store::{FileEntry, Location, Outcome, RelPath, SourceId, StateLog};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), state_store::StateError> {
//! let location = Location::parse("memory://")?;
//! let source: SourceId = "pod-1".parse()?;
//! let log = StateLog::new(&location, &source);
//!
//! let mut loaded = log.load().await?;
//! assert_eq!(loaded.state.generation(), 0);
//!
//! let entry = FileEntry { size: 120, mtime_ns: 0, inode: 7, btime_ns: 0, offset: 120,
//!                         generation: 1, outcome: Outcome::Done, fingerprint: 0 };
//! let delta = log.delta(1, None, vec![(RelPath::from("app/2026-11-24.log"), entry)]);
//! log.commit(&delta).await?;
//! loaded.state.apply(&delta)?;
//!
//! // Another process with the same state location and source id cannot commit generation 1.
//! let intruder = StateLog::new(&location, &source);
//! let theirs = intruder.delta(1, None, delta.upserts.clone());
//! assert!(matches!(
//!     intruder.commit(&theirs).await,
//!     Err(state_store::StateError::Fenced { generation: 1, .. })
//! ));
//!
//! // Fold the log into a snapshot: loading now reads one object instead of every delta.
//! log.store_snapshot(&loaded.state).await?;
//! assert_eq!(log.load().await?.state, loaded.state);
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;
mod lease;
mod legacy;
mod location;
mod log;
mod merge;
mod model;
mod records;
mod snapshot;
mod source_id;
mod spool;
mod state;
mod stream;

pub use codec::ObjectKind;
pub use error::StateError;
pub use lease::{LEASE_RENEW, LEASE_TTL, Lease};
pub use location::{Location, StorageOptions};
pub use log::{
    Activity, DeltasRead, Kept, LoadedState, LogObject, StateLog, StoredSnapshot, Verification,
};
pub use model::{FINGERPRINT_BYTES, FileEntry, Origin, Outcome, RelPath, RelPathRef};
pub use records::{CommittedOutput, Delta, Plan, PlannedFile};
pub use source_id::SourceId;
pub use state::State;

/// The object encoding, for fuzz targets and tests that build or damage objects byte by byte
/// (feature `internals`). Not part of the stable API.
#[cfg(feature = "internals")]
pub mod internals {
    use crate::codec::{self, ObjectKind};
    use crate::{Delta, Plan, State, StateError};

    /// Frames `payload` as an object of `kind`: a valid header (checksum included) around
    /// arbitrary bytes, so that a fuzzer reaches the payload decoders.
    pub fn frame(kind: ObjectKind, payload: &[u8]) -> Vec<u8> {
        codec::encode_with(kind, |out| out.extend_from_slice(payload))
    }

    /// Encodes a delta object.
    pub fn encode_delta(delta: &Delta) -> Vec<u8> {
        codec::encode(ObjectKind::Delta, delta)
    }

    /// Decodes a delta object of any supported format version.
    pub fn decode_delta(bytes: &[u8]) -> Result<Delta, StateError> {
        crate::legacy::decode_delta(bytes, "delta")
    }

    /// Encodes a plan object.
    pub fn encode_plan(plan: &Plan) -> Vec<u8> {
        codec::encode(ObjectKind::Plan, plan)
    }

    /// Decodes a plan object of any supported format version.
    pub fn decode_plan(bytes: &[u8]) -> Result<Plan, StateError> {
        crate::legacy::decode_plan(bytes, "plan")
    }

    /// Encodes a snapshot object of `state`.
    pub fn encode_snapshot(state: &State) -> Vec<u8> {
        crate::snapshot::encode_snapshot(state, 1, 0)
    }

    /// Decodes a snapshot object of any supported format version.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<State, StateError> {
        crate::snapshot::decode_snapshot(bytes, "snapshot").map(|(_, state)| state)
    }
}
