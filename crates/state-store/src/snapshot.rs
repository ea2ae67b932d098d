//! Snapshots: the whole state at one generation, written entry by entry.
//!
//! Payload: a [`SnapshotHeader`], then `entries` pairs of ([`RelPath`], [`FileEntry`]), sorted by
//! path. Reading decodes one pair at a time into the state as the bytes arrive ([`crate::stream`]),
//! so a snapshot of a million entries needs the state and a small buffer, neither its bytes
//! whole nor a second copy of the entries. The entries of the deltas after it can be merged in
//! on the way ([`crate::merge`]).

use crate::codec::{self, ObjectKind};
use crate::merge::{LaterDeltas, MergeError};
use crate::records::{Delta, SnapshotHeader};
use crate::state::SortedBuilder;
use crate::stream::{ByteSource, StreamPayload};
use crate::{FileEntry, State, StateError};

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
            codec::encode_value(&entry, out);
        }
    })
}

/// Decodes a snapshot object held in memory; `object` names it in errors. CPU work
/// proportional to the state.
pub(crate) fn decode_snapshot(
    bytes: &[u8],
    object: &str,
) -> Result<(SnapshotHeader, State), StateError> {
    decode_snapshot_from(bytes, bytes.len() as u64, object)
}

/// Decodes a snapshot object of `size` bytes as it is read from `source`, holding a small
/// buffer of it at a time; `object` names it in errors. The state is returned only once the
/// whole object was read and its checksum matched. Blocking (a source may wait for the
/// store), and CPU work proportional to the state: run it on a worker thread.
pub(crate) fn decode_snapshot_from(
    source: impl ByteSource,
    size: u64,
    object: &str,
) -> Result<(SnapshotHeader, State), StateError> {
    match decode_snapshot_merged(source, size, object, None::<LaterDeltas<&[u8]>>) {
        Ok((header, state, _)) => Ok((header, state)),
        Err(MergeError::Failed(e)) => Err(e),
        Err(MergeError::Unsuited) => unreachable!("nothing is merged"),
    }
}

/// [`decode_snapshot_from`], with the entries of the deltas after the snapshot (`later`, if
/// any) merged in as it is read ([`crate::merge`]): the state of the last of them. Returns the
/// deltas (without their entries) too. Every object was read whole and checked when this
/// returns.
pub(crate) fn decode_snapshot_merged<S: ByteSource>(
    source: impl ByteSource,
    size: u64,
    object: &str,
    mut later: Option<LaterDeltas<'_, S>>,
) -> Result<(SnapshotHeader, State, Vec<Delta>), MergeError> {
    let mut payload = StreamPayload::open(ObjectKind::Snapshot, source, size, object)?;
    let header: SnapshotHeader = if payload.version() < 3 {
        payload
            .next_value::<crate::legacy::SnapshotHeaderV2>()?
            .into()
    } else {
        payload.next_value()?
    };
    // Every entry takes more than 8 encoded bytes: never trust a count beyond that.
    let capacity = usize::try_from(header.entries.min(payload.remaining() / 8)).unwrap_or(0);
    let mut builder = SortedBuilder::new(header.generation, header.last_commit_ms, capacity);
    let mut path = Vec::new();
    for _ in 0..header.entries {
        payload.next_path_into(&mut path)?;
        let entry: FileEntry = if payload.version() == 1 {
            payload.next_value::<crate::legacy::FileEntryV1>()?.into()
        } else {
            payload.next_value()?
        };
        if let Some(later) = later.as_mut()
            && later.merge_before(&path, &mut builder)?
        {
            continue;
        }
        if let Err(e) = builder.push(&path, entry) {
            return Err(match later {
                // Maybe a delta's entries out of order: a fold tells which object is wrong.
                Some(_) => MergeError::Unsuited,
                None => MergeError::Failed(payload.fail(e.to_string())),
            });
        }
    }
    payload.finish()?;
    let deltas = match later {
        Some(later) => later.finish(&mut builder)?,
        None => Vec::new(),
    };
    let mut state = builder.finish();
    state.set_last_origin(header.origin.clone());
    state.applied(&deltas);
    Ok((header, state, deltas))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::ChunkReceiver;
    use crate::{Delta, Outcome, RelPath};

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

    /// A source that hands `bytes` over in chunks cut at `cuts`, as a download does, through
    /// the channel a snapshot's download is read from; `fail` ends it with a storage error.
    fn chunked(bytes: &[u8], cuts: &[usize], fail: bool) -> ChunkReceiver {
        let (sender, receiver) = tokio::sync::mpsc::channel(cuts.len() + 2);
        let mut from = 0;
        for &cut in cuts.iter().chain([&bytes.len()]) {
            let chunk = bytes::Bytes::copy_from_slice(&bytes[from..cut]);
            sender.try_send(Ok(chunk)).unwrap();
            from = cut;
        }
        if fail {
            let error = object_store::Error::Generic {
                store: "test",
                source: "connection reset".into(),
            };
            sender.try_send(Err(error)).unwrap();
        }
        ChunkReceiver::new(receiver)
    }

    fn decode_chunked(bytes: &[u8], cuts: &[usize]) -> Result<State, StateError> {
        let source = chunked(bytes, cuts, false);
        decode_snapshot_from(source, bytes.len() as u64, "s").map(|(_, state)| state)
    }

    /// True if `err` names the object "s".
    fn names_s(err: &StateError) -> bool {
        match err {
            StateError::Corrupt { object, .. }
            | StateError::Storage { object, .. }
            | StateError::UnsupportedVersion { object, .. }
            | StateError::UnknownCodec { object, .. } => object == "s",
            _ => false,
        }
    }

    #[test]
    fn a_chunk_boundary_anywhere_decodes_the_same() {
        let state = state_with(30);
        let bytes = encode_snapshot(&state, 9, 123);
        for cut in 0..=bytes.len() {
            assert_eq!(
                decode_chunked(&bytes, &[cut]).unwrap(),
                state,
                "cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(decode_chunked(&bytes, &every_byte).unwrap(), state);
        // Larger than the decoding buffer: refilled many times, values across its end.
        let state = state_with(5000);
        let bytes = encode_snapshot(&state, 9, 123);
        assert!(bytes.len() > 2 * crate::stream::BUFFER_LEN);
        let cuts: Vec<usize> = (1..bytes.len()).step_by(4093).collect();
        assert_eq!(decode_chunked(&bytes, &cuts).unwrap(), state);
        assert_eq!(decode_snapshot(&bytes, "s").unwrap().1, state);
    }

    #[test]
    fn damage_in_a_download_is_an_error_naming_the_object() {
        let bytes = encode_snapshot(&state_with(20), 9, 123);
        let cuts = [7, bytes.len() / 2];
        for i in 0..bytes.len() {
            for bit in [0x01, 0x40] {
                let mut copy = bytes.clone();
                copy[i] ^= bit;
                let err = decode_chunked(&copy, &cuts).expect_err("a flipped bit is detected");
                assert!(names_s(&err), "flip at {i}: {err:?}");
            }
        }
        for len in 0..bytes.len() {
            // The store says how large the object is; it delivers fewer bytes.
            let source = chunked(&bytes[..len], &[len / 2], false);
            let err = decode_snapshot_from(source, bytes.len() as u64, "s").unwrap_err();
            assert!(names_s(&err), "truncated to {len}: {err:?}");
            // Or the object itself is shorter.
            assert!(decode_chunked(&bytes[..len], &[len / 2]).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let source = chunked(&longer, &[], false);
        assert!(decode_snapshot_from(source, bytes.len() as u64, "s").is_err());
    }

    #[test]
    fn damage_is_reported_as_damage_wherever_decoding_stops() {
        // Larger than the decoding buffer, read whole (a local file) or in small chunks: a
        // flipped byte is a checksum mismatch, whatever it decoded to first.
        let bytes = encode_snapshot(&state_with(5000), 9, 123);
        let header_and_first_entries = 20..200;
        for at in header_and_first_entries.chain([bytes.len() / 2, bytes.len() - 3]) {
            let mut copy = bytes.clone();
            copy[at] ^= 0xff;
            let whole = decode_snapshot(&copy, "s").unwrap_err();
            let chunks = decode_chunked(&copy, &[at / 2, at + 1]).unwrap_err();
            for err in [whole, chunks] {
                assert!(
                    err.to_string().contains("checksum mismatch"),
                    "at {at}: {err}"
                );
            }
        }
    }

    #[test]
    fn a_download_that_fails_is_a_storage_error() {
        let bytes = encode_snapshot(&state_with(20), 9, 123);
        let source = chunked(&bytes[..bytes.len() / 2], &[30], true);
        let err = decode_snapshot_from(source, bytes.len() as u64, "s").unwrap_err();
        assert!(
            matches!(&err, StateError::Storage { object, .. } if object == "s"),
            "{err:?}"
        );
        assert!(format!("{err:?}").contains("connection reset"), "{err:?}");
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
