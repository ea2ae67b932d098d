//! Comparing a listing with the committed state: what is new, grown, changed, unchanged, gone.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use state_store::{FINGERPRINT_BYTES, FileEntry, RelPath, RelPathRef, State};

use crate::ConfigError;
use crate::identity::fingerprint_file;
use crate::listing::{ListedFile, Listing, Walk, is_unknown};

/// How a listed file relates to what the state remembers of its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The state does not know this path.
    New,
    /// Another file has the path now (another inode, or the same inode number reused by a file
    /// born later): a new file, unrelated to the one that was processed.
    Replaced,
    /// Same inode, larger than when it was processed: appended to.
    Grown {
        /// Bytes already processed.
        processed: u64,
    },
    /// The same file, shrunk or modified in place without growing.
    Changed,
}

/// What to do with a processed file that changed since (`--on-change`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnChange {
    /// Leave it alone: its result stands (the change is counted in `gleaner_changed_files`).
    #[default]
    Ignore,
    /// Process the whole file again, as a new file.
    Reprocess,
    /// Process what was appended since the last commit, whole lines only; a file that shrank or
    /// was rewritten in place is processed again from the start.
    Append,
}

impl std::str::FromStr for OnChange {
    type Err = ConfigError;

    /// Parses `ignore`, `reprocess` or `append`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let choices = [
            ("ignore", Self::Ignore),
            ("reprocess", Self::Reprocess),
            ("append", Self::Append),
        ];
        ConfigError::choose(s, &choices, "ignore, reprocess or append")
    }
}

/// A listed file that is not unchanged, with how it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffEntry {
    /// The file as listed.
    pub file: ListedFile,
    /// How it differs from the state.
    pub change: Change,
}

/// The result of merging a listing with the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Listed files that are new, grown or changed, ordered by path.
    pub entries: Vec<DiffEntry>,
    /// How many listed files match their state entry exactly.
    pub unchanged: usize,
    /// Tracked paths that are no longer in the directory, ordered by path. Paths under an
    /// unknown part of the listing (an unreadable directory) are never reported gone.
    pub gone: Vec<RelPath>,
}

/// Files in path byte order, from a walk in progress ([`Walk`]) or a listing held in memory,
/// that can tell which paths they could not see.
pub trait ListedFiles: Iterator<Item = ListedFile> {
    /// True if `path` is, or lies under, a path whose contents could not be known. Asked only
    /// for paths before the last file returned, which a walk has passed.
    fn is_unknown(&self, path: RelPathRef<'_>) -> bool;
}

impl ListedFiles for Walk<'_> {
    fn is_unknown(&self, path: RelPathRef<'_>) -> bool {
        Walk::is_unknown(self, path)
    }
}

impl<F: ListedFiles + ?Sized> ListedFiles for &mut F {
    fn is_unknown(&self, path: RelPathRef<'_>) -> bool {
        (**self).is_unknown(path)
    }
}

/// The files of a [`Listing`] held in memory.
struct Held<'a> {
    files: std::slice::Iter<'a, ListedFile>,
    unknown: &'a [RelPath],
}

impl Iterator for Held<'_> {
    type Item = ListedFile;

    fn next(&mut self) -> Option<ListedFile> {
        self.files.next().cloned()
    }
}

impl ListedFiles for Held<'_> {
    fn is_unknown(&self, path: RelPathRef<'_>) -> bool {
        is_unknown(self.unknown, path)
    }
}

/// Merge-joins the sorted listing with the state's sorted entries, in one pass over both.
///
/// The cost is linear in the listing plus the state, with no lookups.
pub fn diff(listing: &Listing, state: &State) -> Diff {
    let files = Held {
        files: listing.files.iter(),
        unknown: &listing.unknown,
    };
    merge(files, state, |_, _| {})
}

/// Merge-joins `files` with the state's sorted entries as they come, in one pass over both,
/// holding only the files that are not unchanged; `unchanged` sees each unchanged file with its
/// state entry.
///
/// The cost is linear in the listing plus the state, with no lookups.
pub fn merge(
    mut files: impl ListedFiles,
    state: &State,
    mut unchanged: impl FnMut(&ListedFile, &FileEntry),
) -> Diff {
    let mut out = Diff::default();
    let mut tracked = state.entries().peekable();
    let mut next = files.next();
    loop {
        let order = match (&next, tracked.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(file), Some((path, _))) => file.path.as_ref_path().cmp(path),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(file) = next.take() {
                    out.entries.push(DiffEntry {
                        file,
                        change: Change::New,
                    });
                }
                next = files.next();
            }
            std::cmp::Ordering::Greater => {
                if let Some((path, _)) = tracked.next() {
                    if !files.is_unknown(path) {
                        out.gone.push(path.to_rel_path());
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some(file), Some((_, entry))) = (next.take(), tracked.next()) {
                    match change_of(&file, &entry) {
                        None => {
                            out.unchanged += 1;
                            unchanged(&file, &entry);
                        }
                        Some(change) => out.entries.push(DiffEntry { file, change }),
                    }
                }
                next = files.next();
            }
        }
    }
    out
}

/// Compares each of `files` with the state's entry for its path, by lookup: for a walk of a
/// few directories ([`walk_dirs`](crate::listing::walk_dirs)), which cannot tell what is gone
/// (the diff's `gone` stays empty; a full walk finds those) and need not come in path order.
/// `unchanged` sees each unchanged file with its state entry.
pub fn lookup(
    files: impl Iterator<Item = ListedFile>,
    state: &State,
    mut unchanged: impl FnMut(&ListedFile, &FileEntry),
) -> Diff {
    let mut out = Diff::default();
    for file in files {
        match state.get(&file.path) {
            None => out.entries.push(DiffEntry {
                file,
                change: Change::New,
            }),
            Some(entry) => match change_of(&file, &entry) {
                None => {
                    out.unchanged += 1;
                    unchanged(&file, &entry);
                }
                Some(change) => out.entries.push(DiffEntry { file, change }),
            },
        }
    }
    out.entries
        .sort_unstable_by(|a, b| a.file.path.cmp(&b.file.path));
    out.entries.dedup_by(|a, b| a.file.path == b.file.path);
    out
}

/// How a listed file differs from the state's entry for its path; `None` if it is unchanged.
pub fn change_of(file: &ListedFile, entry: &FileEntry) -> Option<Change> {
    let reborn = file.btime_ns != 0 && entry.btime_ns != 0 && file.btime_ns != entry.btime_ns;
    if file.inode != entry.inode || reborn {
        return Some(Change::Replaced);
    }
    if file.size > entry.size {
        return Some(Change::Grown {
            processed: entry.offset,
        });
    }
    if file.size < entry.size || file.mtime_ns != entry.mtime_ns {
        return Some(Change::Changed);
    }
    None
}

/// Where processing of a listed file that is not unchanged starts, or `None` to leave it.
///
/// New files (and other files under a processed name) start at 0. A processed file that
/// changed is handled as `on_change` says; a failed one that changed is tried again (from the
/// failed range's start when appending: what was committed before it stays counted once).
/// Reads the file's first bytes when appending, to tell an appended file from a rewritten one.
pub(crate) fn start_for(
    root: &Path,
    on_change: OnChange,
    entry: &DiffEntry,
    tracked: Option<&FileEntry>,
) -> Option<u64> {
    let failed = tracked.is_some_and(|t| t.outcome.is_failed());
    let (change, tracked) = match (entry.change, tracked) {
        (Change::New | Change::Replaced, _) | (_, None) => return Some(0),
        (change, Some(tracked)) => (change, tracked),
    };
    // The first bytes are those committed (or nothing is known of them).
    let same_start = || {
        tracked.fingerprint == 0
            || fingerprint_file(root, &entry.file.path, tracked.size, Some(entry.file.inode))
                == Some(tracked.fingerprint)
    };
    match on_change {
        OnChange::Ignore if failed => Some(0),
        OnChange::Ignore => None,
        OnChange::Reprocess => Some(0),
        OnChange::Append => match change {
            // Grown: appended to, unless its first bytes changed (rewritten larger).
            Change::Grown { processed } => Some(if same_start() { processed } else { 0 }),
            // Shrunk: rewritten.
            Change::Changed if entry.file.size < tracked.size => Some(0),
            // Same size, another modification time: touched if its first bytes are the same
            // (left alone), rewritten otherwise. Unknown first bytes are taken as touched:
            // processing the file again would count it twice.
            Change::Changed if tracked.fingerprint == 0 || same_start() => None,
            Change::Changed => Some(0),
            Change::New | Change::Replaced => Some(0),
        },
    }
}

/// Processed files that left their path (gone, or another file took the path), by the
/// length their fingerprint covers and the fingerprint: `--identity content` finds them under
/// new paths.
#[derive(Debug, Default)]
pub(crate) struct MovedAway {
    by_fingerprint: HashMap<(u64, u64), Vec<(RelPath, FileEntry)>>,
}

impl MovedAway {
    /// The processed files `diff` shows gone from their path, or replaced there by another file.
    pub(crate) fn of(diff: &Diff, state: &State) -> Self {
        let mut moved = Self::default();
        let replaced = diff
            .entries
            .iter()
            .filter(|e| e.change == Change::Replaced)
            .map(|e| &e.file.path);
        for path in diff.gone.iter().chain(replaced) {
            if let Some(entry) = state.get(path) {
                moved.add(path.clone(), entry);
            }
        }
        moved
    }

    fn add(&mut self, path: RelPath, entry: FileEntry) {
        // Empty files are all alike: never matched.
        if entry.fingerprint != 0 && entry.size > 0 {
            let window = entry.size.min(FINGERPRINT_BYTES);
            self.by_fingerprint
                .entry((window, entry.fingerprint))
                .or_default()
                .push((path, entry));
        }
    }

    /// The processed file `file` is, renamed, if any: its old path, and the entry to record
    /// under the new one. The sizes must be equal, or, when appending, the new one at least the
    /// committed one (lines written before the rename are then processed as appended). A match
    /// is taken: no two files are recognised as one. Blocking (reads first bytes).
    pub(crate) fn take_match(
        &mut self,
        root: &Path,
        file: &ListedFile,
        appending: bool,
    ) -> Option<(RelPath, FileEntry)> {
        if self.by_fingerprint.is_empty() {
            return None;
        }
        let windows: BTreeSet<u64> = self
            .by_fingerprint
            .keys()
            .map(|&(window, _)| window)
            .collect();
        for window in windows.into_iter().filter(|&w| w <= file.size) {
            let fingerprint = fingerprint_file(root, &file.path, window, Some(file.inode))?;
            let Some(candidates) = self.by_fingerprint.get_mut(&(window, fingerprint)) else {
                continue;
            };
            let fits = |old: &FileEntry| {
                if appending {
                    file.size >= old.size
                } else {
                    file.size == old.size
                }
            };
            let Some(at) = candidates
                .iter()
                .position(|(path, old)| *path != file.path && fits(old))
            else {
                continue;
            };
            let (was, old) = candidates.swap_remove(at);
            let renamed = FileEntry {
                inode: file.inode,
                btime_ns: file.btime_ns,
                // As committed: a file that grew since shows as grown at the next scan.
                size: old.size,
                mtime_ns: if file.size == old.size {
                    file.mtime_ns
                } else {
                    old.mtime_ns
                },
                ..old
            };
            return Some((was, renamed));
        }
        None
    }
}

/// Which paths a scan's walk found, asked after the merge (a ready marker, a file held back
/// for a retry): the diff holds the files that are not unchanged, the state the others.
pub(crate) struct Seen<'a> {
    diff: &'a Diff,
    state: &'a State,
    unknown: &'a [RelPath],
}

impl<'a> Seen<'a> {
    /// What a walk found: the files of `diff`, and the files of `state` that it neither
    /// reports gone nor has under an `unknown` path.
    pub(crate) fn new(diff: &'a Diff, state: &'a State, unknown: &'a [RelPath]) -> Self {
        Self {
            diff,
            state,
            unknown,
        }
    }

    /// True if the walk found a regular file at `path`.
    pub(crate) fn contains(&self, path: &[u8]) -> bool {
        if self
            .diff
            .entries
            .binary_search_by(|e| e.file.path.as_bytes().cmp(path))
            .is_ok()
        {
            return true;
        }
        let path = RelPath::new(path);
        self.state.get(&path).is_some()
            && self.diff.gone.binary_search(&path).is_err()
            && !is_unknown(self.unknown, path.as_ref_path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_store::{Delta, Outcome};

    fn file(path: &str, size: u64, mtime_ns: i64, inode: u64) -> ListedFile {
        ListedFile {
            path: path.into(),
            size,
            mtime_ns,
            inode,
            btime_ns: 100,
        }
    }

    fn state_of(files: &[ListedFile]) -> State {
        let mut state = State::new();
        let delta = Delta {
            generation: 1,
            upserts: files
                .iter()
                .map(|f| {
                    (
                        f.path.clone(),
                        FileEntry {
                            size: f.size,
                            mtime_ns: f.mtime_ns,
                            inode: f.inode,
                            btime_ns: f.btime_ns,
                            offset: f.size,
                            generation: 1,
                            outcome: Outcome::Done,
                            fingerprint: 0,
                        },
                    )
                })
                .collect(),
            ..Delta::default()
        };
        state.apply(&delta).unwrap();
        state
    }

    fn listing(files: Vec<ListedFile>, unknown: &[&str]) -> Listing {
        Listing {
            files,
            unknown: unknown.iter().map(|u| RelPath::from(*u)).collect(),
            ..Listing::default()
        }
    }

    #[test]
    fn no_state_means_everything_is_new() {
        let l = listing(vec![file("a", 1, 1, 1), file("b/c", 2, 2, 2)], &[]);
        let d = diff(&l, &State::new());
        assert_eq!(d.entries.len(), 2);
        assert!(d.entries.iter().all(|e| e.change == Change::New));
        assert!(d.gone.is_empty());
    }

    #[test]
    fn classifies_every_kind_of_change() {
        let before = [
            file("appended", 10, 1, 1),
            file("gone", 1, 1, 2),
            file("reborn", 10, 1, 7),
            file("replaced", 10, 1, 3),
            file("same", 5, 1, 4),
            file("shrunk", 10, 1, 5),
            file("touched", 10, 1, 6),
        ];
        let state = state_of(&before);
        let now = listing(
            vec![
                file("appended", 15, 2, 1),
                file("brand-new", 1, 1, 9),
                ListedFile {
                    btime_ns: 200,
                    ..file("reborn", 10, 1, 7)
                },
                file("replaced", 10, 1, 33),
                file("same", 5, 1, 4),
                file("shrunk", 3, 2, 5),
                file("touched", 10, 7, 6),
            ],
            &[],
        );
        let d = diff(&now, &state);
        let got: Vec<(String, Change)> = d
            .entries
            .iter()
            .map(|e| (e.file.path.to_string(), e.change))
            .collect();
        assert_eq!(
            got,
            vec![
                ("appended".into(), Change::Grown { processed: 10 }),
                ("brand-new".into(), Change::New),
                ("reborn".into(), Change::Replaced),
                ("replaced".into(), Change::Replaced),
                ("shrunk".into(), Change::Changed),
                ("touched".into(), Change::Changed),
            ]
        );
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.gone, vec![RelPath::from("gone")]);
    }

    #[test]
    fn files_under_unreadable_directories_are_not_gone() {
        let state = state_of(&[
            file("a-b", 1, 1, 1),
            file("a/x", 1, 1, 2),
            file("a/y/z", 1, 1, 3),
            file("b", 1, 1, 4),
            file("c", 1, 1, 5),
        ]);
        let d = diff(&listing(vec![], &["a", "c"]), &state);
        assert_eq!(d.gone, vec![RelPath::from("a-b"), RelPath::from("b")]);
    }
}
