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
    /// A batch's results are held in memory until its output object is written: once they
    /// reach this many bytes (as rendered, about the size of the output object), the batch
    /// ends with the files processed so far, and the others go to the next batch. It bounds
    /// a batch's memory whatever its results (a `count-by` result may be larger than its file).
    pub max_output_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_files: 10_000,
            max_bytes: 4 << 30,
            max_output_bytes: 16 << 20,
        }
    }
}

/// Orders `ready` oldest first (by mtime, then path) and cuts it into batches within `limits`.
///
/// Oldest first, so that a backlog drains in the order the emitter produced it and no file
/// waits behind newer ones. Each batch comes back ordered by path, the order of its output.
pub fn cut_batches(mut ready: Vec<PlannedFile>, limits: BatchLimits) -> Vec<Vec<PlannedFile>> {
    // Each file's rank in path order settles ties of age and the order inside a batch with
    // integer comparisons instead of path comparisons: a survey's ready files come in path
    // order already, so that ranking costs one pass (for 100,000 files, the path sorts were
    // most of this function's time).
    if !ready.is_sorted_by(|a, b| a.path <= b.path) {
        ready.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    }
    let mut order: Vec<(i64, usize)> = ready
        .iter()
        .enumerate()
        .map(|(rank, file)| (file.mtime_ns, rank))
        .collect();
    order.sort_unstable();
    let max_files = limits.max_files.max(1);
    // Which batch each file goes to, by rank; then one pass in path order fills the batches,
    // each in path order with no sort of its own.
    let mut batch_of = vec![0u32; ready.len()];
    let mut sizes: Vec<usize> = Vec::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    for (_, rank) in order {
        let size = pending_bytes(&ready[rank]);
        let full = files >= max_files || bytes.saturating_add(size) > limits.max_bytes;
        if sizes.is_empty() || (files > 0 && full) {
            sizes.push(0);
            (files, bytes) = (0, 0);
        }
        files += 1;
        bytes = bytes.saturating_add(size);
        *sizes.last_mut().expect("a batch was started") += 1;
        batch_of[rank] = u32::try_from(sizes.len() - 1).unwrap_or(u32::MAX);
    }
    let mut batches: Vec<Vec<PlannedFile>> = sizes.into_iter().map(Vec::with_capacity).collect();
    for (rank, file) in ready.into_iter().enumerate() {
        batches[batch_of[rank] as usize].push(file);
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

    /// Puts `files` back at the front of the queue: the rest of a batch cut short, run next.
    pub(crate) fn push_front(&mut self, files: Vec<PlannedFile>) {
        if files.is_empty() {
            return;
        }
        self.files += files.len();
        self.bytes += files.iter().map(pending_bytes).sum::<u64>();
        self.batches.push_front(files);
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
            ..BatchLimits::default()
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
            ..BatchLimits::default()
        };
        assert_eq!(
            names(&cut_batches(ready, limits)),
            vec![vec!["big"], vec!["s1", "s2"], vec!["s3"]]
        );
        assert!(cut_batches(Vec::new(), limits).is_empty());
    }

    #[test]
    fn ranks_cut_as_sorting_by_age_then_path_does() {
        // The straightforward definition: sort by (mtime, path), cut, sort each batch by path.
        fn model(mut ready: Vec<PlannedFile>, limits: BatchLimits) -> Vec<Vec<PlannedFile>> {
            ready.sort_by(|a, b| (a.mtime_ns, &a.path).cmp(&(b.mtime_ns, &b.path)));
            let mut batches: Vec<Vec<PlannedFile>> = Vec::new();
            let mut bytes = 0;
            for file in ready {
                let size = pending_bytes(&file);
                match batches.last_mut() {
                    Some(batch)
                        if batch.len() < limits.max_files.max(1)
                            && bytes + size <= limits.max_bytes =>
                    {
                        bytes += size;
                        batch.push(file);
                    }
                    _ => {
                        bytes = size;
                        batches.push(vec![file]);
                    }
                }
            }
            for batch in &mut batches {
                batch.sort_by(|a, b| a.path.cmp(&b.path));
            }
            batches
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % bound
        };
        for round in 0..200 {
            let count = next(60) as usize;
            // Few distinct ages, so that many files tie; paths in path order or shuffled.
            let mut ready: Vec<PlannedFile> = (0..count)
                .map(|i| f(&format!("d{}/f{i:03}", i % 3), next(9), next(5) as i64))
                .collect();
            if round % 2 == 0 {
                ready.sort_by(|a, b| a.path.cmp(&b.path));
            }
            let limits = BatchLimits {
                max_files: next(7) as usize,
                max_bytes: next(30),
                ..BatchLimits::default()
            };
            assert_eq!(
                cut_batches(ready.clone(), limits),
                model(ready, limits),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_queue_tracks_what_is_left() {
        let ready = vec![f("old", 4, 1), f("mid", 5, 2), f("new", 6, 3)];
        let limits = BatchLimits {
            max_files: 2,
            max_bytes: u64::MAX,
            ..BatchLimits::default()
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
            ..BatchLimits::default()
        };
        assert_eq!(
            names(&cut_batches(vec![f("a", 1, 1), f("b", 1, 2)], limits)).len(),
            2
        );
    }
}
