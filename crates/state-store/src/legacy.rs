//! Layouts of earlier format versions, read and converted to the current types.
//!
//! * Version 1 (before fingerprints): a [`FileEntry`] without its `fingerprint`, and the
//!   version 2 layouts below.
//! * Version 2 (before origins): a [`Delta`] without its `origin`, a snapshot header without
//!   its `origin`.
//! * Version 3 (before [`Outcome::Baselined`]): the current layout; its outcomes are a subset of
//!   the current ones, so it decodes as it is.

use bincode::Decode;

use crate::StateError;
use crate::codec::{ObjectKind, PayloadReader};
use crate::model::{FileEntry, Outcome, RelPath};
use crate::records::Delta;
use crate::records::SnapshotHeader;

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
        assert_eq!(state.get(&"b.log".into()), Some(&expected(1)));

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
        assert_eq!(state.get(&"b.log".into()), Some(&entry(1)));
        assert_eq!(state.last_origin(), None);

        // A version 3 reader does not take v2 bytes as v3.
        let mut mislabelled = delta.clone();
        codec::set_version(&mut mislabelled, 3);
        assert!(decode_delta(&mislabelled, "x").is_err());
    }

    #[test]
    fn version_3_objects_read_as_they_are_and_baselined_entries_round_trip() {
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

        // What a version 3 build wrote: the same layout, without baselined outcomes.
        let v3_delta = Delta {
            upserts: vec![(RelPath::from("b.log"), expected(1))],
            ..delta.clone()
        };
        let mut v3 = codec::encode(ObjectKind::Delta, &v3_delta);
        codec::set_version(&mut v3, 3);
        assert_eq!(decode_delta(&v3, "x").unwrap(), v3_delta);

        let mut state = State::new();
        state.apply(&delta).unwrap();
        let snapshot = crate::snapshot::encode_snapshot(&state, 1, 2);
        let (_, back) = decode_snapshot(&snapshot, "s").unwrap();
        assert_eq!(back, state);
        assert!(back.get(&"a.log".into()).unwrap().outcome.is_baselined());
    }
}
