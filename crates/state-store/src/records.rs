//! The objects of the state log: plans (intent) and deltas (commits).

use bincode::{Decode, Encode};

use crate::model::{FileEntry, Origin, RelPath};

/// The commit of one generation: what changed in the state.
///
/// Created with create-if-absent semantics at `<source>/<generation>.delta`; that create is the
/// commit point of the batch and the fence against a second writer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Delta {
    /// The generation this delta commits.
    pub generation: u64,
    /// Random id of the process that wrote it, to tell writers apart in diagnostics.
    pub writer_id: u64,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub committed_at_ms: u64,
    /// Key of the batch's output object, relative to the output location.
    pub output_key: Option<String>,
    /// Entries added or replaced, ordered by path.
    pub upserts: Vec<(RelPath, FileEntry)>,
    /// The watch root that wrote it (none in objects of format versions before 3, and in
    /// deltas committed again by a repair).
    pub origin: Option<Origin>,
    /// A deliberate replay of committed files (`gleaner state replay`): its files were
    /// processed before, and its output lines say `"replay":true` (false in objects of format
    /// versions before 4).
    pub replay: bool,
}

/// What a reader of the outputs needs to know of one committed generation that has an output
/// object: which object, and when it was committed. Taken from its
/// [`Delta`], so that it is the same however often it is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOutput {
    /// The generation.
    pub generation: u64,
    /// Key of its output object, relative to the output location.
    pub output_key: String,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub committed_at_ms: u64,
}

impl CommittedOutput {
    /// The output `delta` commits, if it has one (a commit of renames has none).
    pub fn of(delta: &Delta) -> Option<Self> {
        Some(Self {
            generation: delta.generation,
            output_key: delta.output_key.clone()?,
            committed_at_ms: delta.committed_at_ms,
        })
    }
}

/// The intent to process one batch as generation `generation`, recorded before processing.
///
/// A plan that is not followed by its delta belongs to a batch that was interrupted (crash,
/// kill, lost storage). The next start redoes exactly the planned files and writes the same
/// output key, so the interrupted batch's output is replaced rather than duplicated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Plan {
    /// The generation this batch will commit as.
    pub generation: u64,
    /// Random id of the process that wrote it.
    pub writer_id: u64,
    /// When it was planned, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Key of the output object, relative to the output location.
    pub output_key: String,
    /// The files of the batch, ordered by path.
    pub files: Vec<PlannedFile>,
    /// A deliberate replay of committed files: a redo marks its output lines and its delta as
    /// the first attempt would have (false in objects of format versions before 4).
    pub replay: bool,
}

/// One file of a [`Plan`]: which bytes of which file the batch processes.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PlannedFile {
    /// Path relative to the watch root.
    pub path: RelPath,
    /// Size when listed: processing reads up to here and no further.
    pub size: u64,
    /// Modification time when listed, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode when listed (0 where the platform has none).
    pub inode: u64,
    /// Birth time when listed, nanoseconds since the Unix epoch (0 where unknown).
    pub btime_ns: i64,
    /// First byte to process (non-zero when only an appended part is processed).
    pub start: u64,
}

/// The head of a snapshot's payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub(crate) struct SnapshotHeader {
    /// The generation whose state this is.
    pub(crate) generation: u64,
    /// Random id of the process that wrote it.
    pub(crate) writer_id: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub(crate) created_at_ms: u64,
    /// When its generation was committed, in milliseconds since the Unix epoch.
    pub(crate) last_commit_ms: Option<u64>,
    /// How many entries follow.
    pub(crate) entries: u64,
    /// The watch root of the last generation (format version 3 on).
    pub(crate) origin: Option<Origin>,
}

/// The current time in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
