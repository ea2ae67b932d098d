//! Cutting the ready files into batches: oldest first, capped by files and bytes.

use std::collections::VecDeque;

use state_store::PlannedFile;

/// Caps on one batch. A batch always takes at least one file, however large.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many files per batch.
    pub max_files: usize,
    /// At most this many bytes to process per batch (unless its first file alone is larger).
    pub max_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_files: 10_000,
            max_bytes: 4 << 30,
        }
    }
}

/// Orders `ready` oldest first (by mtime, then path) and cuts it into batches within `limits`.
///
/// Oldest first, so that a backlog drains in the order the emitter produced it and no file
/// waits behind newer ones. Each batch comes back ordered by path, the order of its output.
pub fn cut_batches(mut ready: Vec<PlannedFile>, limits: BatchLimits) -> Vec<Vec<PlannedFile>> {
    ready.sort_unstable_by(|a, b| {
        a.mtime_ns
            .cmp(&b.mtime_ns)
            .then_with(|| a.path.cmp(&b.path))
    });
    let max_files = limits.max_files.max(1);
    let mut batches = Vec::new();
    let mut current: Vec<PlannedFile> = Vec::new();
    let mut bytes = 0u64;
    for file in ready {
        let size = pending_bytes(&file);
        let full = current.len() >= max_files || bytes.saturating_add(size) > limits.max_bytes;
        if !current.is_empty() && full {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        current.push(file);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    for batch in &mut batches {
        batch.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    }
    batches
}

/// The batches of one scan still to run, with the backlog they make.
#[derive(Debug, Default)]
pub(crate) struct BatchQueue {
    batches: VecDeque<Vec<PlannedFile>>,
    files: usize,
    bytes: u64,
}

impl BatchQueue {
    /// Queues batches cut by [`cut_batches`].
    pub(crate) fn new(batches: Vec<Vec<PlannedFile>>) -> Self {
        let files = batches.iter().map(Vec::len).sum();
        let bytes = batches.iter().flatten().map(pending_bytes).sum();
        Self {
            batches: batches.into(),
            files,
            bytes,
        }
    }

    /// The next batch, left in the queue.
    pub(crate) fn peek(&self) -> Option<&[PlannedFile]> {
        self.batches.front().map(Vec::as_slice)
    }

    /// The next batch to run.
    pub(crate) fn next(&mut self) -> Option<Vec<PlannedFile>> {
        let batch = self.batches.pop_front()?;
        self.files -= batch.len();
        self.bytes -= batch.iter().map(pending_bytes).sum::<u64>();
        Some(batch)
    }

    /// Files waiting in the queue.
    pub(crate) fn files(&self) -> usize {
        self.files
    }

    /// Bytes to process in the queue.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The modification time of the oldest file waiting: batches run oldest first, so it is in
    /// the next one.
    pub(crate) fn oldest_mtime_ns(&self) -> Option<i64> {
        self.batches.front()?.iter().map(|f| f.mtime_ns).min()
    }
}

fn pending_bytes(file: &PlannedFile) -> u64 {
    file.size.saturating_sub(file.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, size: u64, mtime_ns: i64) -> PlannedFile {
        PlannedFile {
            path: path.into(),
            size,
            mtime_ns,
            inode: 1,
            btime_ns: 0,
            start: 0,
        }
    }

    fn names(batches: &[Vec<PlannedFile>]) -> Vec<Vec<String>> {
        batches
            .iter()
            .map(|b| b.iter().map(|f| f.path.to_string()).collect())
            .collect()
    }

    #[test]
    fn oldest_first_within_file_caps() {
        let ready = vec![
            f("c", 1, 1),
            f("a", 1, 3),
            f("b", 1, 2),
            f("d", 1, 4),
            f("e", 1, 1),
        ];
        let limits = BatchLimits {
            max_files: 2,
            max_bytes: u64::MAX,
        };
        assert_eq!(
            names(&cut_batches(ready, limits)),
            vec![vec!["c", "e"], vec!["a", "b"], vec!["d"]]
        );
    }

    #[test]
    fn byte_caps_but_never_an_empty_batch() {
        let ready = vec![
            f("big", 100, 1),
            f("s1", 4, 2),
            f("s2", 4, 3),
            f("s3", 4, 4),
        ];
        let limits = BatchLimits {
            max_files: 100,
            max_bytes: 8,
        };
        assert_eq!(
            names(&cut_batches(ready, limits)),
            vec![vec!["big"], vec!["s1", "s2"], vec!["s3"]]
        );
        assert!(cut_batches(Vec::new(), limits).is_empty());
    }

    #[test]
    fn a_queue_tracks_what_is_left() {
        let ready = vec![f("old", 4, 1), f("mid", 5, 2), f("new", 6, 3)];
        let limits = BatchLimits {
            max_files: 2,
            max_bytes: u64::MAX,
        };
        let mut queue = BatchQueue::new(cut_batches(ready, limits));
        assert_eq!((queue.files(), queue.bytes()), (3, 15));
        assert_eq!(queue.oldest_mtime_ns(), Some(1));
        assert_eq!(queue.next().unwrap().len(), 2);
        assert_eq!((queue.files(), queue.bytes()), (1, 6));
        assert_eq!(queue.oldest_mtime_ns(), Some(3));
        queue.next().unwrap();
        assert!(queue.next().is_none());
        assert_eq!(
            (queue.files(), queue.bytes(), queue.oldest_mtime_ns()),
            (0, 0, None)
        );
    }

    #[test]
    fn zero_max_files_still_makes_progress() {
        let limits = BatchLimits {
            max_files: 0,
            max_bytes: 0,
        };
        assert_eq!(
            names(&cut_batches(vec![f("a", 1, 1), f("b", 1, 2)], limits)).len(),
            2
        );
    }
}
