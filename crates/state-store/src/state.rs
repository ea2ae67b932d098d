//! The committed state of one source: a generation and one [`FileEntry`] per tracked file.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::StateError;
use crate::model::{FileEntry, Origin, Outcome, RelPath, RelPathRef};
use crate::records::Delta;

/// The committed state of one source: its generation and one entry per tracked file.
///
/// Built by folding the state log; changed by applying the next [`Delta`], and by
/// [`State::forget`] when files are gone at compaction.
///
/// Kept as a sorted, compact vector (what the last snapshot held) whose paths lie back to back
/// in one buffer, plus a small ordered overlay of what later deltas changed. Applying a delta
/// costs as much as the delta, not as much as the state; [`State::compact`] folds the overlay
/// in. A tracked file costs 64 bytes plus its path's length (one million entries with 16-byte
/// paths take 80 MB), and no allocation of its own: a long-running sidecar's state does not pin
/// memory freed around it. (A failed file's reason is kept beside, by path.) Entries are lent
/// out by value, as [`FileEntry`]s built from that compact form.
#[derive(Clone, Debug, Default)]
pub struct State {
    generation: u64,
    last_commit_ms: Option<u64>,
    /// The watch root that wrote the last generation that recorded one.
    last_origin: Option<Origin>,
    /// Sorted by path, no duplicates.
    base: Vec<BaseEntry>,
    /// The paths of `base`, back to back, in its order.
    paths: Vec<u8>,
    /// The reasons of the base's entries whose outcome is [`Outcome::Failed`], by path.
    reasons: BTreeMap<Box<[u8]>, Box<str>>,
    /// Entries changed since `base` was built; they win over `base`.
    overlay: BTreeMap<RelPath, Overlaid>,
    /// Distinct paths in `base` and `overlay` together.
    len: usize,
}

/// An entry of the overlay, with what the search of the base found for its path when it was
/// put there: its index, or where it would go. The base does not move while the overlay holds
/// anything (every change of its order folds the overlay first), so folding it in needs no
/// second search: a load folds hundreds of thousands of paths into a base of a million.
#[derive(Clone, Debug)]
struct Overlaid {
    entry: FileEntry,
    place: Result<usize, usize>,
}

/// One entry of the base, 64 bytes: a [`FileEntry`]'s numbers, and where its path starts in
/// [`State::paths`] (it ends where the next one starts) with the kind of its outcome in the two
/// top bits (a [`FileEntry`] is 72 bytes, its outcome 16 of them; a failure's reason is in
/// [`State::reasons`]).
#[derive(Clone, Copy, Debug)]
struct BaseEntry {
    size: u64,
    mtime_ns: i64,
    inode: u64,
    btime_ns: i64,
    offset: u64,
    generation: u64,
    fingerprint: u64,
    start_and_outcome: u64,
}

const OUTCOME_SHIFT: u32 = 62;
const START_MASK: u64 = (1 << OUTCOME_SHIFT) - 1;
const DONE: u64 = 0;
const FAILED: u64 = 1;
const BASELINED: u64 = 2;

impl BaseEntry {
    /// The compact form of `entry`, its path at `start`.
    fn new(start: usize, entry: &FileEntry) -> Self {
        let outcome = match entry.outcome {
            Outcome::Done => DONE,
            Outcome::Failed { .. } => FAILED,
            Outcome::Baselined => BASELINED,
        };
        let start = start as u64;
        assert!(start <= START_MASK, "paths beyond 2^62 bytes");
        Self {
            size: entry.size,
            mtime_ns: entry.mtime_ns,
            inode: entry.inode,
            btime_ns: entry.btime_ns,
            offset: entry.offset,
            generation: entry.generation,
            fingerprint: entry.fingerprint,
            start_and_outcome: start | outcome << OUTCOME_SHIFT,
        }
    }

    fn start(&self) -> usize {
        (self.start_and_outcome & START_MASK) as usize
    }

    fn set_start(&mut self, start: usize) {
        self.start_and_outcome = (self.start_and_outcome & !START_MASK) | start as u64;
    }

    fn failed(&self) -> bool {
        self.start_and_outcome >> OUTCOME_SHIFT == FAILED
    }

    /// The entry, with `reason` if it failed.
    fn to_entry(self, reason: impl FnOnce() -> Box<str>) -> FileEntry {
        let outcome = match self.start_and_outcome >> OUTCOME_SHIFT {
            DONE => Outcome::Done,
            BASELINED => Outcome::Baselined,
            _ => Outcome::Failed { reason: reason() },
        };
        FileEntry {
            size: self.size,
            mtime_ns: self.mtime_ns,
            inode: self.inode,
            btime_ns: self.btime_ns,
            offset: self.offset,
            generation: self.generation,
            outcome,
            fingerprint: self.fingerprint,
        }
    }
}

/// The entries of several runs, each sorted by path without a path twice, merged in path
/// order: one entry per path, the one of the latest run that has it (runs come in the order of
/// their generations).
struct LatestOfRuns {
    runs: Vec<std::vec::IntoIter<(RelPath, FileEntry)>>,
    /// The next entry of each run not exhausted.
    heads: std::collections::BinaryHeap<Head>,
}

/// The next entry of run `run`, ordered for a min-heap by path, then by run.
struct Head {
    path: RelPath,
    entry: FileEntry,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` pops its greatest element.
        (&other.path, other.run).cmp(&(&self.path, self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl LatestOfRuns {
    fn new(runs: Vec<Vec<(RelPath, FileEntry)>>) -> Self {
        let mut merged = Self {
            heads: std::collections::BinaryHeap::with_capacity(runs.len()),
            runs: runs.into_iter().map(Vec::into_iter).collect(),
        };
        for run in 0..merged.runs.len() {
            merged.refill(run);
        }
        merged
    }

    /// Puts the next entry of `run`, if any, among the heads.
    fn refill(&mut self, run: usize) {
        if let Some((path, entry)) = self.runs[run].next() {
            self.heads.push(Head { path, entry, run });
        }
    }
}

impl Iterator for LatestOfRuns {
    type Item = (RelPath, FileEntry);

    fn next(&mut self) -> Option<Self::Item> {
        let mut latest = self.heads.pop()?;
        self.refill(latest.run);
        // The same path in later runs comes next, run after run: the last one wins.
        while self
            .heads
            .peek()
            .is_some_and(|head| head.path == latest.path)
        {
            let later = self.heads.pop().expect("peeked");
            self.refill(later.run);
            latest = later;
        }
        Some((latest.path, latest.entry))
    }
}

/// A load that folds its deltas (a log without a snapshot, or deltas that are not merged into
/// the snapshot as it is read, see `merge`) folds what it applies into the base once it holds
/// this share of the state (a sixty-fourth): each fold moves most of the base, and what waits
/// to be folded takes memory (1,000,000 files' load peaked at about 94 MiB; at a sixteenth,
/// 101–105 MiB).
pub(crate) const LOAD_FOLD_SHARE: usize = 64;

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
        let mut builder = SortedBuilder::new(generation, last_commit_ms, entries.len());
        for (path, entry) in entries {
            builder.push(path.as_bytes(), entry)?;
        }
        Ok(builder.finish())
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
    pub fn get(&self, path: &RelPath) -> Option<FileEntry> {
        match self.overlay.get(path) {
            Some(overlaid) => Some(overlaid.entry.clone()),
            None => self.find(path.as_bytes()).ok().map(|i| self.entry_at(i)),
        }
    }

    /// All entries, ordered by path.
    pub fn entries(&self) -> impl Iterator<Item = (RelPathRef<'_>, FileEntry)> {
        let base = (0..self.base.len()).map(|i| (RelPathRef::new(self.path_at(i)), i));
        Merge {
            state: self,
            base: base.peekable(),
            overlay: self
                .overlay
                .iter()
                .map(|(path, overlaid)| (path, &overlaid.entry))
                .peekable(),
        }
    }

    /// Base entry `i` as a [`FileEntry`].
    fn entry_at(&self, i: usize) -> FileEntry {
        self.base[i].to_entry(|| {
            let reason = self.reasons.get(self.path_at(i));
            reason.cloned().unwrap_or_default()
        })
    }

    /// Sets base entry `i` (whose path is `path`) to `entry`, keeping its path.
    fn set_at(&mut self, i: usize, path: &[u8], entry: &FileEntry) {
        if self.base[i].failed() {
            self.reasons.remove(path);
        }
        self.base[i] = BaseEntry::new(self.base[i].start(), entry);
        self.keep_reason(path, entry);
    }

    /// Records the reason of `entry`, of `path` in the base, if it failed.
    fn keep_reason(&mut self, path: &[u8], entry: &FileEntry) {
        if let Outcome::Failed { reason } = &entry.outcome {
            self.reasons.insert(path.into(), reason.clone());
        }
    }

    /// How many entries changed since the last [`State::compact`] (the overlay's length): an
    /// entry there costs about twice the memory of a compacted one.
    pub fn uncompacted(&self) -> usize {
        self.overlay.len()
    }

    /// The number of tracked files.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no file is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path of base entry `i`.
    fn path_at(&self, i: usize) -> &[u8] {
        let end = self
            .base
            .get(i + 1)
            .map_or(self.paths.len(), BaseEntry::start);
        &self.paths[self.base[i].start()..end]
    }

    /// Binary search of the base.
    fn find(&self, path: &[u8]) -> Result<usize, usize> {
        self.find_between(0, self.base.len(), path)
    }

    /// Binary search of the base entries `low..high`.
    fn find_between(&self, mut low: usize, mut high: usize, path: &[u8]) -> Result<usize, usize> {
        while low < high {
            let mid = low + (high - low) / 2;
            match self.path_at(mid).cmp(path) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// Applies the delta of the next generation.
    ///
    /// Fails with [`StateError::OutOfOrder`], leaving the state unchanged, if `delta` is not
    /// for generation `generation() + 1`.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), StateError> {
        self.check_next(delta)?;
        if self.merges_directly(&delta.upserts) {
            self.merge_sorted(
                delta
                    .upserts
                    .iter()
                    .map(|(path, entry)| (path.clone(), entry.clone())),
            );
        } else {
            for (path, entry) in &delta.upserts {
                self.upsert(path.clone(), entry.clone());
            }
        }
        self.finish_apply(delta);
        Ok(())
    }

    /// [`State::apply`], taking the delta's entries rather than copying them: a load folds
    /// many deltas, and copies would leave the originals' freed memory between the entries.
    pub fn apply_owned(&mut self, mut delta: Delta) -> Result<(), StateError> {
        self.check_next(&delta)?;
        let upserts = std::mem::take(&mut delta.upserts);
        if self.merges_directly(&upserts) {
            self.merge_sorted(upserts.into_iter());
        } else {
            for (path, entry) in upserts {
                self.upsert(path, entry);
            }
        }
        self.finish_apply(&delta);
        // Folding in place costs no memory: a load keeps its overlay small. (At an eighth of
        // the base, folding 360,000 entries into 640,000 left 1,000,000 files' load at a peak
        // of 143 MiB, at a sixty-fourth 122 MiB: overlay entries are freed, not given back.)
        if self.overlay.len() > (self.base.len() / LOAD_FOLD_SHARE).max(1 << 13) {
            self.compact();
        }
        Ok(())
    }

    /// Applies the deltas of the generations that follow, in order, each taken whole: what
    /// [`State::apply_owned`] of each in turn does, but deltas sorted by path (every batch's)
    /// that together hold at least a sixty-fourth of the state are merged
    /// into the base at once, with no overlay: no search tree built for them and emptied again,
    /// and a galloping search of the base instead of a binary one per entry. A load of
    /// 1,000,000 files from a snapshot and 36 deltas took 411 ms instead of 498 ms.
    ///
    /// Fails with [`StateError::OutOfOrder`], leaving the state unchanged, if the deltas are not
    /// for the generations `generation() + 1`, `generation() + 2`, … in order.
    pub fn apply_owned_many(&mut self, mut deltas: Vec<Delta>) -> Result<(), StateError> {
        for (delta, expected) in deltas.iter().zip(self.generation + 1..) {
            if delta.generation != expected {
                return Err(StateError::OutOfOrder {
                    current: expected - 1,
                    found: delta.generation,
                });
            }
        }
        let upserts: usize = deltas.iter().map(|delta| delta.upserts.len()).sum();
        let sorted = deltas
            .iter()
            .all(|delta| delta.upserts.is_sorted_by(|a, b| a.0 < b.0));
        if !sorted || upserts == 0 || upserts.saturating_mul(LOAD_FOLD_SHARE) < self.len {
            return deltas
                .into_iter()
                .try_for_each(|delta| self.apply_owned(delta));
        }
        let runs = deltas
            .iter_mut()
            .map(|delta| std::mem::take(&mut delta.upserts))
            .collect();
        self.merge_sorted(LatestOfRuns::new(runs));
        for delta in &deltas {
            self.finish_apply(delta);
        }
        Ok(())
    }

    /// Records `deltas` as applied, their entries merged in already ([`crate::merge`]): the
    /// state takes the generation, commit time and origin of the last of them.
    pub(crate) fn applied(&mut self, deltas: &[Delta]) {
        for delta in deltas {
            self.finish_apply(delta);
        }
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
        // An overlay entry costs about twice the memory of a base entry: fold it in before it
        // rivals the base (amortised, this keeps applying a delta proportional to the delta).
        if self.overlay.len() > (self.base.len() / 2).max(1 << 16) {
            self.compact();
        }
    }

    /// True if `upserts` are better merged into the base in one pass than searched for and
    /// put in the overlay one by one: they are sorted by path (a batch commits its files in
    /// path order) and many against the state. A first scan of 100,000 files commits batches
    /// of 10,000 into a state of the same order; an overlay search costs about twenty path
    /// comparisons each. Merging is linear in the state, so only a delta of at least a
    /// sixteenth of it is merged: applying stays proportional to the delta.
    fn merges_directly(&self, upserts: &[(RelPath, FileEntry)]) -> bool {
        !upserts.is_empty()
            && upserts.len().saturating_mul(16) >= self.len
            && upserts.is_sorted_by(|a, b| a.0 < b.0)
    }

    /// Merges `upserts` (sorted by path, no path twice) into the base, with the overlay.
    fn merge_sorted(&mut self, upserts: impl Iterator<Item = (RelPath, FileEntry)>) {
        self.compact();
        let mut added = Vec::new();
        let mut added_bytes = 0;
        let mut at = 0;
        for (path, entry) in upserts {
            at = self.first_not_before(at, path.as_bytes());
            if at < self.base.len() && self.path_at(at) == path.as_bytes() {
                self.set_at(at, path.as_bytes(), &entry);
            } else {
                added_bytes += path.as_bytes().len();
                added.push((at, path, entry));
            }
        }
        self.len += added.len();
        self.insert_new(added, added_bytes);
    }

    /// The first base entry at or after `from` whose path is not before `path`: a galloping
    /// search, so that a merge costs about `log(n / k)` comparisons per upsert, whether its `k`
    /// upserts are spread over the base or gathered in one place.
    fn first_not_before(&self, from: usize, path: &[u8]) -> usize {
        let len = self.base.len();
        let mut step = 1;
        let mut low = from;
        while low < len && self.path_at(low) < path {
            let probe = low.saturating_add(step).min(len);
            if probe == len || self.path_at(probe) >= path {
                // The answer is in (low, probe]: search it.
                return self
                    .find_between(low + 1, probe, path)
                    .unwrap_or_else(|at| at);
            }
            low = probe;
            step = step.saturating_mul(2);
        }
        low
    }

    fn upsert(&mut self, path: RelPath, entry: FileEntry) {
        // One search of the overlay, not two: a batch applies thousands of paths.
        let place = self.find(path.as_bytes());
        if self
            .overlay
            .insert(path, Overlaid { entry, place })
            .is_none()
            && place.is_err()
        {
            self.len += 1;
        }
    }

    /// Folds the overlay into the sorted base. Linear in the state.
    ///
    /// In place: entries the overlay changes are replaced where they are, and the new ones are
    /// merged in from the back of the grown base (and of the grown path buffer), so the state is
    /// never held twice (growing a large vector remaps its pages rather than copying them).
    pub fn compact(&mut self) {
        if self.overlay.is_empty() {
            return;
        }
        let overlay = std::mem::take(&mut self.overlay);
        let mut added = Vec::new();
        let mut added_bytes = 0;
        for (path, Overlaid { entry, place }) in overlay {
            match place {
                Ok(at) => self.set_at(at, path.as_bytes(), &entry),
                Err(at) => {
                    added_bytes += path.as_bytes().len();
                    added.push((at, path, entry));
                }
            }
        }
        self.insert_new(added, added_bytes);
    }

    /// Merges `added` (sorted by path, none in the base; `added_bytes` their paths' length)
    /// into the base, from the back. Each comes with its place in the base as it is: the index
    /// of the first entry whose path sorts after it (as the search that found it absent says),
    /// so that placing it costs no second search.
    fn insert_new(&mut self, mut added: Vec<(usize, RelPath, FileEntry)>, added_bytes: usize) {
        if added.is_empty() {
            return;
        }
        let kept = self.base.len();
        let kept_bytes = self.paths.len();
        self.base.reserve_exact(added.len());
        self.base
            .resize_with(kept + added.len(), || BaseEntry::new(0, &placeholder()));
        self.paths.reserve_exact(added_bytes);
        self.paths.resize(kept_bytes + added_bytes, 0);
        // Entries [0, from) and their bytes [0, from_end) are still where they were; entries
        // [write, ..) and bytes [byte_write, ..) are final. byte_write - from_end is the length
        // of the paths still in `added`, so a move never overwrites bytes not yet moved.
        let mut from = kept;
        let mut from_end = kept_bytes;
        let mut write = self.base.len();
        let mut byte_write = self.paths.len();
        while let Some((first, path, entry)) = added.pop() {
            let path = path.as_bytes();
            // Base entries after `path` move to the back, in order, as one block (a load folds
            // entries spread over the whole base, 1,000,000 moves a time). Places come sorted as
            // the paths are, and entries before `from` have not moved: `first` is still theirs.
            debug_assert!(first <= from);
            let first_start = self.base.get(first).filter(|_| first < from);
            let first_start = first_start.map_or(from_end, BaseEntry::start);
            byte_write -= from_end - first_start;
            self.paths.copy_within(first_start..from_end, byte_write);
            write -= from - first;
            self.base.copy_within(first..from, write);
            let shift = byte_write - first_start;
            for moved in &mut self.base[write..write + (from - first)] {
                moved.set_start(moved.start() + shift);
            }
            (from, from_end) = (first, first_start);
            write -= 1;
            byte_write -= path.len();
            self.paths[byte_write..byte_write + path.len()].copy_from_slice(path);
            self.base[write] = BaseEntry::new(byte_write, &entry);
            self.keep_reason(path, &entry);
        }
        debug_assert_eq!((write, byte_write), (from, from_end));
        debug_assert_eq!(self.base.len(), self.len);
    }

    /// Moves the state to `generation`, as committed now, without changing its entries
    /// (compacting them): the base of a log that restarts after outputs it does not know
    /// (`--allow-rescan`).
    pub fn rebase(&mut self, generation: u64) {
        self.compact();
        self.generation = generation;
        self.last_commit_ms = Some(crate::records::now_ms());
    }

    /// Drops the entries of `paths` (files gone from the directory), compacting first.
    /// Returns how many entries were dropped.
    pub fn forget(&mut self, paths: &[RelPath]) -> usize {
        if paths.is_empty() {
            return 0;
        }
        self.compact();
        let mut sorted: Vec<&[u8]> = paths.iter().map(RelPath::as_bytes).collect();
        sorted.sort_unstable();
        let before = self.base.len();
        // Kept entries and their bytes slide to the front, in order.
        let mut write = 0;
        let mut byte_write = 0;
        for i in 0..before {
            let start = self.base[i].start();
            let end = self
                .base
                .get(i + 1)
                .map_or(self.paths.len(), BaseEntry::start);
            if sorted.binary_search(&&self.paths[start..end]).is_ok() {
                if self.base[i].failed() {
                    self.reasons.remove(&self.paths[start..end]);
                }
                continue;
            }
            self.paths.copy_within(start..end, byte_write);
            self.base.swap(write, i);
            self.base[write].set_start(byte_write);
            byte_write += end - start;
            write += 1;
        }
        self.base.truncate(write);
        self.paths.truncate(byte_write);
        self.len = self.base.len();
        before - self.len
    }
}

/// Builds a [`State`] from entries that come sorted by path (a snapshot, read entry by entry),
/// straight into its compact form.
pub(crate) struct SortedBuilder {
    state: State,
}

impl SortedBuilder {
    /// A builder for a state at `generation`, with room for `capacity` entries.
    pub(crate) fn new(generation: u64, last_commit_ms: Option<u64>, capacity: usize) -> Self {
        Self {
            state: State {
                generation,
                last_commit_ms,
                base: Vec::with_capacity(capacity),
                ..State::default()
            },
        }
    }

    /// Adds the next entry; its path must sort after the previous one.
    pub(crate) fn push(&mut self, path: &[u8], entry: FileEntry) -> Result<(), StateError> {
        let state = &mut self.state;
        if let Some(last) = state.base.len().checked_sub(1) {
            let before = state.path_at(last);
            if before >= path {
                return Err(StateError::Unsorted {
                    before: RelPath::new(before),
                    after: RelPath::new(path),
                });
            }
        }
        state.base.push(BaseEntry::new(state.paths.len(), &entry));
        state.paths.extend_from_slice(path);
        state.keep_reason(path, &entry);
        state.len += 1;
        Ok(())
    }

    /// The state, its buffers trimmed to their contents.
    pub(crate) fn finish(mut self) -> State {
        self.state.base.shrink_to_fit();
        self.state.paths.shrink_to_fit();
        self.state
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
        outcome: Outcome::Done,
        fingerprint: 0,
    }
}

/// Merges the sorted base (paths and indices) with the overlay, the overlay winning ties.
struct Merge<'a, B: Iterator, O: Iterator> {
    state: &'a State,
    base: std::iter::Peekable<B>,
    overlay: std::iter::Peekable<O>,
}

impl<'a, B, O> Iterator for Merge<'a, B, O>
where
    B: Iterator<Item = (RelPathRef<'a>, usize)>,
    O: Iterator<Item = (&'a RelPath, &'a FileEntry)>,
{
    type Item = (RelPathRef<'a>, FileEntry);

    fn next(&mut self) -> Option<Self::Item> {
        let from_base = match (self.base.peek(), self.overlay.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((b, _)), Some((o, _))) => match o.as_ref_path().cmp(b) {
                Ordering::Less => false,
                Ordering::Greater => true,
                Ordering::Equal => {
                    self.base.next();
                    false
                }
            },
        };
        if from_base {
            let (path, i) = self.base.next()?;
            Some((path, self.state.entry_at(i)))
        } else {
            let (path, entry) = self.overlay.next()?;
            Some((path.as_ref_path(), entry.clone()))
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

    /// A delta of `generation` with up to `most` paths drawn among `dirs` directories of `files`
    /// files (sorted, without repeats, where `sorted`), each with its generation's outcome.
    fn random_delta(
        next: &mut impl FnMut(u64) -> u64,
        generation: u64,
        most: u64,
        (dirs, files): (u64, u64),
        sorted: bool,
    ) -> Delta {
        let mut paths: Vec<String> = (0..next(most))
            .map(|_| format!("d{}/f{:03}", next(dirs), next(files)))
            .collect();
        if sorted {
            paths.sort();
            paths.dedup();
        }
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let mut delta = delta(generation, &refs);
        for (path, entry) in &mut delta.upserts {
            entry.outcome = outcome_for(&path.to_string(), generation);
        }
        delta
    }

    /// Numbers below the bound asked, from a small linear congruential generator seeded with
    /// `seed`: deterministic, no dependency.
    fn random_below(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |bound| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % bound
        }
    }

    /// Deltas applied together ([`State::apply_owned_many`], a load) make the state that applying
    /// them one by one makes: sorted and unsorted ones, paths in several deltas (the latest
    /// wins), groups large and small against the state, outcomes that fail with a reason.
    #[test]
    fn deltas_applied_together_make_the_state_they_make_one_by_one() {
        let mut next = random_below(0x9e37_79b9_7f4a_7c15);
        let mut merged_at_once = 0;
        for round in 0..60 {
            let (mut one_by_one, mut together) = (State::new(), State::new());
            let mut generation = 0;
            for _ in 0..6 {
                let group: Vec<Delta> = (0..1 + next(6))
                    .map(|_| {
                        generation += 1;
                        let sorted = next(4) != 0;
                        let mut delta = random_delta(&mut next, generation, 60, (5, 150), sorted);
                        for (_, entry) in &mut delta.upserts {
                            entry.size = next(1000);
                        }
                        delta.committed_at_ms = generation * 10;
                        delta
                    })
                    .collect();
                let sorted = group
                    .iter()
                    .all(|d| d.upserts.is_sorted_by(|a, b| a.0 < b.0));
                let upserts: usize = group.iter().map(|d| d.upserts.len()).sum();
                let merges = sorted && upserts > 0 && upserts * LOAD_FOLD_SHARE >= together.len();
                for delta in group.clone() {
                    one_by_one.apply_owned(delta).unwrap();
                }
                together.apply_owned_many(group).unwrap();
                // The merge leaves nothing in the overlay. Applied one by one, the same deltas
                // often leave some there: those groups tell the merge from a fallback.
                if merges {
                    assert_eq!(together.uncompacted(), 0, "round {round}");
                    merged_at_once += usize::from(one_by_one.uncompacted() > 0);
                }
                assert_eq!(together, one_by_one, "round {round}");
                assert_eq!(together.last_commit_ms(), Some(generation * 10));
            }
            one_by_one.compact();
            together.compact();
            assert_eq!(together, one_by_one, "round {round}, compacted");
        }
        assert!(
            merged_at_once >= 20,
            "only {merged_at_once} merged groups told apart from deltas applied one by one"
        );
    }

    #[test]
    fn deltas_applied_together_must_follow_in_order_and_change_nothing_otherwise() {
        let mut state = State::new();
        state.apply(&delta(1, &["a"])).unwrap();
        let before = state.clone();
        let gap = vec![delta(2, &["b"]), delta(4, &["c"])];
        assert!(matches!(
            state.apply_owned_many(gap),
            Err(StateError::OutOfOrder {
                current: 2,
                found: 4
            })
        ));
        assert_eq!(state, before);
        state
            .apply_owned_many(vec![delta(2, &["b"]), delta(3, &["b", "c"])])
            .unwrap();
        assert_eq!(state.generation(), 3);
        assert_eq!(paths(&state), ["a", "b", "c"]);
        assert_eq!(state.get(&"b".into()).unwrap().generation, 3);
    }

    #[test]
    fn apply_requires_the_next_generation() {
        let mut state = State::new();
        assert!(state.apply(&delta(2, &["a"])).is_err());
        state.apply(&delta(1, &["a"])).unwrap();
        assert_eq!(state.generation(), 1);
        assert_eq!(state.get(&"a".into()), Some(entry(1)));
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

    /// Done, failed (with a reason that names the path and generation) or baselined.
    fn outcome_for(path: &str, generation: u64) -> Outcome {
        match (path.bytes().map(u64::from).sum::<u64>() + generation) % 3 {
            0 => Outcome::Done,
            1 => Outcome::Failed {
                reason: format!("{path} in {generation}").into(),
            },
            _ => Outcome::Baselined,
        }
    }

    #[test]
    fn a_tracked_file_takes_64_bytes_and_its_path() {
        assert_eq!(std::mem::size_of::<BaseEntry>(), 64);
        let mut failed = entry(1);
        failed.outcome = Outcome::Failed {
            reason: "permission denied".into(),
        };
        let mut baselined = entry(1);
        baselined.outcome = Outcome::Baselined;
        for entry in [entry(1), failed, baselined] {
            let compact = BaseEntry::new(1 << 40, &entry);
            assert_eq!(compact.start(), 1 << 40);
            assert_eq!(compact.to_entry(|| "permission denied".into()), entry);
        }
    }

    #[test]
    fn compaction_in_place_equals_a_sorted_map() {
        let mut next = random_below(0x2545_f491_4f6c_dd1d);
        let mut merged = 0;
        for round in 0..50 {
            let mut state = State::new();
            let mut model = BTreeMap::new();
            for generation in 1..=8 {
                // Sorted deltas (what a batch commits) big enough against the state are merged
                // straight into the base; the others go through the overlay.
                let sorted = next(2) == 0;
                let delta = random_delta(&mut next, generation, 40, (4, 120), sorted);
                let paths: Vec<String> = delta.upserts.iter().map(|(p, _)| p.to_string()).collect();
                merged += usize::from(state.merges_directly(&delta.upserts));
                if next(2) == 0 {
                    state.apply(&delta).unwrap();
                } else {
                    state.apply_owned(delta).unwrap();
                }
                for path in &paths {
                    model.insert(path.clone(), generation);
                }
                if next(3) == 0 {
                    state.compact();
                    assert!(state.overlay.is_empty());
                }
                if next(4) == 0 {
                    let gone: Vec<String> = (0..next(30))
                        .map(|_| format!("d{}/f{:03}", next(4), next(120)))
                        .collect();
                    let gone: Vec<RelPath> = gone.iter().map(|p| p.as_str().into()).collect();
                    let dropped = state.forget(&gone);
                    let before = model.len();
                    for path in &gone {
                        model.remove(&path.to_string());
                    }
                    assert_eq!(dropped, before - model.len(), "round {round}");
                }
                let got: Vec<(String, u64, Outcome)> = state
                    .entries()
                    .map(|(p, e)| (p.to_string(), e.generation, e.outcome))
                    .collect();
                let want: Vec<(String, u64, Outcome)> = model
                    .iter()
                    .map(|(p, &g)| (p.clone(), g, outcome_for(p, g)))
                    .collect();
                assert_eq!(got, want, "round {round}, generation {generation}");
                assert_eq!(state.len(), model.len());
            }
            state.compact();
            assert!(
                (1..state.base.len()).all(|i| state.path_at(i - 1) < state.path_at(i)),
                "round {round}"
            );
            // A reason is kept for each failed entry, and none for another.
            let failed = state.base.iter().filter(|e| e.failed()).count();
            assert_eq!(state.reasons.len(), failed, "round {round}");
            for (path, entry) in state.entries() {
                assert_eq!(state.get(&path.to_rel_path()), Some(entry), "round {round}");
            }
        }
        assert!(
            merged > 20,
            "both ways of applying are exercised ({merged} merges)"
        );
    }

    #[test]
    fn unsorted_snapshots_are_rejected() {
        let entries = ["b", "a"].map(|p| (RelPath::from(p), entry(1))).to_vec();
        assert!(State::from_sorted(1, None, entries).is_err());
        let entries = ["a", "a"].map(|p| (RelPath::from(p), entry(1))).to_vec();
        assert!(State::from_sorted(1, None, entries).is_err());
    }
}
