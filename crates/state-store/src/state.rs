//! The committed state of one source: a generation and one [`FileEntry`] per tracked file.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::StateError;
use crate::model::{FileEntry, Origin, RelPath};
use crate::records::Delta;

/// The committed state of one source: its generation and one entry per tracked file.
///
/// Built by folding the state log; changed by applying the next [`Delta`], and by
/// [`State::forget`] when files are gone at compaction.
///
/// Kept as a sorted, compact vector (what the last snapshot held) plus a small ordered overlay
/// of what later deltas changed. Applying a delta costs as much as the delta, not as much as
/// the state; [`State::compact`] folds the overlay in, at snapshot time. One million entries
/// with 40-byte paths take about 140 MB.
#[derive(Clone, Debug, Default)]
pub struct State {
    generation: u64,
    last_commit_ms: Option<u64>,
    /// The watch root that wrote the last generation that recorded one.
    last_origin: Option<Origin>,
    /// Sorted by path, no duplicates.
    base: Vec<(RelPath, FileEntry)>,
    /// Entries changed since `base` was built; they win over `base`.
    overlay: BTreeMap<RelPath, FileEntry>,
    /// Distinct paths in `base` and `overlay` together.
    len: usize,
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.generation == other.generation
            && self.last_commit_ms == other.last_commit_ms
            && self.last_origin == other.last_origin
            && self.len == other.len
            && self.entries().eq(other.entries())
    }
}

impl Eq for State {}

impl State {
    /// An empty state at generation 0: nothing processed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A state at `generation` holding `entries`, which must be sorted by path without
    /// duplicates (as a snapshot stores them).
    pub fn from_sorted(
        generation: u64,
        last_commit_ms: Option<u64>,
        entries: Vec<(RelPath, FileEntry)>,
    ) -> Result<Self, StateError> {
        if let Some(i) = entries.windows(2).position(|w| w[0].0 >= w[1].0) {
            return Err(StateError::Unsorted {
                before: entries[i].0.clone(),
                after: entries[i + 1].0.clone(),
            });
        }
        Ok(Self {
            generation,
            last_commit_ms,
            last_origin: None,
            len: entries.len(),
            base: entries,
            overlay: BTreeMap::new(),
        })
    }

    /// The last committed generation (0 when nothing was ever committed).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the last committed generation was committed, in milliseconds since the Unix epoch.
    pub fn last_commit_ms(&self) -> Option<u64> {
        self.last_commit_ms
    }

    /// The watch root that wrote the last generation that recorded one (format version 3 on).
    pub fn last_origin(&self) -> Option<&Origin> {
        self.last_origin.as_ref()
    }

    /// Records the watch root of the last generation (from a snapshot's header).
    pub(crate) fn set_last_origin(&mut self, origin: Option<Origin>) {
        self.last_origin = origin;
    }

    /// The entry of one file.
    pub fn get(&self, path: &RelPath) -> Option<&FileEntry> {
        self.overlay.get(path).or_else(|| {
            self.base
                .binary_search_by(|(p, _)| p.cmp(path))
                .ok()
                .map(|i| &self.base[i].1)
        })
    }

    /// All entries, ordered by path.
    pub fn entries(&self) -> impl Iterator<Item = (&RelPath, &FileEntry)> {
        Merge {
            base: self.base.iter().map(|(p, e)| (p, e)).peekable(),
            overlay: self.overlay.iter().peekable(),
        }
    }

    /// The number of tracked files.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no file is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Applies the delta of the next generation.
    ///
    /// Fails with [`StateError::OutOfOrder`], leaving the state unchanged, if `delta` is not
    /// for generation `generation() + 1`.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), StateError> {
        if delta.generation != self.generation + 1 {
            return Err(StateError::OutOfOrder {
                current: self.generation,
                found: delta.generation,
            });
        }
        for (path, entry) in &delta.upserts {
            self.upsert(path.clone(), entry.clone());
        }
        self.generation = delta.generation;
        self.last_commit_ms = Some(delta.committed_at_ms);
        if delta.origin.is_some() {
            self.last_origin.clone_from(&delta.origin);
        }
        // The overlay costs about twice the memory per entry of the base: fold it in before it
        // rivals the base (amortised, this keeps applying a delta proportional to the delta).
        if self.overlay.len() > (self.base.len() / 2).max(1 << 16) {
            self.compact();
        }
        Ok(())
    }

    fn upsert(&mut self, path: RelPath, entry: FileEntry) {
        let known = self.overlay.contains_key(&path)
            || self.base.binary_search_by(|(p, _)| p.cmp(&path)).is_ok();
        if !known {
            self.len += 1;
        }
        self.overlay.insert(path, entry);
    }

    /// Folds the overlay into the sorted base. Linear in the state; done at snapshot time.
    pub fn compact(&mut self) {
        if self.overlay.is_empty() {
            return;
        }
        let base = std::mem::take(&mut self.base);
        let overlay = std::mem::take(&mut self.overlay);
        let mut merged = Vec::with_capacity(self.len);
        let mut base = base.into_iter().peekable();
        let mut overlay = overlay.into_iter().peekable();
        loop {
            let take_overlay = match (base.peek(), overlay.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((b, _)), Some((o, _))) => match o.cmp(b) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        base.next();
                        true
                    }
                },
            };
            let next = if take_overlay {
                overlay.next()
            } else {
                base.next()
            };
            merged.extend(next);
        }
        self.base = merged;
    }

    /// Moves the state to `generation`, as committed now, without changing its entries
    /// (compacting them): the base of a log that restarts after outputs it does not know
    /// (`--allow-rescan`).
    pub fn rebase(&mut self, generation: u64) {
        self.compact();
        self.generation = generation;
        self.last_commit_ms = Some(crate::log::now_ms());
    }

    /// Drops the entries of `paths` (files gone from the directory), compacting first.
    /// Returns how many entries were dropped.
    pub fn forget(&mut self, paths: &[RelPath]) -> usize {
        if paths.is_empty() {
            return 0;
        }
        self.compact();
        let mut sorted: Vec<&RelPath> = paths.iter().collect();
        sorted.sort_unstable();
        let before = self.base.len();
        self.base
            .retain(|(path, _)| sorted.binary_search(&path).is_err());
        self.len = self.base.len();
        before - self.len
    }
}

/// Merges the sorted base with the overlay, the overlay winning ties.
struct Merge<B: Iterator, O: Iterator> {
    base: std::iter::Peekable<B>,
    overlay: std::iter::Peekable<O>,
}

impl<'a, B, O> Iterator for Merge<B, O>
where
    B: Iterator<Item = (&'a RelPath, &'a FileEntry)>,
    O: Iterator<Item = (&'a RelPath, &'a FileEntry)>,
{
    type Item = (&'a RelPath, &'a FileEntry);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.base.peek(), self.overlay.peek()) {
            (None, None) => None,
            (Some(_), None) => self.base.next(),
            (None, Some(_)) => self.overlay.next(),
            (Some((b, _)), Some((o, _))) => match o.cmp(b) {
                Ordering::Less => self.overlay.next(),
                Ordering::Greater => self.base.next(),
                Ordering::Equal => {
                    self.base.next();
                    self.overlay.next()
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    fn entry(generation: u64) -> FileEntry {
        FileEntry {
            size: 1,
            mtime_ns: 2,
            inode: 3,
            btime_ns: 4,
            offset: 1,
            generation,
            outcome: Outcome::Done,
            fingerprint: 5,
        }
    }

    fn delta(generation: u64, paths: &[&str]) -> Delta {
        Delta {
            generation,
            upserts: paths
                .iter()
                .map(|p| (RelPath::from(*p), entry(generation)))
                .collect(),
            ..Delta::default()
        }
    }

    fn paths(state: &State) -> Vec<String> {
        state.entries().map(|(p, _)| p.to_string()).collect()
    }

    #[test]
    fn apply_requires_the_next_generation() {
        let mut state = State::new();
        assert!(state.apply(&delta(2, &["a"])).is_err());
        state.apply(&delta(1, &["a"])).unwrap();
        assert_eq!(state.generation(), 1);
        assert_eq!(state.get(&"a".into()), Some(&entry(1)));
        state.apply(&delta(2, &["a", "b"])).unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(state.get(&"a".into()).unwrap().generation, 2);
    }

    #[test]
    fn base_and_overlay_read_as_one_sorted_state() {
        let base = ["b", "d", "f"]
            .map(|p| (RelPath::from(p), entry(1)))
            .to_vec();
        let mut state = State::from_sorted(1, Some(5), base).unwrap();
        state.apply(&delta(2, &["a", "d", "g"])).unwrap();
        assert_eq!(paths(&state), ["a", "b", "d", "f", "g"]);
        assert_eq!(state.len(), 5);
        assert_eq!(state.get(&"d".into()).unwrap().generation, 2);
        assert_eq!(state.get(&"b".into()).unwrap().generation, 1);
        assert!(state.get(&"c".into()).is_none());

        let before = state.clone();
        state.compact();
        assert_eq!(state, before);
        assert!(state.overlay.is_empty());

        assert_eq!(state.forget(&["b".into(), "g".into(), "zz".into()]), 2);
        assert_eq!(paths(&state), ["a", "d", "f"]);
        assert_eq!(state.len(), 3);
    }

    #[test]
    fn rebase_moves_the_generation_and_keeps_the_entries() {
        let mut state = State::new();
        state.apply(&delta(1, &["b", "a"])).unwrap();
        state.rebase(40);
        assert_eq!(state.generation(), 40);
        assert!(state.last_commit_ms().is_some_and(|ms| ms > 0));
        assert_eq!(paths(&state), ["a", "b"]);
        state.apply(&delta(41, &["c"])).unwrap();
        assert_eq!(state.len(), 3);
    }

    #[test]
    fn unsorted_snapshots_are_rejected() {
        let entries = ["b", "a"].map(|p| (RelPath::from(p), entry(1))).to_vec();
        assert!(State::from_sorted(1, None, entries).is_err());
        let entries = ["a", "a"].map(|p| (RelPath::from(p), entry(1))).to_vec();
        assert!(State::from_sorted(1, None, entries).is_err());
    }
}
