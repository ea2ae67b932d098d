//! Snapshots: the whole state at one generation, written entry by entry.
//!
//! Payload: a [`SnapshotHeader`], then `entries` pairs of ([`RelPath`], [`FileEntry`]), sorted by
//! path. Reading decodes one pair at a time into the state, so a snapshot of a million entries
//! needs its bytes plus the state, never a second copy of the entries.

use crate::codec::{self, ObjectKind, PayloadReader};
use crate::records::SnapshotHeader;
use crate::state::SortedBuilder;
use crate::{FileEntry, RelPath, State, StateError};

/// Encodes `state` as a snapshot object. CPU work proportional to the state: run it on a worker
/// thread.
pub(crate) fn encode_snapshot(state: &State, writer_id: u64, created_at_ms: u64) -> Vec<u8> {
    codec::encode_with(ObjectKind::Snapshot, |out| {
        out.reserve(state.len() * 64);
        let header = SnapshotHeader {
            generation: state.generation(),
            writer_id,
            created_at_ms,
            last_commit_ms: state.last_commit_ms(),
            entries: state.len() as u64,
            origin: state.last_origin().cloned(),
        };
        codec::encode_value(&header, out);
        for (path, entry) in state.entries() {
            codec::encode_value(&path, out);
            codec::encode_value(entry, out);
        }
    })
}

/// Decodes a snapshot object; `object` names it in errors. CPU work proportional to the state.
pub(crate) fn decode_snapshot(
    bytes: &[u8],
    object: &str,
) -> Result<(SnapshotHeader, State), StateError> {
    let mut payload = PayloadReader::open(ObjectKind::Snapshot, bytes, object)?;
    let header: SnapshotHeader = if payload.version() < 3 {
        payload
            .next_value::<crate::legacy::SnapshotHeaderV2>()?
            .into()
    } else {
        payload.next_value()?
    };
    // Every entry takes more than 8 encoded bytes: never trust a count beyond that.
    let capacity = usize::try_from(header.entries)
        .unwrap_or(usize::MAX)
        .min(payload.remaining() / 8);
    let mut builder = SortedBuilder::new(header.generation, header.last_commit_ms, capacity);
    for _ in 0..header.entries {
        let path: RelPath = payload.next_value()?;
        let entry: FileEntry = if payload.version() == 1 {
            payload.next_value::<crate::legacy::FileEntryV1>()?.into()
        } else {
            payload.next_value()?
        };
        builder
            .push(path.as_bytes(), entry)
            .map_err(|e| StateError::Corrupt {
                object: object.to_string(),
                reason: e.to_string(),
            })?;
    }
    payload.finish()?;
    let mut state = builder.finish();
    state.set_last_origin(header.origin.clone());
    Ok((header, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Delta, Outcome};

    fn state_with(n: usize) -> State {
        let delta = Delta {
            generation: 1,
            committed_at_ms: 77,
            upserts: (0..n)
                .map(|i| {
                    (
                        RelPath::from(format!("dir-{}/file-{i:06}.log", i % 7).as_str()),
                        FileEntry {
                            size: i as u64,
                            mtime_ns: i as i64 * 1000,
                            inode: i as u64 + 10,
                            btime_ns: 0,
                            offset: i as u64,
                            generation: 1,
                            outcome: if i % 10 == 0 {
                                Outcome::Failed {
                                    reason: "permission denied".into(),
                                }
                            } else {
                                Outcome::Done
                            },
                            fingerprint: i as u64 * 7,
                        },
                    )
                })
                .collect(),
            ..Delta::default()
        };
        let mut state = State::new();
        state.apply(&delta).unwrap();
        state
    }

    #[test]
    fn round_trip_keeps_every_entry() {
        for n in [0, 1, 1000] {
            let state = state_with(n);
            let bytes = encode_snapshot(&state, 9, 123);
            let (header, back) = decode_snapshot(&bytes, "s").unwrap();
            assert_eq!(header.entries, n as u64);
            assert_eq!(header.generation, 1);
            assert_eq!(back, state);
        }
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode_snapshot(&state_with(50), 9, 123);
        for i in (0..bytes.len()).step_by(7) {
            let mut copy = bytes.clone();
            copy[i] ^= 0x40;
            assert!(decode_snapshot(&copy, "s").is_err(), "flip at {i}");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1], "s").is_err());
    }
}
