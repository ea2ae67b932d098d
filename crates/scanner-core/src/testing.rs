//! Helpers for this crate's unit tests.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use state_store::{FileEntry, Outcome, PlannedFile};

/// The state entry that commits the file at `path`, as it is now, in `generation`.
pub(crate) fn committed_entry(path: &Path, generation: u64, outcome: Outcome) -> FileEntry {
    let meta = std::fs::metadata(path).unwrap();
    FileEntry {
        size: meta.len(),
        mtime_ns: crate::listing::mtime_ns(&meta),
        inode: meta.ino(),
        btime_ns: crate::listing::btime_ns(&meta),
        offset: meta.len(),
        generation,
        outcome,
        fingerprint: 0,
    }
}

/// The plan of the whole file `name` below `root`, as it is now.
pub(crate) fn planned_file(root: &Path, name: &str) -> PlannedFile {
    let meta = std::fs::metadata(root.join(name)).unwrap();
    PlannedFile {
        path: name.into(),
        size: meta.len(),
        mtime_ns: crate::listing::mtime_ns(&meta),
        inode: meta.ino(),
        btime_ns: crate::listing::btime_ns(&meta),
        start: 0,
    }
}
