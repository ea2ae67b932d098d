//! Layouts of earlier format versions, read and converted to the current types.
//!
//! * Version 1 (before fingerprints): a [`FileEntry`] without its `fingerprint`, and the
//!   version 2 layouts below.
//! * Version 2 (before origins): a [`Delta`] without its `origin`, a snapshot header without
//!   its `origin`.
//! * Version 3 (before replays and baselines): a [`Delta`] and a [`Plan`] without their `replay`
//!   mark; its outcomes are a subset of the current ones ([`Outcome::Baselined`] is new).

use bincode::Decode;

use crate::StateError;
use crate::codec::{ObjectKind, PayloadReader};
use crate::model::Origin;
use crate::model::{FileEntry, Outcome, RelPath};
use crate::records::SnapshotHeader;
use crate::records::{Delta, Plan, PlannedFile};

/// A version 1 [`FileEntry`].
#[derive(Decode)]
pub(crate) struct FileEntryV1 {
    size: u64,
    mtime_ns: i64,
    inode: u64,
    btime_ns: i64,
    offset: u64,
    generation: u64,
    outcome: Outcome,
}

impl From<FileEntryV1> for FileEntry {
    fn from(v1: FileEntryV1) -> Self {
        FileEntry {
            size: v1.size,
            mtime_ns: v1.mtime_ns,
            inode: v1.inode,
            btime_ns: v1.btime_ns,
            offset: v1.offset,
            generation: v1.generation,
            outcome: v1.outcome,
            fingerprint: 0,
        }
    }
}

/// A version 1 [`Delta`].
#[derive(Decode)]
struct DeltaV1 {
    generation: u64,
    writer_id: u64,
    committed_at_ms: u64,
    output_key: Option<String>,
    upserts: Vec<(RelPath, FileEntryV1)>,
}

/// A version 2 (or 1) snapshot header.
#[derive(Decode)]
pub(crate) struct SnapshotHeaderV2 {
    generation: u64,
    writer_id: u64,
    created_at_ms: u64,
    last_commit_ms: Option<u64>,
    entries: u64,
}

impl From<SnapshotHeaderV2> for SnapshotHeader {
    fn from(v2: SnapshotHeaderV2) -> Self {
        SnapshotHeader {
            generation: v2.generation,
            writer_id: v2.writer_id,
            created_at_ms: v2.created_at_ms,
            last_commit_ms: v2.last_commit_ms,
            entries: v2.entries,
            origin: None,
        }
    }
}

/// A version 2 [`Delta`].
#[derive(Decode)]
struct DeltaV2 {
    generation: u64,
    writer_id: u64,
    committed_at_ms: u64,
    output_key: Option<String>,
    upserts: Vec<(RelPath, FileEntry)>,
}

/// A version 3 [`Delta`].
#[derive(Decode)]
struct DeltaV3 {
    generation: u64,
    writer_id: u64,
    committed_at_ms: u64,
    output_key: Option<String>,
    upserts: Vec<(RelPath, FileEntry)>,
    origin: Option<Origin>,
}

/// A [`Plan`] of version 3 or earlier (plans did not change before version 4).
#[derive(Decode)]
struct PlanV3 {
    generation: u64,
    writer_id: u64,
    created_at_ms: u64,
    output_key: String,
    files: Vec<PlannedFile>,
}

/// Decodes a plan object of any supported version; `object` names it in errors.
pub(crate) fn decode_plan(bytes: &[u8], object: &str) -> Result<Plan, StateError> {
    let mut payload = PayloadReader::open(ObjectKind::Plan, bytes, object)?;
    let plan = match payload.version() {
        1..=3 => {
            let v3: PlanV3 = payload.next_value()?;
            Plan {
                generation: v3.generation,
                writer_id: v3.writer_id,
                created_at_ms: v3.created_at_ms,
                output_key: v3.output_key,
                files: v3.files,
                replay: false,
            }
        }
        _ => payload.next_value()?,
    };
    payload.finish()?;
    Ok(plan)
}

/// Decodes a delta object of any supported version; `object` names it in errors.
pub(crate) fn decode_delta(bytes: &[u8], object: &str) -> Result<Delta, StateError> {
    let mut payload = PayloadReader::open(ObjectKind::Delta, bytes, object)?;
    let delta = match payload.version() {
        1 => {
            let v1: DeltaV1 = payload.next_value()?;
            Delta {
                generation: v1.generation,
                writer_id: v1.writer_id,
                committed_at_ms: v1.committed_at_ms,
                output_key: v1.output_key,
                upserts: v1
                    .upserts
                    .into_iter()
                    .map(|(path, entry)| (path, entry.into()))
                    .collect(),
                origin: None,
                replay: false,
            }
        }
        2 => {
            let v2: DeltaV2 = payload.next_value()?;
            Delta {
                generation: v2.generation,
                writer_id: v2.writer_id,
                committed_at_ms: v2.committed_at_ms,
                output_key: v2.output_key,
                upserts: v2.upserts,
                origin: None,
                replay: false,
            }
        }
        3 => {
            let v3: DeltaV3 = payload.next_value()?;
            Delta {
                generation: v3.generation,
                writer_id: v3.writer_id,
                committed_at_ms: v3.committed_at_ms,
                output_key: v3.output_key,
                upserts: v3.upserts,
                origin: v3.origin,
                replay: false,
            }
        }
        _ => payload.next_value()?,
    };
    payload.finish()?;
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::snapshot::decode_snapshot;
    use bincode::Encode;

    /// What a version 1 build wrote for an entry.
    #[derive(Encode)]
    struct WrittenV1 {
        size: u64,
        mtime_ns: i64,
        inode: u64,
        btime_ns: i64,
        offset: u64,
        generation: u64,
        outcome: Outcome,
    }

    fn v1_entry(i: u64) -> WrittenV1 {
        WrittenV1 {
            size: 10 + i,
            mtime_ns: -3,
            inode: 7 + i,
            btime_ns: 9,
            offset: 10 + i,
            generation: 4,
            outcome: Outcome::Done,
        }
    }

    /// What version 1 and 2 builds wrote as a snapshot header.
    #[derive(Encode)]
    struct WrittenHeaderV2 {
        generation: u64,
        writer_id: u64,
        created_at_ms: u64,
        last_commit_ms: Option<u64>,
        entries: u64,
    }

    fn header_v2() -> WrittenHeaderV2 {
        WrittenHeaderV2 {
            generation: 4,
            writer_id: 1,
            created_at_ms: 2,
            last_commit_ms: Some(3),
            entries: 2,
        }
    }

    fn expected(i: u64) -> FileEntry {
        FileEntry {
            size: 10 + i,
            mtime_ns: -3,
            inode: 7 + i,
            btime_ns: 9,
            offset: 10 + i,
            generation: 4,
            outcome: Outcome::Done,
            fingerprint: 0,
        }
    }

    #[test]
    fn version_1_deltas_and_snapshots_are_read() {
        let mut delta = codec::encode_with(ObjectKind::Delta, |out| {
            codec::encode_value(&4u64, out);
            codec::encode_value(&99u64, out);
            codec::encode_value(&1_700_000_000_000u64, out);
            codec::encode_value(&Some("s/4.ndjson".to_string()), out);
            codec::encode_value(&vec![(RelPath::from("a.log"), v1_entry(0))], out);
        });
        codec::set_version(&mut delta, 1);
        let read = decode_delta(&delta, "4.delta").unwrap();
        assert_eq!(read.generation, 4);
        assert_eq!(read.output_key.as_deref(), Some("s/4.ndjson"));
        assert_eq!(read.upserts, vec![(RelPath::from("a.log"), expected(0))]);

        let mut snapshot = codec::encode_with(ObjectKind::Snapshot, |out| {
            codec::encode_value(&header_v2(), out);
            for (i, name) in ["a.log", "b.log"].into_iter().enumerate() {
                codec::encode_value(&RelPath::from(name), out);
                codec::encode_value(&v1_entry(i as u64), out);
            }
        });
        codec::set_version(&mut snapshot, 1);
        let (header, state) = decode_snapshot(&snapshot, "4.snapshot").unwrap();
        assert_eq!(header.entries, 2);
        assert_eq!(state.get(&"b.log".into()), Some(expected(1)));

        // The current version reads as itself; a version 2 reader does not take v1 bytes as v2.
        let current = codec::encode(ObjectKind::Delta, &read);
        assert_eq!(decode_delta(&current, "x").unwrap(), read);
        let mut mislabelled = delta.clone();
        codec::set_version(&mut mislabelled, 2);
        assert!(decode_delta(&mislabelled, "x").is_err());
    }

    #[test]
    fn version_2_deltas_and_snapshots_are_read_without_origins() {
        let entry = |i: u64| FileEntry {
            fingerprint: 77 + i,
            ..expected(i)
        };
        let mut delta = codec::encode_with(ObjectKind::Delta, |out| {
            codec::encode_value(&4u64, out);
            codec::encode_value(&99u64, out);
            codec::encode_value(&1_700_000_000_000u64, out);
            codec::encode_value(&Some("s/4.ndjson".to_string()), out);
            codec::encode_value(&vec![(RelPath::from("a.log"), entry(0))], out);
        });
        codec::set_version(&mut delta, 2);
        let read = decode_delta(&delta, "4.delta").unwrap();
        assert_eq!(read.upserts, vec![(RelPath::from("a.log"), entry(0))]);
        assert_eq!(read.origin, None);

        let mut snapshot = codec::encode_with(ObjectKind::Snapshot, |out| {
            codec::encode_value(&header_v2(), out);
            for (i, name) in ["a.log", "b.log"].into_iter().enumerate() {
                codec::encode_value(&RelPath::from(name), out);
                codec::encode_value(&entry(i as u64), out);
            }
        });
        codec::set_version(&mut snapshot, 2);
        let (header, state) = decode_snapshot(&snapshot, "4.snapshot").unwrap();
        assert_eq!((header.entries, header.origin), (2, None));
        assert_eq!(state.get(&"b.log".into()), Some(entry(1)));
        assert_eq!(state.last_origin(), None);

        // A version 3 reader does not take v2 bytes as v3.
        let mut mislabelled = delta.clone();
        codec::set_version(&mut mislabelled, 3);
        assert!(decode_delta(&mislabelled, "x").is_err());
    }

    #[test]
    fn version_3_deltas_and_plans_are_read_as_no_replays() {
        let origin = Some(Origin {
            root_id: 5,
            host: "pod".into(),
            watch_dir: "/data".into(),
        });
        let mut delta = codec::encode_with(ObjectKind::Delta, |out| {
            codec::encode_value(&4u64, out);
            codec::encode_value(&99u64, out);
            codec::encode_value(&1_700_000_000_000u64, out);
            codec::encode_value(&Some("s/4.ndjson".to_string()), out);
            codec::encode_value(&vec![(RelPath::from("a.log"), expected(0))], out);
            codec::encode_value(&origin, out);
        });
        codec::set_version(&mut delta, 3);
        let read = decode_delta(&delta, "4.delta").unwrap();
        assert_eq!((read.origin.clone(), read.replay), (origin, false));
        assert_eq!(read.upserts, vec![(RelPath::from("a.log"), expected(0))]);

        let file = PlannedFile {
            path: "a.log".into(),
            size: 3,
            mtime_ns: 1,
            inode: 2,
            btime_ns: 3,
            start: 0,
        };
        let mut plan = codec::encode_with(ObjectKind::Plan, |out| {
            codec::encode_value(&4u64, out);
            codec::encode_value(&99u64, out);
            codec::encode_value(&1_700_000_000_000u64, out);
            codec::encode_value(&"s/4.ndjson".to_string(), out);
            codec::encode_value(&vec![file.clone()], out);
        });
        codec::set_version(&mut plan, 3);
        let read = decode_plan(&plan, "4.plan").unwrap();
        assert_eq!((read.files, read.replay), (vec![file], false));

        // The current version keeps the mark; a version 4 reader does not take v3 bytes as v4.
        let replay = Plan {
            replay: true,
            ..decode_plan(&plan, "4.plan").unwrap()
        };
        let current = codec::encode(ObjectKind::Plan, &replay);
        assert_eq!(decode_plan(&current, "x").unwrap(), replay);
        let mut mislabelled = delta.clone();
        codec::set_version(&mut mislabelled, 4);
        assert!(decode_delta(&mislabelled, "x").is_err());
    }

    #[test]
    fn baselined_entries_round_trip_in_deltas_and_snapshots() {
        use crate::State;
        let baselined = FileEntry {
            outcome: Outcome::Baselined,
            ..expected(0)
        };
        let delta = Delta {
            generation: 1,
            upserts: vec![
                (RelPath::from("a.log"), baselined.clone()),
                (RelPath::from("b.log"), expected(1)),
            ],
            ..Delta::default()
        };
        let bytes = codec::encode(ObjectKind::Delta, &delta);
        assert_eq!(
            bytes[4..6],
            4u16.to_le_bytes(),
            "this build writes version 4"
        );
        assert_eq!(decode_delta(&bytes, "x").unwrap(), delta);

        let mut state = State::new();
        state.apply(&delta).unwrap();
        let snapshot = crate::snapshot::encode_snapshot(&state, 1, 2);
        let (_, back) = decode_snapshot(&snapshot, "s").unwrap();
        assert_eq!(back, state);
        assert!(back.get(&"a.log".into()).unwrap().outcome.is_baselined());
    }
}
