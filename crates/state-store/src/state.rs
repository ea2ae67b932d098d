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
        self.check_next(delta)?;
        for (path, entry) in &delta.upserts {
            self.upsert(path.clone(), entry.clone());
        }
        self.finish_apply(delta);
        Ok(())
    }

    /// [`State::apply`], taking the delta's entries rather than copying them: a load folds
    /// many deltas, and copies would leave the originals' freed memory between the entries.
    pub fn apply_owned(&mut self, mut delta: Delta) -> Result<(), StateError> {
        self.check_next(&delta)?;
        for (path, entry) in std::mem::take(&mut delta.upserts) {
            self.upsert(path, entry);
        }
        self.finish_apply(&delta);
        // Folding in place costs no memory: a load keeps its overlay small.
        if self.overlay.len() > (self.base.len() / 8).max(1 << 16) {
            self.compact();
        }
        Ok(())
    }

    fn check_next(&self, delta: &Delta) -> Result<(), StateError> {
        if delta.generation != self.generation + 1 {
            return Err(StateError::OutOfOrder {
                current: self.generation,
                found: delta.generation,
            });
        }
        Ok(())
    }

    fn finish_apply(&mut self, delta: &Delta) {
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
    ///
    /// In place: entries the overlay changes are replaced where they are, and the new ones are
    /// merged in from the back of the grown base, so the state is never held twice (growing
    /// a large vector remaps its pages rather than copying them).
    pub fn compact(&mut self) {
        if self.overlay.is_empty() {
            return;
        }
        let overlay = std::mem::take(&mut self.overlay);
        let mut added = Vec::new();
        for (path, entry) in overlay {
            match self.base.binary_search_by(|(p, _)| p.cmp(&path)) {
                Ok(at) => self.base[at].1 = entry,
                Err(_) => added.push((path, entry)),
            }
        }
        let kept = self.base.len();
        self.base.reserve_exact(added.len());
        // Placeholders (an empty path allocates nothing), overwritten by the merge below.
        self.base.resize_with(kept + added.len(), || {
            (RelPath::new(Vec::new()), placeholder())
        });
        let mut from_base = kept;
        let mut write = self.base.len();
        while let Some((path, entry)) = added.pop() {
            // Base entries after `path` move to the back, in order.
            while from_base > 0 && self.base[from_base - 1].0 > path {
                from_base -= 1;
                write -= 1;
                self.base.swap(from_base, write);
            }
            write -= 1;
            self.base[write] = (path, entry);
        }
        debug_assert_eq!(self.base.len(), self.len);
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

/// An entry that is never read: a slot [`State::compact`] fills.
fn placeholder() -> FileEntry {
    FileEntry {
        size: 0,
        mtime_ns: 0,
        inode: 0,
        btime_ns: 0,
        offset: 0,
        generation: 0,
        outcome: crate::model::Outcome::Done,
        fingerprint: 0,
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
    fn compaction_in_place_equals_a_sorted_map() {
        // A small linear congruential generator: deterministic, no dependency.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |bound: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % bound
        };
        for round in 0..50 {
            let mut state = State::new();
            let mut model = BTreeMap::new();
            for generation in 1..=8 {
                let paths: Vec<String> = (0..next(40))
                    .map(|_| format!("d{}/f{:03}", next(4), next(120)))
                    .collect();
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                state.apply(&delta(generation, &refs)).unwrap();
                for path in &paths {
                    model.insert(path.clone(), generation);
                }
                if next(3) == 0 {
                    state.compact();
                    assert!(state.overlay.is_empty());
                }
                let got: Vec<(String, u64)> = state
                    .entries()
                    .map(|(p, e)| (p.to_string(), e.generation))
                    .collect();
                let want: Vec<(String, u64)> = model.clone().into_iter().collect();
                assert_eq!(got, want, "round {round}, generation {generation}");
                assert_eq!(state.len(), model.len());
            }
            state.compact();
            assert!(
                state.base.windows(2).all(|w| w[0].0 < w[1].0),
                "round {round}"
            );
        }
    }

    #[test]
    fn unsorted_snapshots_are_rejected() {
        let entries = ["b", "a"].map(|p| (RelPath::from(p), entry(1))).to_vec();
        assert!(State::from_sorted(1, None, entries).is_err());
        let entries = ["a", "a"].map(|p| (RelPath::from(p), entry(1))).to_vec();
        assert!(State::from_sorted(1, None, entries).is_err());
    }
}
