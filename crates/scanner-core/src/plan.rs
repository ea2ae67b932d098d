//! Cutting the ready files into batches: oldest first, capped by files and bytes.

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
        let size = file.size.saturating_sub(file.start);
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
