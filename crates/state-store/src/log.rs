//! The state log of one source: conditional creates of plans and deltas, snapshots that fold
//! them, loading, cleanup and verification.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};

use crate::codec::{self, ObjectKind};
use crate::lease::{LEASE_NAME, Lease};
use crate::legacy::{decode_delta, decode_plan};
use crate::merge::{LaterDeltas, MERGED_DELTAS_MAX, MergeError};
use crate::records::SnapshotHeader;
use crate::records::now_ms;
use crate::snapshot::{
    decode_snapshot, decode_snapshot_from, decode_snapshot_merged, encode_snapshot,
};
use crate::spool;
use crate::state::LOAD_FOLD_SHARE;
use crate::stream::{Download, ObjectSource};
use crate::{
    CommittedOutput, Delta, FileEntry, Location, Origin, Plan, PlannedFile, RelPath, SourceId,
    State, StateError,
};

/// How many log objects are fetched at once while loading or verifying.
const LOAD_CONCURRENCY: usize = 16;
/// How many of the deltas fetched are decoded ahead of the one being applied while loading.
const DECODE_AHEAD: usize = 1;
/// About how many bytes of deltas a load fetches ahead of the one it applies.
const FETCH_AHEAD_BYTES: u64 = 2 << 20;

/// How many deltas a load fetches at once, the largest of them `largest` bytes: up to
/// [`LOAD_CONCURRENCY`], within [`FETCH_AHEAD_BYTES`] (16 deltas of a 10,000-file batch, 450 KB
/// each, were 7 MB of a 1,000,000-file load's peak; at 2 MiB, with one delta decoded ahead, that
/// peak was 3.5 MB lower than at 4 MiB with two).
fn fetch_ahead(largest: u64) -> usize {
    let fit = FETCH_AHEAD_BYTES / largest.max(1);
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, LOAD_CONCURRENCY)
}

/// The deltas a load merges into a snapshot from an object store are held whole in memory: at
/// most this many bytes of them, or a [`REMOTE_MERGE_SHARE`] of the snapshot's size if more.
/// Beyond, they are copied to the spool directory ([`StateLog::with_spool_dir`]) and merged from
/// there, or folded, a few MiB at a time, without one.
const REMOTE_MERGE_BYTES: u64 = 4 << 20;
/// See [`REMOTE_MERGE_BYTES`].
const REMOTE_MERGE_SHARE: u64 = 8;

/// Why copying deltas to the spool directory stopped.
enum Spooling {
    /// Reading a delta failed: the load fails.
    Storage(StateError),
    /// The spool directory could not take a copy: the deltas are folded.
    Refused(String),
}

/// The state log of one source id under a state location.
///
/// Objects live at `<state>/<source-id>/<generation, 20 digits>.<kind>`:
///
/// * `….plan` is created (if absent) before a batch is processed: it records which bytes of
///   which files the batch covers, so that an interrupted batch is redone identically.
/// * `….delta` is created (if absent) after the batch's output is written: that create is the
///   commit point. If it already exists, another writer got there first: [`StateError::Fenced`].
/// * `….snapshot` holds the whole state at its generation. Once it is durable, the deltas,
///   plans and snapshots it supersedes are deleted; a crash in between only leaves stale objects,
///   which loading ignores and the next cleanup removes.
///
/// Loading reads the newest snapshot and the deltas after it, in generation order: merged
/// into the snapshot's entries as it is read (up to 64 deltas; from an object store, held in
/// memory while they are small beside it, else from copies in the spool directory), folded
/// into it otherwise. A plan one past the last delta is the
/// interrupted batch to redo.
#[derive(Debug, Clone)]
pub struct StateLog {
    dir: Location,
    source_id: SourceId,
    writer_id: u64,
    /// Recorded in every delta this log builds.
    origin: Option<Origin>,
    /// Where a load copies deltas of an object store too large to hold for a merge
    /// ([`StateLog::with_spool_dir`]).
    spool_dir: Option<PathBuf>,
}

/// The result of [`StateLog::load`].
#[derive(Debug, Default)]
pub struct LoadedState {
    /// The committed state.
    pub state: State,
    /// The plan of an interrupted batch, to be redone before anything else.
    pub pending: Option<Plan>,
    /// How many times a redo of `pending` was started already ([`StateLog::record_redo`]):
    /// each of them, like the first attempt, ended without a commit.
    pub pending_redos: u32,
    /// The generation of the snapshot the state was loaded from, if any.
    pub snapshot_generation: Option<u64>,
    /// Objects that a newer snapshot or delta supersedes (a process stopped before cleaning up);
    /// safe to remove with [`StateLog::remove`].
    pub stale: Vec<Path>,
    /// The commits with an output object among the deltas loaded after the snapshot, in
    /// generation order: the ones whose commit records a process may have left unwritten
    /// (the output sink's manifest is written after each commit, before any snapshot folds it).
    pub committed_outputs: Vec<CommittedOutput>,
    /// How many log objects were read.
    pub objects_read: usize,
    /// Their total size in bytes.
    pub bytes_read: u64,
    /// How the deltas after the snapshot were brought into the state.
    pub deltas: DeltasRead,
    /// Why the spool directory ([`StateLog::with_spool_dir`]) was not used for deltas too large
    /// to merge from memory, if it was needed: they were folded instead.
    pub spool_refused: Option<String>,
}

/// How [`StateLog::load`] brought the deltas after the snapshot into the state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltasRead {
    /// There were none.
    #[default]
    None,
    /// Merged into the snapshot's entries as it was read: read from their files (a local
    /// store), or held whole (from an object store, while they are small beside the snapshot).
    Merged,
    /// Merged as the snapshot was read, from copies in the spool directory: deltas of an
    /// object store too large to hold whole beside the state.
    Spooled,
    /// Applied to the state after it was read: no snapshot, more deltas than a merge reads at
    /// once, an older format, or deltas of an object store too large to hold whole and no
    /// spool directory to copy them to.
    Folded,
}

/// One object of the log, as listed by [`StateLog::objects`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogObject {
    /// Its generation.
    pub generation: u64,
    /// What it holds.
    pub kind: ObjectKind,
    /// Size in bytes.
    pub size: u64,
    /// Its path in the store.
    pub path: Path,
}

/// What [`StateLog::store_snapshot`] stored and removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSnapshot {
    /// The generation of the snapshot.
    pub generation: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many objects it superseded and were removed.
    pub removed: usize,
}

/// What is stored under one source's state directory, as [`StateLog::activity`] found it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Activity {
    /// Every object, by path.
    pub objects: Vec<Path>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// When the newest of them was last written, by the store's clock, in milliseconds since
    /// the Unix epoch.
    pub last_modified_ms: Option<u64>,
    /// The writer's lease, if one is there.
    pub lease: Option<Lease>,
}

impl Activity {
    /// When anything last happened to the source: the newest object written (a plan, a
    /// delta, a snapshot) or the lease renewed, in milliseconds since the Unix epoch.
    pub fn last_active_ms(&self) -> Option<u64> {
        let lease = self.lease.as_ref().map(Lease::renewed_ms);
        self.last_modified_ms.max(lease)
    }

    /// The lease, if it is live at `now_ms` ([`Lease::is_live`]).
    pub fn live_lease(&self, now_ms: u64) -> Option<&Lease> {
        self.lease.as_ref().filter(|lease| lease.is_live(now_ms))
    }

    /// How long nothing happened to the source, at `now_ms` (zero for a time ahead of it, or
    /// for nothing stored).
    pub fn idle(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.last_active_ms().unwrap_or(now_ms)))
    }

    /// Whether the source's state may be removed at `now_ms`, as `gleaner state gc` decides: it
    /// has no live writer (lease) and nothing happened to it for `idle_for` (no plan, commit,
    /// snapshot or lease renewal). Returns how long it has been idle, or why it is kept.
    pub fn collectable(&self, now_ms: u64, idle_for: Duration) -> Result<Duration, Kept> {
        if let Some(lease) = self.live_lease(now_ms) {
            return Err(Kept::LiveWriter(lease.clone()));
        }
        let idle = self.idle(now_ms);
        if self.objects.is_empty() || idle < idle_for {
            return Err(Kept::Active { idle });
        }
        Ok(idle)
    }
}

/// Why [`Activity::collectable`] keeps a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    /// A writer's lease is live.
    LiveWriter(Lease),
    /// Something happened to it more recently than the idle time asked for (or it holds
    /// nothing).
    Active {
        /// How long ago.
        idle: Duration,
    },
}

/// The result of [`StateLog::verify`].
#[derive(Debug, Default)]
pub struct Verification {
    /// Objects read and checked.
    pub objects: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Every problem found; empty when the log is sound.
    pub problems: Vec<StateError>,
    /// The committed generation, when the log could be loaded.
    pub generation: Option<u64>,
}

impl StateLog {
    /// Opens the log of `source_id` under `state`; nothing is read until [`StateLog::load`].
    pub fn new(state: &Location, source_id: &SourceId) -> Self {
        Self {
            dir: state.child(source_id.as_str()),
            source_id: source_id.clone(),
            writer_id: fastrand::u64(1..),
            origin: None,
            spool_dir: None,
        }
    }

    /// The same log, copying deltas to `dir` while it loads them from an object store, when
    /// they are too large to hold in memory for the merge. The copies are unnamed files (no
    /// other program sees them), gone when the load ends. Without it, or when `dir` cannot
    /// take them (not writable, with less than four times their size free, or a file system in
    /// memory, where the copies would cost the memory they save), such deltas are folded into the state after it is read, which
    /// holds a few MiB more at its peak ([`LoadedState::spool_refused`] says why).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// The same log, recording `origin` (the watch root of this writer) in every delta it
    /// builds ([`StateLog::delta`]).
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The source ids that have a log under `state`, sorted.
    pub async fn sources(state: &Location) -> Result<Vec<SourceId>, StateError> {
        let listing = state
            .store()
            .list_with_delimiter(Some(state.prefix()))
            .await
            .map_err(|source| StateError::Storage {
                object: state.to_string(),
                source,
            })?;
        let mut ids: Vec<SourceId> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|name| SourceId::new(name).ok()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The location holding this source's log objects.
    pub fn location(&self) -> &Location {
        &self.dir
    }

    /// The source id.
    pub fn source_id(&self) -> &SourceId {
        &self.source_id
    }

    /// The watch root this log records in the deltas it builds, if any.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// A random id of this writer, recorded in every object it writes.
    pub fn writer_id(&self) -> u64 {
        self.writer_id
    }

    /// The plan of a batch to process as `generation`, stamped with this writer and the time.
    pub fn plan(&self, generation: u64, output_key: String, files: Vec<PlannedFile>) -> Plan {
        Plan {
            generation,
            writer_id: self.writer_id,
            created_at_ms: now_ms(),
            output_key,
            files,
            replay: false,
        }
    }

    /// The delta committing `generation`, stamped with this writer, its origin and the time.
    pub fn delta(
        &self,
        generation: u64,
        output_key: Option<String>,
        upserts: Vec<(RelPath, FileEntry)>,
    ) -> Delta {
        Delta {
            generation,
            writer_id: self.writer_id,
            committed_at_ms: now_ms(),
            output_key,
            upserts,
            origin: self.origin.clone(),
            replay: false,
        }
    }

    /// The path of the object of `kind` for `generation`.
    pub fn object_path(&self, generation: u64, kind: ObjectKind) -> Path {
        self.dir.object(&object_name(generation, kind))
    }

    /// Reads the newest snapshot and the deltas after it, and brings them together into the
    /// state (see [`StateLog`] for how).
    ///
    /// Every object read is checked (header, checksum, kind, generation); any problem is an
    /// error naming the object. A gap in the deltas is an error too: continuing would silently
    /// forget files and process them again.
    pub async fn load(&self) -> Result<LoadedState, StateError> {
        // An object listed but gone when read was superseded by a snapshot that a running
        // writer stored meanwhile: read the log again. Still changing after a few attempts
        // means someone is writing it faster than it can be read.
        const ATTEMPTS: usize = 5;
        for attempt in 1..ATTEMPTS {
            match self.load_once().await {
                // A listing of a local directory is not atomic: taken while a writer creates
                // and removes objects, it can show a gap that is not there. A real gap stays.
                Err(e) if e.is_not_found() || matches!(e, StateError::Inconsistent { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
                }
                result => return result,
            }
        }
        self.load_once().await.map_err(|e| match e {
            StateError::Storage { object, source }
                if matches!(source, object_store::Error::NotFound { .. }) =>
            {
                self.inconsistent(format!(
                    "its objects kept disappearing while it was read {ATTEMPTS} times: \
                     another writer is folding it ({object}: {source})"
                ))
            }
            e => e,
        })
    }

    async fn load_once(&self) -> Result<LoadedState, StateError> {
        let listing = self.list_log().await?;
        let mut loaded = LoadedState::default();

        let snapshot = listing.snapshots.iter().next_back();
        let base = snapshot.map_or(0, |(&generation, _)| generation);
        if snapshot.is_some() {
            loaded.stale.extend(
                listing
                    .snapshots
                    .range(..base)
                    .map(|(_, m)| m.location.clone()),
            );
        }
        let mut later = Vec::new();
        for (&generation, meta) in &listing.deltas {
            if generation <= base {
                loaded.stale.push(meta.location.clone());
            } else {
                later.push((generation, meta.location.clone(), meta.size));
            }
        }
        for ((generation, path, _), expected) in later.iter().zip(base + 1..) {
            if *generation != expected {
                return Err(self.inconsistent(format!(
                    "generation {expected} is missing: the next delta is {}",
                    self.dir.describe(path)
                )));
            }
        }
        match snapshot {
            Some((&generation, meta)) => {
                self.read_snapshot_and(generation, meta, later, &mut loaded)
                    .await?;
            }
            None => self.fold_deltas(later, &mut loaded).await?,
        }
        // Folded once here (in place), the deltas' entries take the snapshot's compact form: an
        // overlay entry costs about twice as much, and a long-running sidecar keeps this state.
        let mut state = std::mem::take(&mut loaded.state);
        loaded.state = blocking(move || {
            state.compact();
            Ok(state)
        })
        .await?;

        self.read_pending(listing.plans, listing.redos, &mut loaded)
            .await?;
        Ok(loaded)
    }

    /// Reads the plan one past the last committed generation into `loaded` (the batch to
    /// redo, with how often its redo started), and marks the other plans and redo markers
    /// stale.
    async fn read_pending(
        &self,
        plans: BTreeMap<u64, ObjectMeta>,
        redos: BTreeMap<u64, Vec<(u32, ObjectMeta)>>,
        loaded: &mut LoadedState,
    ) -> Result<(), StateError> {
        let committed = loaded.state.generation();
        for (generation, meta) in plans {
            if generation <= committed {
                loaded.stale.push(meta.location);
            } else if generation == committed + 1 {
                let bytes = self.read(&meta.location).await?;
                let object = self.dir.describe(&meta.location);
                let plan: Plan = decode_plan(&bytes, &object)?;
                if plan.generation != generation {
                    return Err(StateError::Corrupt {
                        object,
                        reason: format!("holds the plan of generation {}", plan.generation),
                    });
                }
                loaded.objects_read += 1;
                loaded.bytes_read += bytes.len() as u64;
                loaded.pending = Some(plan);
                loaded.pending_redos = redos
                    .get(&generation)
                    .and_then(|markers| markers.iter().map(|(attempt, _)| *attempt).max())
                    .unwrap_or(0);
            } else {
                return Err(self.inconsistent(format!(
                    "{} is beyond the last committed generation {committed}",
                    self.dir.describe(&meta.location)
                )));
            }
        }
        // Redo markers of a generation that is committed or has no plan: done with.
        let pending = loaded.pending.as_ref().map(|plan| plan.generation);
        for (generation, markers) in redos {
            if Some(generation) != pending {
                loaded
                    .stale
                    .extend(markers.into_iter().map(|(_, meta)| meta.location));
            }
        }
        Ok(())
    }

    /// Records that redo number `attempt` (from 1) of the plan of `generation` starts, before
    /// it reads anything: a marker object `<generation>.redo-<attempt>` next to the plan. A
    /// later load counts them ([`LoadedState::pending_redos`]): how many times the plan was
    /// started and the process ended before its commit, so that a batch that kills the process
    /// every time (out of memory) can be cut smaller, or given up, instead of being redone
    /// forever. Removed with the plan ([`StateLog::remove_plan`]); an older build ignores them.
    pub async fn record_redo(&self, generation: u64, attempt: u32) -> Result<(), StateError> {
        let path = self.dir.object(&redo_name(generation, attempt));
        let stamp = bytes::Bytes::from(now_ms().to_string());
        self.dir
            .create(&path, stamp)
            .await
            .map(drop)
            .map_err(|source| self.storage_error(&path, source))
    }

    /// Records that the watch root `retired` was taken over by `successor` (a new root in its
    /// place, or `--adopt-source`): `root-<id>.retired` beside the log, naming the successor.
    /// The retired root is refused from then on ([`StateLog::root_retired`]): a root that comes
    /// back after being replaced is a second live root (two Pods of one name in two clusters),
    /// and the two would take turns, each forgetting the other's files.
    pub async fn retire_root(&self, retired: u64, successor: &Origin) -> Result<(), StateError> {
        let path = self.dir.object(&retired_name(retired));
        let note = bytes::Bytes::from(format!("{successor}\n"));
        self.dir
            .create(&path, note)
            .await
            .map(drop)
            .map_err(|source| self.storage_error(&path, source))
    }

    /// The root that took over from root `root_id`, as recorded by [`StateLog::retire_root`],
    /// if it was retired.
    pub async fn root_retired(&self, root_id: u64) -> Result<Option<String>, StateError> {
        let path = self.dir.object(&retired_name(root_id));
        match self.dir.store().get(&path).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|source| self.storage_error(&path, source))?;
                Ok(Some(String::from_utf8_lossy(&bytes).trim().to_string()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.storage_error(&path, source)),
        }
    }

    /// Takes back the retirement of root `root_id` (`--adopt-source` from it). Gone already
    /// is fine.
    pub async fn unretire_root(&self, root_id: u64) -> Result<(), StateError> {
        self.remove(vec![self.dir.object(&retired_name(root_id))])
            .await
    }

    /// Removes the marker of redo `attempt` of `generation` ([`StateLog::record_redo`]): that
    /// redo ended in its process (it failed there), it was no abnormal end. Gone already is
    /// fine.
    pub async fn remove_redo(&self, generation: u64, attempt: u32) -> Result<(), StateError> {
        self.remove(vec![self.dir.object(&redo_name(generation, attempt))])
            .await
    }

    /// Records the intent to process `plan`. Fails with [`StateError::Fenced`] if a plan for its
    /// generation exists: another writer is working on this source.
    pub async fn create_plan(&self, plan: &Plan) -> Result<(), StateError> {
        let path = self.object_path(plan.generation, ObjectKind::Plan);
        self.create(
            &path,
            codec::encode(ObjectKind::Plan, plan),
            plan.generation,
        )
        .await
    }

    /// Commits `delta`. Fails with [`StateError::Fenced`] if its generation is already
    /// committed: another writer owns the state.
    ///
    /// A create-if-absent alone is not enough: once a snapshot covers a generation, its delta is
    /// deleted and the slot is free again. So after the create, the log is checked for a
    /// snapshot at or beyond this generation, which a writer that stalled since its last check
    /// (and whose delta now lies there, stale and ignored) must take as losing the fence.
    /// Snapshots are written before anything is deleted, so a freed slot always has one.
    pub async fn commit(&self, delta: &Delta) -> Result<(), StateError> {
        let generation = delta.generation;
        let path = self.object_path(generation, ObjectKind::Delta);
        self.create(&path, codec::encode(ObjectKind::Delta, delta), generation)
            .await?;
        let listing = self.list_log().await?;
        match listing.snapshots.range(generation..).next() {
            Some((_, meta)) => Err(self.fenced(&meta.location, generation)),
            None => Ok(()),
        }
    }

    /// Fails with [`StateError::Fenced`] if `generation` is already committed (its delta exists,
    /// or a snapshot covers it).
    ///
    /// A writer calls this between processing a batch and writing its output, so that it never
    /// replaces the output of a generation another writer committed: after a writer has created
    /// a plan, nobody else can commit that generation, so a check that passes stays true.
    pub async fn ensure_uncommitted(&self, generation: u64) -> Result<(), StateError> {
        let listing = self.list_log().await?;
        let committed = listing.deltas.get(&generation).or_else(|| {
            listing
                .snapshots
                .range(generation..)
                .next()
                .map(|(_, meta)| meta)
        });
        match committed {
            Some(meta) => Err(StateError::Fenced {
                location: self.dir.to_string(),
                object: self.dir.describe(&meta.location),
                generation,
            }),
            None => Ok(()),
        }
    }

    /// The first object (plan, delta or snapshot) of a generation above `generation`, other
    /// than the plan of `pending` (an interrupted batch this writer loaded), if any: a sign that
    /// another writer has moved on since this one loaded the log.
    pub async fn first_after(
        &self,
        generation: u64,
        pending: Option<u64>,
    ) -> Result<Option<LogObject>, StateError> {
        Ok(self.objects().await?.into_iter().find(|o| {
            o.generation > generation
                && !(o.kind == ObjectKind::Plan && Some(o.generation) == pending)
        }))
    }

    /// Stores a snapshot of `state` at its generation, then removes every object it supersedes:
    /// deltas and plans up to that generation, and older snapshots.
    ///
    /// Nothing is removed before the snapshot is durable (the put returned), so a crash at any
    /// point leaves a log that loads to the same state.
    ///
    /// Encoding is CPU work linear in the state. On a multi-threaded runtime it runs in
    /// [`block_in_place`](tokio::task::block_in_place), so the runtime's other tasks move to
    /// other threads meanwhile; on a current-thread runtime it runs inline.
    pub async fn store_snapshot(&self, state: &State) -> Result<StoredSnapshot, StateError> {
        let generation = state.generation();
        let bytes = cpu_work(|| encode_snapshot(state, self.writer_id, now_ms()));
        let size = bytes.len() as u64;
        let path = self.object_path(generation, ObjectKind::Snapshot);
        // Overwriting is safe: a snapshot of a committed generation has one possible content
        // (a retry after a put whose answer was lost writes the same state again).
        self.dir
            .store()
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|source| self.storage_error(&path, source))?;
        let listing = self.list_log().await?;
        let superseded: Vec<Path> = listing
            .deltas
            .range(..=generation)
            .chain(listing.plans.range(..=generation))
            .chain(listing.snapshots.range(..generation))
            .map(|(_, meta)| meta.location.clone())
            .chain(
                listing
                    .redos
                    .range(..=generation)
                    .flat_map(|(_, markers)| markers.iter().map(|(_, m)| m.location.clone())),
            )
            .collect();
        let removed = superseded.len();
        self.remove(superseded).await?;
        Ok(StoredSnapshot {
            generation,
            bytes: size,
            removed,
        })
    }

    /// Removes the plan of a committed generation (or of a batch that commits nothing), and the
    /// markers of its first `redos` redos ([`StateLog::record_redo`]). Objects already gone
    /// are fine.
    pub async fn remove_plan(&self, generation: u64, redos: u32) -> Result<(), StateError> {
        let markers = (1..=redos).map(|attempt| self.dir.object(&redo_name(generation, attempt)));
        self.remove(
            std::iter::once(self.object_path(generation, ObjectKind::Plan))
                .chain(markers)
                .collect(),
        )
        .await
    }

    /// Removes stale objects (see [`LoadedState::stale`]). Objects already gone are fine.
    pub async fn remove(&self, paths: Vec<Path>) -> Result<(), StateError> {
        if paths.is_empty() {
            return Ok(());
        }
        let stream = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
        let mut deleted = self.dir.store().delete_stream(stream);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(self.storage_error(self.dir.prefix(), source)),
            }
        }
        Ok(())
    }

    /// Lists the log's objects, ordered by generation then kind.
    pub async fn objects(&self) -> Result<Vec<LogObject>, StateError> {
        let listing = self.list_log().await?;
        let mut objects: Vec<LogObject> = [
            (ObjectKind::Snapshot, listing.snapshots),
            (ObjectKind::Delta, listing.deltas),
            (ObjectKind::Plan, listing.plans),
        ]
        .into_iter()
        .flat_map(|(kind, map)| {
            map.into_iter().map(move |(generation, meta)| LogObject {
                generation,
                kind,
                size: meta.size,
                path: meta.location,
            })
        })
        .collect();
        objects.sort_by_key(|o| (o.generation, o.kind as u8));
        Ok(objects)
    }

    /// Sets aside the damaged deltas at the end of the log: from the newest delta down, each one
    /// that does not decode (corrupt, truncated, of an unknown version or codec) is copied to
    /// `<name>.damaged` (which loading ignores) and removed, until a sound one. Returns the
    /// generations set aside, newest first.
    ///
    /// Damage anywhere else is left alone: loading still reports it. This is the first step of
    /// a repair, run while no writer of this source is running; the batches of those
    /// generations are then committed again from their outputs.
    pub async fn set_aside_damaged_tail(&self) -> Result<Vec<u64>, StateError> {
        let objects = self.objects().await?;
        let mut set_aside = Vec::new();
        for object in objects.iter().rev().filter(|o| o.kind == ObjectKind::Delta) {
            let bytes = self.read(&object.path).await?;
            let name = self.dir.describe(&object.path);
            match check_object(object, &bytes, &name) {
                Ok(()) => break,
                Err(
                    StateError::Corrupt { .. }
                    | StateError::UnsupportedVersion { .. }
                    | StateError::UnknownCodec { .. },
                ) => {}
                Err(e) => return Err(e),
            }
            let filename = object.path.filename().unwrap_or_default();
            let aside = self.dir.object(&format!("{filename}.damaged"));
            self.dir
                .store()
                .copy(&object.path, &aside)
                .await
                .map_err(|source| self.storage_error(&aside, source))?;
            self.remove(vec![object.path.clone()]).await?;
            set_aside.push(object.generation);
        }
        Ok(set_aside)
    }

    /// Reads and checks every object of the log, stale ones included, then loads it; reports
    /// every problem found instead of stopping at the first.
    pub async fn verify(&self) -> Result<Verification, StateError> {
        let objects = self.objects().await?;
        let mut report = Verification::default();
        let mut checks = futures::stream::iter(objects)
            .map(|object| async move {
                let bytes = self.read(&object.path).await?;
                let name = self.dir.describe(&object.path);
                let size = bytes.len() as u64;
                let checked = blocking(move || check_object(&object, &bytes, &name)).await;
                Ok::<_, StateError>((size, checked))
            })
            .buffered(LOAD_CONCURRENCY);
        while let Some(result) = checks.next().await {
            match result {
                Ok((size, checked)) => {
                    report.objects += 1;
                    report.bytes += size;
                    report.problems.extend(checked.err());
                }
                // Removed by a running writer's snapshot since it was listed: superseded.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    report.objects += 1;
                    report.problems.push(e);
                }
            }
        }
        if report.problems.is_empty() {
            match self.load().await {
                Ok(loaded) => report.generation = Some(loaded.state.generation()),
                Err(e) => report.problems.push(e),
            }
        }
        Ok(report)
    }

    /// Writes this writer's [`Lease`], replacing the one there: at start, and every
    /// [`LEASE_RENEW`](crate::LEASE_RENEW) while running. It names the writer by its origin
    /// ([`StateLog::with_origin`]) and process id.
    pub async fn renew_lease(&self) -> Result<(), StateError> {
        let path = self.dir.object(LEASE_NAME);
        let lease = Lease {
            writer_id: self.writer_id,
            host: self
                .origin
                .as_ref()
                .map(|o| o.host.clone())
                .unwrap_or_default(),
            watch_dir: self
                .origin
                .as_ref()
                .map(|o| o.watch_dir.clone())
                .unwrap_or_default(),
            pid: std::process::id(),
            renewed_at_ms: now_ms(),
            stored_at_ms: 0,
        };
        self.dir
            .store()
            .put(&path, PutPayload::from(lease.encode().into_bytes()))
            .await
            .map(drop)
            .map_err(|source| self.storage_error(&path, source))
    }

    /// Removes this writer's lease, if the lease there is still its own: at a clean exit, so
    /// that the source is known to have no writer from then on, not only once the lease ages.
    pub async fn release_lease(&self) -> Result<(), StateError> {
        match self.lease().await? {
            Some(lease) if lease.writer_id == self.writer_id => {
                self.remove(vec![self.dir.object(LEASE_NAME)]).await
            }
            _ => Ok(()),
        }
    }

    /// The lease of the last writer that started on this source, if it left one.
    pub async fn lease(&self) -> Result<Option<Lease>, StateError> {
        let path = self.dir.object(LEASE_NAME);
        let get = match self.dir.store().get(&path).await {
            Ok(get) => get,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(self.storage_error(&path, source)),
        };
        let stored_at_ms = u64::try_from(get.meta.last_modified.timestamp_millis()).unwrap_or(0);
        match get.bytes().await {
            Ok(bytes) => Ok(Some(Lease::decode(
                &String::from_utf8_lossy(&bytes),
                stored_at_ms,
            ))),
            // Removed between the two requests: released.
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.storage_error(&path, source)),
        }
    }

    /// Every object stored under this source's directory (log objects, the lease, retired
    /// roots, damaged objects set aside, whatever else), how large, and when it was last
    /// written to: what `gleaner state list` shows and `gleaner state gc` decides on. Reads
    /// nothing but the listing and the lease, so a damaged log can still be looked at.
    pub async fn activity(&self) -> Result<Activity, StateError> {
        let metas: Vec<ObjectMeta> = self
            .dir
            .store()
            .list(Some(self.dir.prefix()))
            .try_collect()
            .await
            .map_err(|source| self.storage_error(self.dir.prefix(), source))?;
        let last_modified_ms = metas
            .iter()
            .map(|m| u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0))
            .max();
        Ok(Activity {
            bytes: metas.iter().map(|m| m.size).sum(),
            objects: metas.into_iter().map(|m| m.location).collect(),
            last_modified_ms,
            lease: self.lease().await?,
        })
    }

    /// Removes `objects` (an [`Activity`]'s) and, in a local directory, the source's directory
    /// once empty: what `gleaner state gc` does to a source whose writer is gone.
    pub async fn remove_source(&self, objects: Vec<Path>) -> Result<(), StateError> {
        self.remove(objects).await?;
        if let Some(dir) = self.dir.local_dir().map(std::path::Path::to_path_buf) {
            // Not empty (an object written meanwhile) or gone already: left as it is.
            let _ = blocking(move || Ok(std::fs::remove_dir(&dir))).await;
        }
        Ok(())
    }

    /// Removes temporary files of this log's objects that a killed process left in a local
    /// directory. Returns how many were removed.
    pub fn remove_orphaned_temporaries(&self) -> usize {
        self.dir.remove_orphaned_temporaries(|name| {
            parse_object_name(name).is_some() || name == LEASE_NAME
        })
    }

    async fn create(&self, path: &Path, bytes: Vec<u8>, generation: u64) -> Result<(), StateError> {
        match self.dir.create(path, bytes.into()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.fenced(path, generation)),
            Err(source) => Err(self.storage_error(path, source)),
        }
    }

    fn fenced(&self, path: &Path, generation: u64) -> StateError {
        StateError::Fenced {
            location: self.dir.to_string(),
            object: self.dir.describe(path),
            generation,
        }
    }

    /// Reads the deltas `later` (generation, path, size; consecutive from the state's next
    /// generation) and applies them to `loaded`'s state, in order.
    async fn fold_deltas(
        &self,
        later: Vec<(u64, Path, u64)>,
        loaded: &mut LoadedState,
    ) -> Result<(), StateError> {
        if !later.is_empty() {
            loaded.deltas = DeltasRead::Folded;
        }
        // Many deltas are fetched at once (a store's latency), but decoded only just ahead of
        // their turn: a decoded delta takes a few times its bytes.
        let largest = later.iter().map(|(_, _, size)| *size).max().unwrap_or(0);
        let mut fetches = futures::stream::iter(later)
            .map(|(_, path, _)| async move {
                let bytes = self.read(&path).await?;
                Ok::<_, StateError>((path, bytes))
            })
            .buffered(fetch_ahead(largest))
            .map_ok(|(path, bytes)| async move {
                let object = self.dir.describe(&path);
                let size = bytes.len() as u64;
                let delta: Delta = blocking(move || decode_delta(&bytes, &object)).await?;
                Ok::<_, StateError>((path, delta, size))
            })
            .try_buffered(DECODE_AHEAD);
        // Deltas are applied in groups of a sixty-fourth of the state's entries: merged into it
        // together ([`State::apply_owned_many`]), for a few MiB held.
        let mut group = Vec::new();
        let mut group_upserts = 0usize;
        loop {
            let fetched = fetches.try_next().await?;
            let full = group_upserts.saturating_mul(LOAD_FOLD_SHARE) >= loaded.state.len();
            if !group.is_empty() && (full || fetched.is_none()) {
                group_upserts = 0;
                self.apply_group(std::mem::take(&mut group), loaded).await?;
            }
            let Some((path, delta, size)) = fetched else {
                return Ok(());
            };
            loaded.committed_outputs.extend(CommittedOutput::of(&delta));
            loaded.objects_read += 1;
            loaded.bytes_read += size;
            group_upserts += delta.upserts.len();
            group.push((path, delta));
        }
    }

    /// Applies a group of decoded deltas (with their objects) to the state being loaded, on a
    /// blocking thread; a delta that does not apply names its object.
    async fn apply_group(
        &self,
        group: Vec<(Path, Delta)>,
        loaded: &mut LoadedState,
    ) -> Result<(), StateError> {
        let (objects, deltas): (Vec<Path>, Vec<Delta>) = group.into_iter().unzip();
        let before = loaded.state.generation();
        let mut state = std::mem::take(&mut loaded.state);
        loaded.state = blocking(move || state.apply_owned_many(deltas).map(|()| state))
            .await
            .map_err(|e| match e {
                // `current` is the generation the misplaced delta had to follow: its place in
                // the group is how far that is past the state's.
                StateError::OutOfOrder { current, .. } => {
                    let misplaced = usize::try_from(current.saturating_sub(before))
                        .unwrap_or(usize::MAX)
                        .min(objects.len() - 1);
                    StateError::Corrupt {
                        object: self.dir.describe(&objects[misplaced]),
                        reason: e.to_string(),
                    }
                }
                e => e,
            })?;
        Ok(())
    }

    /// Reads the snapshot of `generation` (`meta`) into `loaded` with the deltas `later` after
    /// it: merged in as the snapshot is read ([`crate::merge`]) where they can be, folded into
    /// it afterwards otherwise.
    async fn read_snapshot_and(
        &self,
        generation: u64,
        meta: &ObjectMeta,
        later: Vec<(u64, Path, u64)>,
        loaded: &mut LoadedState,
    ) -> Result<(), StateError> {
        let merged = if (1..=MERGED_DELTAS_MAX).contains(&later.len()) {
            self.read_snapshot_merged(meta, &later, loaded).await?
        } else {
            None
        };
        let (header, state, deltas) = match merged {
            Some((header, state, deltas)) => (header, state, Some(deltas)),
            None => {
                let (header, state) = self.read_snapshot(&meta.location).await?;
                (header, state, None)
            }
        };
        if header.generation != generation {
            return Err(StateError::Corrupt {
                object: self.dir.describe(&meta.location),
                reason: format!("holds the snapshot of generation {}", header.generation),
            });
        }
        loaded.state = state;
        loaded.snapshot_generation = Some(generation);
        loaded.objects_read += 1;
        loaded.bytes_read += meta.size;
        match deltas {
            Some(deltas) => {
                loaded.objects_read += deltas.len();
                loaded.bytes_read += later.iter().map(|(_, _, size)| size).sum::<u64>();
                loaded
                    .committed_outputs
                    .extend(deltas.iter().filter_map(CommittedOutput::of));
                Ok(())
            }
            None => self.fold_deltas(later, loaded).await,
        }
    }

    /// Reads the snapshot `snapshot` with the deltas `later` (consecutive, right after it)
    /// merged in: the state of the last delta, and the deltas without their entries; records
    /// in `loaded` how the deltas were read. `None` if they are not to be merged (see
    /// [`StateLog::read_snapshot_and`]): then they are folded.
    ///
    /// A local delta is read from its file as the merge needs it (a read buffer each). A
    /// delta in an object store is fetched whole first: a download left waiting until the
    /// merge reaches its paths could outlast the store's timeouts. Held in memory while they
    /// are small next to the snapshot ([`REMOTE_MERGE_SHARE`]), or small
    /// ([`REMOTE_MERGE_BYTES`]); copied to the spool directory beyond, where they are read as
    /// local ones; folded when there is none (the fold holds a few MiB of them at a time,
    /// where holding them whole beside the state would take all their bytes).
    async fn read_snapshot_merged(
        &self,
        snapshot: &ObjectMeta,
        later: &[(u64, Path, u64)],
        loaded: &mut LoadedState,
    ) -> Result<Option<(SnapshotHeader, State, Vec<Delta>)>, StateError> {
        let mut downloads = Vec::new();
        let Some((deltas, how)) = self
            .merge_sources(snapshot.size, later, &mut downloads, loaded)
            .await?
        else {
            return Ok(None);
        };
        let names: Vec<String> = later
            .iter()
            .map(|(_, path, _)| self.dir.describe(path))
            .collect();
        let get = self.get(&snapshot.location).await?;
        let size = get.meta.size;
        let snapshot = (
            ObjectSource::new(get.payload, &mut downloads),
            self.dir.describe(&snapshot.location),
        );
        let first = later.first().map_or(0, |(generation, _, _)| *generation);
        let decode = blocking(move || {
            let (snapshot, object) = snapshot;
            let deltas = deltas
                .into_iter()
                .zip(&names)
                .map(|((source, size), object)| (source, size, object.as_str()))
                .collect();
            let merged = LaterDeltas::open(deltas, first)
                .and_then(|later| decode_snapshot_merged(snapshot, size, &object, Some(later)));
            match merged {
                Ok(merged) => Ok(Some(merged)),
                Err(MergeError::Failed(e)) => Err(e),
                Err(MergeError::Unsuited) => Ok(None),
            }
        });
        let ((), merged) = tokio::join!(futures::future::join_all(downloads).map(drop), decode);
        if let Ok(Some(_)) = merged {
            loaded.deltas = how;
        }
        merged
    }

    /// The deltas `later` made ready for a merge into a snapshot of `snapshot_size` bytes, and
    /// how they are read (see [`StateLog::read_snapshot_merged`]); `None` if they are to be
    /// folded, with the reason in `loaded`. A download to drive goes to `downloads`.
    async fn merge_sources(
        &self,
        snapshot_size: u64,
        later: &[(u64, Path, u64)],
        downloads: &mut Vec<Download>,
        loaded: &mut LoadedState,
    ) -> Result<Option<(Vec<(ObjectSource, u64)>, DeltasRead)>, StateError> {
        let later_bytes: u64 = later.iter().map(|(_, _, size)| size).sum();
        Ok(Some(if self.dir.local_dir().is_some() {
            (
                self.open_deltas(later, downloads).await?,
                DeltasRead::Merged,
            )
        } else if later_bytes <= REMOTE_MERGE_BYTES.max(snapshot_size / REMOTE_MERGE_SHARE) {
            (self.fetch_deltas(later).await?, DeltasRead::Merged)
        } else {
            match self.spool_deltas(later).await? {
                Ok(spooled) => (spooled, DeltasRead::Spooled),
                Err(refused) => {
                    loaded.spool_refused = Some(refused);
                    return Ok(None);
                }
            }
        }))
    }

    /// Opens the local deltas `later` for a merge, each read from its file as the merge needs
    /// it: their sources with their sizes. A download to drive goes to `downloads`.
    async fn open_deltas(
        &self,
        later: &[(u64, Path, u64)],
        downloads: &mut Vec<Download>,
    ) -> Result<Vec<(ObjectSource, u64)>, StateError> {
        // Owned paths: a future that borrows them is not `Send` for every lifetime.
        let paths: Vec<Path> = later.iter().map(|(_, path, _)| path.clone()).collect();
        let opened: Vec<_> = futures::stream::iter(paths)
            .map(|path| async move {
                let get = self.get(&path).await?;
                Ok::<_, StateError>((get.payload, get.meta.size))
            })
            .buffered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(opened
            .into_iter()
            .map(|(payload, size)| (ObjectSource::new(payload, downloads), size))
            .collect())
    }

    /// Fetches the deltas `later` of an object store whole, for a merge.
    async fn fetch_deltas(
        &self,
        later: &[(u64, Path, u64)],
    ) -> Result<Vec<(ObjectSource, u64)>, StateError> {
        let paths: Vec<Path> = later.iter().map(|(_, path, _)| path.clone()).collect();
        futures::stream::iter(paths)
            .map(|path| async move {
                let bytes = self.read(&path).await?;
                let size = bytes.len() as u64;
                Ok::<_, StateError>((ObjectSource::Bytes(bytes), size))
            })
            .buffered(LOAD_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Copies the deltas `later` of an object store into the spool directory, for a merge that
    /// reads them from there as it reads local ones. A few are fetched at once, as a fold
    /// fetches them ([`fetch_ahead`]), and each is held only until it is written. `Ok(Err)`
    /// says why the spool directory cannot take them: then they are folded.
    async fn spool_deltas(
        &self,
        later: &[(u64, Path, u64)],
    ) -> Result<Result<Vec<(ObjectSource, u64)>, String>, StateError> {
        let Some(dir) = self.spool_dir.clone() else {
            return Ok(Err("no spool directory was given".into()));
        };
        let probe = dir.clone();
        let bytes = later.iter().map(|(_, _, size)| size).sum();
        if let Err(refused) = blocking(move || Ok(spool::usable(&probe, bytes))).await? {
            return Ok(Err(refused));
        }
        let largest = later.iter().map(|(_, _, size)| *size).max().unwrap_or(0);
        let paths: Vec<Path> = later.iter().map(|(_, path, _)| path.clone()).collect();
        let copied = futures::stream::iter(paths)
            .map(|path| {
                let dir = dir.clone();
                async move {
                    let bytes = self.read(&path).await.map_err(Spooling::Storage)?;
                    blocking(move || Ok(spool::copy(&dir, &bytes)))
                        .await
                        .map_err(Spooling::Storage)?
                        .map_err(Spooling::Refused)
                }
            })
            .buffered(fetch_ahead(largest))
            .try_collect::<Vec<_>>()
            .await;
        match copied {
            Ok(files) => Ok(Ok(files
                .into_iter()
                .map(|(file, size)| (ObjectSource::File(file), size))
                .collect())),
            Err(Spooling::Refused(refused)) => Ok(Err(refused)),
            Err(Spooling::Storage(e)) => Err(e),
        }
    }

    /// Reads and decodes the snapshot at `path` as it streams in: a local file on a blocking
    /// thread, a download's chunks handed to one as they arrive.
    async fn read_snapshot(&self, path: &Path) -> Result<(SnapshotHeader, State), StateError> {
        let get = self.get(path).await?;
        let object = self.dir.describe(path);
        let size = get.meta.size;
        let mut downloads = Vec::new();
        let source = ObjectSource::new(get.payload, &mut downloads);
        let decode = blocking(move || decode_snapshot_from(source, size, &object));
        let ((), decoded) = tokio::join!(futures::future::join_all(downloads).map(drop), decode);
        decoded
    }

    /// Starts reading the object at `path`.
    async fn get(&self, path: &Path) -> Result<object_store::GetResult, StateError> {
        let get = self.dir.store().get(path).await;
        get.map_err(|source| self.storage_error(path, source))
    }

    async fn read(&self, path: &Path) -> Result<bytes::Bytes, StateError> {
        let result = self.dir.store().get(path).await;
        match result {
            Ok(get) => get
                .bytes()
                .await
                .map_err(|source| self.storage_error(path, source)),
            Err(source) => Err(self.storage_error(path, source)),
        }
    }

    async fn list_log(&self) -> Result<LogListing, StateError> {
        let mut listing = LogListing::default();
        let depth = self.dir.prefix().parts().count() + 1;
        let mut objects = self.dir.store().list(Some(self.dir.prefix()));
        while let Some(meta) = objects
            .try_next()
            .await
            .map_err(|source| self.storage_error(self.dir.prefix(), source))?
        {
            if meta.location.parts().count() != depth {
                continue;
            }
            if let Some((generation, attempt)) = meta.location.filename().and_then(parse_redo_name)
            {
                listing
                    .redos
                    .entry(generation)
                    .or_default()
                    .push((attempt, meta));
                continue;
            }
            let Some((generation, kind)) = meta.location.filename().and_then(parse_object_name)
            else {
                continue;
            };
            match kind {
                ObjectKind::Delta => listing.deltas.insert(generation, meta),
                ObjectKind::Plan => listing.plans.insert(generation, meta),
                ObjectKind::Snapshot => listing.snapshots.insert(generation, meta),
            };
        }
        Ok(listing)
    }

    fn storage_error(&self, path: &Path, source: object_store::Error) -> StateError {
        StateError::Storage {
            object: self.dir.describe(path),
            source,
        }
    }

    fn inconsistent(&self, reason: String) -> StateError {
        StateError::Inconsistent {
            location: self.dir.to_string(),
            reason,
        }
    }
}

/// Decodes one object completely and checks that it holds the generation its name says.
fn check_object(object: &LogObject, bytes: &[u8], name: &str) -> Result<(), StateError> {
    let found = match object.kind {
        ObjectKind::Delta => decode_delta(bytes, name)?.generation,
        ObjectKind::Plan => decode_plan(bytes, name)?.generation,
        ObjectKind::Snapshot => decode_snapshot(bytes, name)?.0.generation,
    };
    if found != object.generation {
        return Err(StateError::Corrupt {
            object: name.to_string(),
            reason: format!("holds the {} of generation {found}", object.kind.name()),
        });
    }
    Ok(())
}

/// Runs CPU work (decoding) on the blocking pool, off the async runtime.
async fn blocking<T, F>(work: F) -> Result<T, StateError>
where
    F: FnOnce() -> Result<T, StateError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StateError::Storage {
            object: "(a decoding worker)".into(),
            source: object_store::Error::JoinError { source: e },
        }),
    }
}

#[derive(Default)]
struct LogListing {
    deltas: BTreeMap<u64, ObjectMeta>,
    plans: BTreeMap<u64, ObjectMeta>,
    snapshots: BTreeMap<u64, ObjectMeta>,
    /// Redo markers by generation: the attempt each records.
    redos: BTreeMap<u64, Vec<(u32, ObjectMeta)>>,
}

/// The name of the record that watch root `root_id` was taken over.
fn retired_name(root_id: u64) -> String {
    format!("root-{root_id:016x}.retired")
}

/// The name of the marker of redo `attempt` of the plan of `generation`.
fn redo_name(generation: u64, attempt: u32) -> String {
    format!("{generation:020}.redo-{attempt}")
}

fn parse_redo_name(name: &str) -> Option<(u64, u32)> {
    let (digits, attempt) = name.split_once(".redo-")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, attempt.parse().ok()?))
}

/// The file name of the object of `kind` for `generation`: 20 digits, so names sort like numbers.
fn object_name(generation: u64, kind: ObjectKind) -> String {
    format!("{generation:020}.{}", kind.name())
}

fn parse_object_name(name: &str) -> Option<(u64, ObjectKind)> {
    let (digits, ext) = name.split_once('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kind = match ext {
        "delta" => ObjectKind::Delta,
        "plan" => ObjectKind::Plan,
        "snapshot" => ObjectKind::Snapshot,
        _ => return None,
    };
    Some((digits.parse().ok()?, kind))
}

/// Runs CPU work that borrows from an async caller. On a multi-threaded runtime the worker
/// hands its other tasks to the runtime first, so they are not held up; a current-thread
/// runtime has no other thread to hand them to, and runs it inline.
fn cpu_work<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gc_keeps_a_source_with_a_live_lease_or_recent_objects() {
        let location = Location::parse("memory://").unwrap();
        let log = StateLog::new(&location, &"pod-1".parse().unwrap());
        let empty = log.activity().await.unwrap();
        assert!(matches!(
            empty.collectable(now_ms(), Duration::ZERO),
            Err(Kept::Active { .. })
        ));
        log.commit(&log.delta(1, None, Vec::new())).await.unwrap();
        log.renew_lease().await.unwrap();
        let activity = log.activity().await.unwrap();
        assert_eq!(activity.objects.len(), 2, "{:?}", activity.objects);
        let lease = activity.lease.clone().expect("the lease");
        assert_eq!(
            (lease.writer_id, lease.pid),
            (log.writer_id(), std::process::id())
        );
        let ttl = crate::LEASE_TTL.as_millis() as u64;
        let later = |ms: u64| activity.last_active_ms().unwrap() + ms;
        assert_eq!(
            activity.collectable(later(ttl - 1), Duration::ZERO),
            Err(Kept::LiveWriter(lease.clone()))
        );
        assert_eq!(
            activity.collectable(later(ttl), Duration::from_secs(3600)),
            Err(Kept::Active {
                idle: Duration::from_millis(ttl)
            })
        );
        assert_eq!(
            activity.collectable(later(ttl), Duration::from_millis(ttl)),
            Ok(Duration::from_millis(ttl))
        );
        // Another writer's lease is not released by this one; its own is.
        let other = StateLog::new(&location, &"pod-1".parse().unwrap());
        other.release_lease().await.unwrap();
        assert!(log.lease().await.unwrap().is_some());
        log.release_lease().await.unwrap();
        assert!(log.lease().await.unwrap().is_none());
        log.remove_source(log.activity().await.unwrap().objects)
            .await
            .unwrap();
        assert!(log.activity().await.unwrap().objects.is_empty());
    }

    #[test]
    fn object_names_round_trip() {
        let name = object_name(42, ObjectKind::Snapshot);
        assert_eq!(name, "00000000000000000042.snapshot");
        assert_eq!(parse_object_name(&name), Some((42, ObjectKind::Snapshot)));
        for bad in [
            "42.delta",
            "0000000000000000004x.delta",
            "00000000000000000042.tmp",
        ] {
            assert_eq!(parse_object_name(bad), None, "{bad}");
        }
    }
}
