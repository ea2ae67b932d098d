//! The state log of one source: conditional creates of plans and deltas, and loading.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::codec::{self, ObjectKind};
use crate::{Delta, Location, Plan, State, StateError};

/// How many log objects are fetched at once while loading.
const LOAD_CONCURRENCY: usize = 16;

/// The state log of one source id under a state location.
///
/// Objects live at `<state>/<source-id>/<generation, 20 digits>.<kind>`:
///
/// * `….plan` is created (if absent) before a batch is processed: it records which bytes of
///   which files the batch covers, so that an interrupted batch is redone identically.
/// * `….delta` is created (if absent) after the batch's output is written: that create is the
///   commit point. If it already exists, another writer got there first: [`StateError::Fenced`].
///
/// Loading folds the deltas in generation order; a plan one past the last delta is the
/// interrupted batch to redo.
#[derive(Debug, Clone)]
pub struct StateLog {
    dir: Location,
    source_id: String,
    writer_id: u64,
}

/// The result of [`StateLog::load`].
#[derive(Debug, Default)]
pub struct LoadedState {
    /// The committed state.
    pub state: State,
    /// The plan of an interrupted batch, to be redone before anything else.
    pub pending: Option<Plan>,
    /// Generations whose plans are still stored though their deltas are committed (a process
    /// stopped between commit and cleanup); safe to remove.
    pub stale_plans: Vec<u64>,
    /// How many log objects were read.
    pub objects_read: usize,
    /// Their total size in bytes.
    pub bytes_read: u64,
}

impl StateLog {
    /// Opens the log of `source_id` under `state`; nothing is read until [`StateLog::load`].
    pub fn new(state: &Location, source_id: &str) -> Result<Self, StateError> {
        validate_source_id(source_id)?;
        Ok(Self {
            dir: state.child(source_id),
            source_id: source_id.to_string(),
            writer_id: fastrand::u64(1..),
        })
    }

    /// The location holding this source's log objects.
    pub fn location(&self) -> &Location {
        &self.dir
    }

    /// The source id.
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// A random id of this writer, recorded in every object it writes.
    pub fn writer_id(&self) -> u64 {
        self.writer_id
    }

    /// The path of the object of `kind` for `generation`.
    pub fn object_path(&self, generation: u64, kind: ObjectKind) -> Path {
        self.dir.object(&object_name(generation, kind))
    }

    /// Reads the whole log and folds it into the committed state.
    ///
    /// Every object is checked (header, checksum, kind, generation); any problem is an error
    /// naming the object. A gap in the deltas is an error too: continuing would silently
    /// forget files and process them again.
    pub async fn load(&self) -> Result<LoadedState, StateError> {
        let listing = self.list_log().await?;

        for (expected, &generation) in (1..).zip(listing.deltas.keys()) {
            if generation != expected {
                return Err(self.inconsistent(format!(
                    "generation {expected} is missing: the next delta is {}",
                    self.dir
                        .describe(&self.object_path(generation, ObjectKind::Delta))
                )));
            }
        }

        let mut loaded = LoadedState::default();
        let mut fetches = futures::stream::iter(listing.deltas.into_values())
            .map(|path| async move { self.read(&path).await.map(|bytes| (path, bytes)) })
            .buffered(LOAD_CONCURRENCY);
        while let Some((path, bytes)) = fetches.try_next().await? {
            let object = self.dir.describe(&path);
            let delta: Delta = codec::decode(ObjectKind::Delta, &bytes, &object)?;
            loaded
                .state
                .apply(&delta)
                .map_err(|reason| StateError::Corrupt { object, reason })?;
            loaded.objects_read += 1;
            loaded.bytes_read += bytes.len() as u64;
        }

        let committed = loaded.state.generation();
        for (generation, path) in listing.plans {
            if generation <= committed {
                loaded.stale_plans.push(generation);
            } else if generation == committed + 1 {
                let bytes = self.read(&path).await?;
                let object = self.dir.describe(&path);
                let plan: Plan = codec::decode(ObjectKind::Plan, &bytes, &object)?;
                if plan.generation != generation {
                    return Err(StateError::Corrupt {
                        object,
                        reason: format!("holds the plan of generation {}", plan.generation),
                    });
                }
                loaded.objects_read += 1;
                loaded.bytes_read += bytes.len() as u64;
                loaded.pending = Some(plan);
            } else {
                return Err(self.inconsistent(format!(
                    "{} is beyond the last committed generation {committed}",
                    self.dir.describe(&path)
                )));
            }
        }
        Ok(loaded)
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
    pub async fn commit(&self, delta: &Delta) -> Result<(), StateError> {
        let path = self.object_path(delta.generation, ObjectKind::Delta);
        self.create(
            &path,
            codec::encode(ObjectKind::Delta, delta),
            delta.generation,
        )
        .await
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
                .map(|(_, path)| path)
        });
        match committed {
            Some(path) => Err(StateError::Fenced {
                location: self.dir.to_string(),
                object: self.dir.describe(path),
                generation,
            }),
            None => Ok(()),
        }
    }

    /// Removes the plan of a committed generation. A plan that is already gone is fine.
    pub async fn remove_plan(&self, generation: u64) -> Result<(), StateError> {
        let path = self.object_path(generation, ObjectKind::Plan);
        match self.dir.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.storage_error(&path, source)),
        }
    }

    /// Checks that objects can be written here, by writing and removing a probe object.
    ///
    /// Run at start-up so that an unwritable location fails the start, not the first commit
    /// an hour later.
    pub async fn check_writable(&self) -> Result<(), StateError> {
        check_writable(&self.dir, self.writer_id).await
    }

    async fn create(&self, path: &Path, bytes: Vec<u8>, generation: u64) -> Result<(), StateError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .dir
            .store()
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(StateError::Fenced {
                location: self.dir.to_string(),
                object: self.dir.describe(path),
                generation,
            }),
            Err(source) => Err(self.storage_error(path, source)),
        }
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
            let Some((generation, kind)) = meta.location.filename().and_then(parse_object_name)
            else {
                continue;
            };
            match kind {
                ObjectKind::Delta => listing.deltas.insert(generation, meta.location),
                ObjectKind::Plan => listing.plans.insert(generation, meta.location),
                ObjectKind::Snapshot => listing.snapshots.insert(generation, meta.location),
            };
        }
        if let Some((&generation, path)) = listing.snapshots.iter().next() {
            return Err(self.inconsistent(format!(
                "{} is a snapshot (generation {generation}); this build does not read snapshots",
                self.dir.describe(path)
            )));
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

/// Writes and removes a probe object at `location`, to find out early that it is unwritable.
pub async fn check_writable(location: &Location, writer_id: u64) -> Result<(), StateError> {
    let path = location.object(&format!("_gleaner-probe-{writer_id:016x}"));
    let store = location.store();
    let storage_error = |source| StateError::NotWritable {
        location: location.to_string(),
        source,
    };
    store
        .put(&path, PutPayload::from_static(b"probe"))
        .await
        .map_err(storage_error)?;
    match store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(storage_error(source)),
    }
}

#[derive(Default)]
struct LogListing {
    deltas: BTreeMap<u64, Path>,
    plans: BTreeMap<u64, Path>,
    snapshots: BTreeMap<u64, Path>,
}

/// The file name of the object of `kind` for `generation`: 20 digits, so names sort like numbers.
pub fn object_name(generation: u64, kind: ObjectKind) -> String {
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

/// Checks that a source id can name a directory in every store: 1 to 128 characters out of
/// ASCII letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn validate_source_id(id: &str) -> Result<(), StateError> {
    let invalid = |reason: &str| StateError::InvalidSourceId {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if id.is_empty() || id.len() > 128 {
        return Err(invalid("must be 1 to 128 characters long"));
    }
    if id.starts_with('.') {
        return Err(invalid("must not start with '.'"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "may only contain ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileEntry, Outcome, PlannedFile, RelPath};

    fn delta(generation: u64, path: &str) -> Delta {
        Delta {
            generation,
            upserts: vec![(
                RelPath::from(path),
                FileEntry {
                    size: 1,
                    mtime_ns: 1,
                    inode: 1,
                    btime_ns: 0,
                    offset: 1,
                    generation,
                    outcome: Outcome::Done,
                },
            )],
            ..Delta::default()
        }
    }

    fn plan(generation: u64) -> Plan {
        Plan {
            generation,
            output_key: format!("s/{generation}.ndjson"),
            files: vec![PlannedFile {
                path: "x".into(),
                size: 1,
                mtime_ns: 1,
                inode: 1,
                btime_ns: 0,
                start: 0,
            }],
            ..Plan::default()
        }
    }

    #[tokio::test]
    async fn commits_fold_and_plans_are_pending_or_stale() {
        let loc = Location::parse("memory://").unwrap();
        let log = StateLog::new(&loc, "pod-1").unwrap();
        assert_eq!(log.load().await.unwrap().state.generation(), 0);

        log.create_plan(&plan(1)).await.unwrap();
        log.commit(&delta(1, "a")).await.unwrap();
        log.create_plan(&plan(2)).await.unwrap();

        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.state.generation(), 1);
        assert_eq!(loaded.stale_plans, vec![1]);
        assert_eq!(loaded.pending, Some(plan(2)));

        log.remove_plan(1).await.unwrap();
        log.remove_plan(1).await.unwrap();
        log.commit(&delta(2, "b")).await.unwrap();
        let loaded = log.load().await.unwrap();
        assert_eq!(loaded.state.len(), 2);
        assert_eq!(loaded.pending, None);
    }

    #[tokio::test]
    async fn a_second_writer_is_fenced() {
        let loc = Location::parse("memory://").unwrap();
        let first = StateLog::new(&loc, "pod-1").unwrap();
        let second = StateLog::new(&loc, "pod-1").unwrap();
        first.commit(&delta(1, "a")).await.unwrap();
        let err = second.commit(&delta(1, "b")).await.unwrap_err();
        assert!(
            matches!(err, StateError::Fenced { generation: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("another writer owns the state"));
        first.create_plan(&plan(2)).await.unwrap();
        let err = second.create_plan(&plan(2)).await.unwrap_err();
        assert!(
            matches!(err, StateError::Fenced { generation: 2, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn committed_generations_are_fenced() {
        let loc = Location::parse("memory://").unwrap();
        let log = StateLog::new(&loc, "s").unwrap();
        log.ensure_uncommitted(1).await.unwrap();
        log.commit(&delta(1, "a")).await.unwrap();
        let err = log.ensure_uncommitted(1).await.unwrap_err();
        assert!(
            matches!(err, StateError::Fenced { generation: 1, .. }),
            "{err}"
        );
        log.ensure_uncommitted(2).await.unwrap();
    }

    #[tokio::test]
    async fn gaps_and_corruption_are_named_errors() {
        let loc = Location::parse("memory://").unwrap();
        let log = StateLog::new(&loc, "s").unwrap();
        log.commit(&delta(1, "a")).await.unwrap();
        log.commit(&delta(3, "c")).await.unwrap();
        let err = log.load().await.unwrap_err();
        assert!(err.to_string().contains("generation 2 is missing"), "{err}");

        let path = log.object_path(2, ObjectKind::Delta);
        let mut bytes = codec::encode(ObjectKind::Delta, &delta(2, "b"));
        let last = bytes.len() - 1;
        bytes[last] ^= 0x10;
        loc.store().put(&path, bytes.into()).await.unwrap();
        let err = log.load().await.unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("00000000000000000002.delta"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unrelated_objects_are_ignored() {
        let loc = Location::parse("memory://").unwrap();
        let log = StateLog::new(&loc, "s").unwrap();
        let store = loc.store();
        store
            .put(
                &log.location().object("README"),
                PutPayload::from_static(b"hi"),
            )
            .await
            .unwrap();
        store
            .put(
                &log.location()
                    .child("nested")
                    .object(&object_name(1, ObjectKind::Delta)),
                PutPayload::from_static(b"not a delta"),
            )
            .await
            .unwrap();
        log.check_writable().await.unwrap();
        assert_eq!(log.load().await.unwrap().objects_read, 0);
    }

    #[test]
    fn source_ids_must_be_path_safe() {
        for ok in ["pod-1", "my.host_name", "a"] {
            validate_source_id(ok).unwrap();
        }
        for bad in ["", ".hidden", "a/b", "sp ace", "é", &"x".repeat(129)] {
            assert!(validate_source_id(bad).is_err(), "{bad:?}");
        }
    }
}
