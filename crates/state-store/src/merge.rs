//! Loading a snapshot and the deltas after it in one pass: each delta is read entry by entry as
//! the snapshot streams in, and its entries go into the state being built at their place.
//!
//! Folding deltas into a state that is built already moves its entries: a load of 1,000,000
//! files (a snapshot of 640,000 and 36 deltas of 10,000) moved most of its 80 MB once per group
//! of deltas, 17 % of the load's samples, and groups large enough to move it less often held
//! too much at once. Merged while the snapshot is read, every entry is written once, where it
//! belongs, and a delta costs a read buffer (its bytes, fetched from an object store) instead
//! of its decoded entries. Every object is still checked whole (header, checksum, length,
//! generation) before the state is returned.

use std::cmp::Ordering;

use crate::codec::{FORMAT_VERSION, ObjectKind};
use crate::records::Delta;
use crate::state::SortedBuilder;
use crate::stream::{ByteSource, StreamPayload};
use crate::{FileEntry, Origin, StateError};

/// At most this many deltas are merged into a snapshot as it is read, each with a read buffer
/// of 64 KiB (the log that `--snapshot-every`'s default leaves has up to 64): a longer log
/// (snapshots that kept failing) is folded the way a log without a snapshot is.
pub(crate) const MERGED_DELTAS_MAX: usize = 64;

/// A failure of a merge: the load fails, or folds the deltas instead. They cannot be merged
/// when one was written in an older format, or when entries come out of path order (which a
/// fold accepts in a delta, and names as damage in a snapshot).
#[derive(Debug)]
pub(crate) enum MergeError {
    /// An object is damaged, unreadable or misplaced: the load fails with this error.
    Failed(StateError),
    /// The deltas cannot be merged: fold them instead.
    Unsuited,
}

impl From<StateError> for MergeError {
    fn from(e: StateError) -> Self {
        MergeError::Failed(e)
    }
}

/// One delta after the snapshot, read entry by entry.
struct DeltaReader<'a, S> {
    /// `None` once its entries are all read and the object was checked whole.
    payload: Option<StreamPayload<'a, S>>,
    /// Its fields; the entries are not kept (`upserts` stays empty).
    delta: Delta,
    /// Entries not read yet.
    left: u64,
    /// The path of the entry read last (its buffer is reused from entry to entry).
    path: Vec<u8>,
    /// The entry read last, not taken yet.
    entry: Option<FileEntry>,
}

impl<'a, S: ByteSource> DeltaReader<'a, S> {
    /// Opens delta `object` of `size` bytes, which must be of generation `expected`, and reads
    /// its first entry.
    fn open(source: S, size: u64, object: &'a str, expected: u64) -> Result<Self, MergeError> {
        let mut payload = StreamPayload::open(ObjectKind::Delta, source, size, object)?;
        if payload.version() != FORMAT_VERSION {
            return Err(MergeError::Unsuited);
        }
        // The fields of a `Delta` before its entries, in the order they are encoded. Entries out
        // of path order when they are merged mean a delta is not sorted (a fold accepts that)
        // or the snapshot is not (a fold names it): either way, they are folded instead.
        let generation: u64 = payload.next_value()?;
        let writer_id: u64 = payload.next_value()?;
        let committed_at_ms: u64 = payload.next_value()?;
        let output_key: Option<String> = payload.next_value()?;
        let left: u64 = payload.next_value()?;
        if generation != expected {
            let e = StateError::OutOfOrder {
                current: expected - 1,
                found: generation,
            };
            return Err(payload.fail(e.to_string()).into());
        }
        // Every entry takes more than 8 encoded bytes: a larger count is damage.
        if left > payload.remaining() / 8 {
            let reason = format!("claims {left} entries");
            return Err(payload.fail(reason).into());
        }
        let mut reader = Self {
            payload: Some(payload),
            delta: Delta {
                generation,
                writer_id,
                committed_at_ms,
                output_key,
                ..Delta::default()
            },
            left,
            path: Vec::new(),
            entry: None,
        };
        reader.advance()?;
        Ok(reader)
    }

    /// Reads the next entry; after the last one, the fields after the entries, and checks the
    /// object whole.
    fn advance(&mut self) -> Result<(), MergeError> {
        self.entry = None;
        let Some(payload) = self.payload.as_mut() else {
            return Ok(());
        };
        if self.left > 0 {
            self.left -= 1;
            payload.next_path_into(&mut self.path)?;
            self.entry = Some(payload.next_value()?);
            return Ok(());
        }
        let origin: Option<Origin> = payload.next_value()?;
        let replay: bool = payload.next_value()?;
        self.delta.origin = origin;
        self.delta.replay = replay;
        self.payload.take().expect("checked above").finish()?;
        Ok(())
    }

    fn head_path(&self) -> Option<&[u8]> {
        self.entry.is_some().then_some(self.path.as_slice())
    }
}

/// The deltas after a snapshot (consecutive generations, oldest first), read together: their
/// entries come out in path order, one per path, the latest delta's where several have it.
pub(crate) struct LaterDeltas<'a, S> {
    readers: Vec<DeltaReader<'a, S>>,
    /// The readers with an entry left, ordered by their entry's path and, for the same path,
    /// from the oldest delta to the latest, backwards: the next entry to take is the last.
    order: Vec<usize>,
}

impl<'a, S: ByteSource> LaterDeltas<'a, S> {
    /// Opens the deltas `sources` (source, size, object name), which must be of the
    /// generations `first`, `first + 1`, …
    pub(crate) fn open(sources: Vec<(S, u64, &'a str)>, first: u64) -> Result<Self, MergeError> {
        let mut later = Self {
            readers: Vec::with_capacity(sources.len()),
            order: Vec::with_capacity(sources.len()),
        };
        for ((source, size, object), expected) in sources.into_iter().zip(first..) {
            later
                .readers
                .push(DeltaReader::open(source, size, object, expected)?);
            later.place(later.readers.len() - 1);
        }
        Ok(later)
    }

    /// Puts reader `i` in `order` if it has an entry left.
    fn place(&mut self, i: usize) {
        let Some(path) = self.readers[i].head_path() else {
            return;
        };
        let readers = &self.readers;
        let at = self.order.partition_point(|&o| {
            let other = readers[o]
                .head_path()
                .expect("ordered readers have an entry");
            // Before `i` in `order`: paths after its own, and for its path, older deltas.
            match other.cmp(path) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => o < i,
            }
        });
        self.order.insert(at, i);
    }

    /// The path of the next entry, if any.
    fn next_path(&self) -> Option<&[u8]> {
        self.order.last().and_then(|&i| self.readers[i].head_path())
    }

    /// Adds the next entry to `builder`: of its path, the latest delta's; the others are
    /// passed over.
    fn push_next(&mut self, builder: &mut SortedBuilder) -> Result<(), MergeError> {
        let latest = self.order.pop().expect("an entry is left");
        let reader = &mut self.readers[latest];
        let entry = reader.entry.take().expect("ordered readers have an entry");
        builder
            .push(&reader.path, entry)
            .map_err(|_| MergeError::Unsuited)?;
        while let Some(&older) = self.order.last()
            && self.readers[older].head_path() == Some(self.readers[latest].path.as_slice())
        {
            self.order.pop();
            self.readers[older].advance()?;
            self.place(older);
        }
        self.readers[latest].advance()?;
        self.place(latest);
        Ok(())
    }

    /// Adds to `builder` the entries whose paths sort before `path`, then the entry of `path`
    /// itself if a delta has one (it replaces the snapshot's): true if it did.
    pub(crate) fn merge_before(
        &mut self,
        path: &[u8],
        builder: &mut SortedBuilder,
    ) -> Result<bool, MergeError> {
        while let Some(next) = self.next_path() {
            match next.cmp(path) {
                Ordering::Less => self.push_next(builder)?,
                Ordering::Equal => {
                    self.push_next(builder)?;
                    return Ok(true);
                }
                Ordering::Greater => break,
            }
        }
        Ok(false)
    }

    /// Adds the entries left to `builder`, and returns the deltas (without their entries),
    /// each read whole and checked.
    pub(crate) fn finish(mut self, builder: &mut SortedBuilder) -> Result<Vec<Delta>, MergeError> {
        while self.next_path().is_some() {
            self.push_next(builder)?;
        }
        // A delta without entries is read whole when it is opened.
        debug_assert!(self.readers.iter().all(|r| r.payload.is_none()));
        Ok(self.readers.into_iter().map(|r| r.delta).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::snapshot::{decode_snapshot_merged, encode_snapshot};
    use crate::{Outcome, RelPath, State};

    fn entry(generation: u64, size: u64) -> FileEntry {
        FileEntry {
            size,
            mtime_ns: 1,
            inode: 2,
            btime_ns: 0,
            offset: size,
            generation,
            outcome: Outcome::Done,
            fingerprint: 3,
        }
    }

    fn delta(generation: u64, paths: &[&str]) -> Delta {
        Delta {
            generation,
            writer_id: 7,
            committed_at_ms: 1_000 + generation,
            output_key: Some(format!("s/{generation}")),
            upserts: paths
                .iter()
                .map(|p| (RelPath::from(*p), entry(generation, p.len() as u64)))
                .collect(),
            origin: Some(Origin {
                root_id: generation,
                host: "pod".into(),
                watch_dir: "/data".into(),
            }),
            replay: generation % 2 == 0,
        }
    }

    fn encode(delta: &Delta) -> Vec<u8> {
        codec::encode(ObjectKind::Delta, delta)
    }

    /// A snapshot of generation 1 holding `b` and `d`, and the encoded `deltas` after it,
    /// merged.
    fn merge(deltas: &[Vec<u8>]) -> Result<(State, Vec<Delta>), MergeError> {
        let mut state = State::new();
        state.apply(&delta(1, &["b", "d"])).unwrap();
        let snapshot = encode_snapshot(&state, 7, 1);
        let names: Vec<String> = (0..deltas.len())
            .map(|i| format!("{}.delta", i + 2))
            .collect();
        let sources = deltas
            .iter()
            .zip(&names)
            .map(|(bytes, name)| (bytes.as_slice(), bytes.len() as u64, name.as_str()))
            .collect();
        let later = LaterDeltas::open(sources, 2)?;
        let size = snapshot.len() as u64;
        let (_, state, deltas) =
            decode_snapshot_merged(snapshot.as_slice(), size, "1.snapshot", Some(later))?;
        Ok((state, deltas))
    }

    #[test]
    fn deltas_read_entry_by_entry_are_the_deltas_applied() {
        let written = [
            delta(2, &["a", "b", "c"]),
            delta(3, &[]),
            delta(4, &["b", "e"]),
        ];
        let encoded: Vec<Vec<u8>> = written.iter().map(encode).collect();
        let (state, read) = merge(&encoded).unwrap();
        let mut expected = State::new();
        expected.apply(&delta(1, &["b", "d"])).unwrap();
        for d in &written {
            expected.apply(d).unwrap();
        }
        assert_eq!(state, expected);
        assert_eq!(state.get(&RelPath::from("b")).unwrap().generation, 4);
        let without_entries: Vec<Delta> = written
            .iter()
            .map(|d| Delta {
                upserts: Vec::new(),
                ..d.clone()
            })
            .collect();
        assert_eq!(read, without_entries);
    }

    #[test]
    fn damage_and_misplaced_deltas_are_named_and_old_formats_are_folded() {
        let second = encode(&delta(2, &["a", "c"]));
        let third = encode(&delta(3, &["e"]));
        let named = |result: Result<(State, Vec<Delta>), MergeError>, object: &str| match result {
            Err(MergeError::Failed(StateError::Corrupt { object: o, .. })) => assert_eq!(o, object),
            other => panic!("expected damage named {object}: {other:?}"),
        };
        for at in [codec::HEADER_LEN + 1, second.len() - 1] {
            let mut damaged = second.clone();
            damaged[at] ^= 0x40;
            named(merge(&[damaged, third.clone()]), "2.delta");
        }
        named(merge(&[third.clone(), second.clone()]), "2.delta");
        let mut older = third.clone();
        codec::set_version(&mut older, 3);
        assert!(matches!(merge(&[second, older]), Err(MergeError::Unsuited)));
    }
}
