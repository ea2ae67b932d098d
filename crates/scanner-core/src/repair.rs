//! Repairing the end of a state log from the outputs, without processing anything twice.
//!
//! A damaged last delta stops every start (rightly: guessing would lose or duplicate files),
//! and so does a state that lost its last deltas while their outputs exist. Each such batch is
//! still described, file by file, by its committed output object: [`repair`] sets the damaged
//! deltas aside, and commits each of those generations again from its output.
//!
//! A file still in the watched directory is taken for the file of its output line only when it
//! can be shown to be that file ([`FileVerdict`]): the inode the line records, the birth time
//! where both sides know it, and the status change time (ctime) the file had when it was read,
//! which every write, rename, `chmod` and `touch` since would have changed (or, with
//! `--identity content`, the fingerprint of its first KiB, where the line records one). Size
//! and modification time alone prove nothing: `cp -p` over the file, or `rsync -t` beside it,
//! leaves both as they were. Such a file gets back its exact identity; a look-alike is recorded
//! so that the next start processes it as a new file; the same file changed since (same inode
//! and birth time) is recorded as its line says, and `--on-change` decides at the next start,
//! as if the delta had never been lost; a file that is gone is forgotten at the next snapshot.
//!
//! Run it with no writer of the source running: its commits are fenced like any other.

use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;
use serde_json::Value;
use state_store::{FileEntry, Location, Outcome, RelPath, SourceId, StateLog};

use crate::identity::{Identity, fingerprint_file};
use crate::listing::{absolute, btime_ns, ctime_ns, mtime_ns};
use crate::output::{Compression, LineIdentity, OutputLayout, OutputSink, rfc3339};
use crate::{ConfigError, ScanError};

/// One generation committed again from its output object.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuiltGeneration {
    /// The generation.
    pub generation: u64,
    /// URL of the output object it was rebuilt from.
    pub output: String,
    /// Files of the batch, each with what was made of it, in path order.
    pub files: Vec<(RelPath, FileVerdict)>,
}

impl RebuiltGeneration {
    /// How many files got `verdict`'s kind of verdict.
    pub fn count(&self, kind: fn(&FileVerdict) -> bool) -> usize {
        self.files
            .iter()
            .filter(|(_, verdict)| kind(verdict))
            .count()
    }
}

/// What [`repair`] made of one file of an output line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileVerdict {
    /// Shown to be the file of the line, unchanged: committed with its exact identity, never
    /// processed again. `proof` says how it was shown.
    Unchanged {
        /// What agreed.
        proof: &'static str,
    },
    /// The same file (same inode and birth time), changed since it was read: committed as the
    /// line says; the next start handles it as `--on-change` says, as it would have.
    ChangedSince,
    /// Not shown to be the file of the line (another file under its name, or one written over
    /// it): recorded so that the next start processes it as a new file.
    Reprocess {
        /// Why it is not taken for the line's file.
        why: String,
    },
    /// Not in the watched directory: committed as the line says, forgotten at the next
    /// snapshot.
    Gone,
}

impl FileVerdict {
    /// Found unchanged.
    pub fn is_unchanged(&self) -> bool {
        matches!(self, FileVerdict::Unchanged { .. })
    }

    /// Changed since it was read.
    pub fn is_changed(&self) -> bool {
        matches!(self, FileVerdict::ChangedSince)
    }

    /// To be processed again.
    pub fn is_reprocess(&self) -> bool {
        matches!(self, FileVerdict::Reprocess { .. })
    }

    /// Gone.
    pub fn is_gone(&self) -> bool {
        matches!(self, FileVerdict::Gone)
    }
}

impl std::fmt::Display for FileVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileVerdict::Unchanged { proof } => write!(f, "found unchanged ({proof}): committed"),
            FileVerdict::ChangedSince => f.write_str(
                "the same file, changed since it was read: committed as its output line says; \
                 --on-change decides at the next start",
            ),
            FileVerdict::Reprocess { why } => write!(f, "to be processed again: {why}"),
            FileVerdict::Gone => f.write_str(
                "gone from the watched directory: committed as its output line says, forgotten \
                 at the next snapshot",
            ),
        }
    }
}

/// What [`repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The layout of the outputs it read.
    pub layout: OutputLayout,
    /// True when the layout was found from the outputs rather than named.
    pub layout_detected: bool,
    /// Damaged deltas set aside (copied to `<name>.damaged`), newest first.
    pub set_aside: Vec<u64>,
    /// Generations committed again from their outputs, in order.
    pub rebuilt: Vec<RebuiltGeneration>,
    /// The committed generation afterwards.
    pub generation: u64,
    /// An interrupted batch (its plan) left for the next start to redo.
    pub interrupted: Option<u64>,
    /// Committed generations whose missing commit records were written ([`crate::manifest`]):
    /// a process died between a commit and its record and never started again.
    pub recorded: Vec<u64>,
}

/// Sets aside the damaged deltas at the end of the log of `source_id` under `state`, writes the
/// commit records the commits of the log lack, then commits every generation that has an output
/// object under `output` beyond the committed state, from that object (with its record), with the files of `watch_dir` for their identity. `identity` is the
/// `--identity` gleaner runs with: with [`Identity::Content`], a file whose first KiB has the
/// fingerprint its line records counts as unchanged even where its ctime changed.
///
/// The outputs are read in `layout`; `None` finds it from the outputs themselves. A layout
/// named while the outputs are in the other one, or outputs in both layouts beyond the state,
/// are refused ([`ConfigError::OutputLayout`], naming the flag), before anything changes when
/// the outputs allow it to be seen then.
pub async fn repair(
    state: &Location,
    output: &Location,
    source_id: &SourceId,
    layout: Option<OutputLayout>,
    watch_dir: &Path,
    identity: Identity,
) -> Result<RepairReport, ScanError> {
    let sink_in =
        |layout| OutputSink::new(output.clone(), source_id, Compression::None).with_layout(layout);
    // Which layouts hold outputs at all, before anything is changed: a wrong or missing
    // `--output-layout` would otherwise find "nothing to repair" beside the outputs.
    let flat = sink_in(OutputLayout::Flat).any_output().await?;
    let hive = sink_in(OutputLayout::Hive).any_output().await?;
    let holds = |layout| match layout {
        OutputLayout::Flat => flat,
        OutputLayout::Hive => hive,
    };
    if let Some(named) = layout {
        if !holds(named) && holds(named.other()) {
            return Err(wrong_layout(named, source_id).into());
        }
    }
    let log = StateLog::new(state, source_id);
    let set_aside = log.set_aside_damaged_tail().await?;
    let loaded = log.load().await?;
    let mut generation = loaded.state.generation();
    let (layout, detected) = match layout {
        Some(named) => (named, false),
        None if flat && hive => {
            // Both were written (the layout changed once): the one with outputs beyond the
            // state is the one to repair from.
            let beyond_flat = !sink_in(OutputLayout::Flat)
                .outputs_after(generation)
                .await?
                .is_empty();
            let beyond_hive = !sink_in(OutputLayout::Hive)
                .outputs_after(generation)
                .await?
                .is_empty();
            match (beyond_flat, beyond_hive) {
                (true, true) => {
                    return Err(ConfigError::OutputLayout(format!(
                        "source id {source_id:?} has outputs beyond generation {generation} in \
                         both layouts; name the one gleaner writes with --output-layout flat or \
                         --output-layout hive"
                    ))
                    .into());
                }
                (false, true) => (OutputLayout::Hive, true),
                _ => (OutputLayout::Flat, true),
            }
        }
        None if hive => (OutputLayout::Hive, true),
        None => (OutputLayout::Flat, flat),
    };
    let mut report = RepairReport {
        layout,
        layout_detected: detected,
        set_aside,
        ..RepairReport::default()
    };
    report.interrupted = loaded.pending.as_ref().map(|plan| plan.generation);
    let sink = sink_in(layout);
    for commit in sink.manifest().unrecorded(loaded.committed_outputs).await? {
        sink.manifest().write(&commit).await?;
        report.recorded.push(commit.generation);
    }
    for (candidate, key) in sink.outputs_after(generation).await? {
        // Only the generation right after the committed one; an interrupted batch is redone
        // by the next start from its plan, whose output may be partial.
        if candidate != generation + 1 || report.interrupted == Some(candidate) {
            break;
        }
        let object = sink.object_path(&key);
        let bytes = output
            .store()
            .get(&object)
            .await
            .map_err(|source| ScanError::Output {
                object: sink.describe(&key),
                source,
            })?
            .bytes()
            .await
            .map_err(|source| ScanError::Output {
                object: sink.describe(&key),
                source,
            })?;
        let root = watch_dir.to_path_buf();
        let url = sink.describe(&key);
        let gzipped = key.ends_with(".gz");
        let (upserts, files) = tokio::task::spawn_blocking(move || {
            entries_of(&root, &bytes, candidate, gzipped, &url, identity)
        })
        .await
        .map_err(|source| ScanError::Worker {
            task: "reading an output object",
            source,
        })??;
        let delta = log.delta(candidate, Some(key.clone()), upserts);
        log.commit(&delta).await?;
        if let Some(commit) = state_store::CommittedOutput::of(&delta) {
            sink.manifest().write(&commit).await?;
        }
        generation = candidate;
        report.rebuilt.push(RebuiltGeneration {
            generation,
            output: sink.describe(&key),
            files,
        });
    }
    report.generation = generation;
    Ok(report)
}

/// The refusal of a named layout that holds no output of `source_id` while the other does.
fn wrong_layout(named: OutputLayout, source_id: &SourceId) -> ConfigError {
    ConfigError::OutputLayout(format!(
        "the outputs of source id {source_id:?} are laid out as --output-layout {}, not {}: \
         run the repair with --output-layout {} (or without the flag, to find it)",
        named.other().flag_value(),
        named.flag_value(),
        named.other().flag_value(),
    ))
}

/// The state entries of the files of one output object (`url` names it in errors), and what
/// was made of each file under `root`. Blocking.
fn entries_of(
    root: &Path,
    bytes: &[u8],
    generation: u64,
    gzipped: bool,
    url: &str,
    identity: Identity,
) -> Result<RepairedFiles, ScanError> {
    let unreadable = |reason: String| ScanError::Unrepairable {
        object: url.to_string(),
        reason,
    };
    let text = if gzipped {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(bytes), &mut text)
            .map_err(|e| unreadable(format!("it does not decompress ({e})")))?;
        text
    } else {
        String::from_utf8(bytes.to_vec()).map_err(|_| unreadable("it is not UTF-8".into()))?
    };
    let mut files = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line: Value = serde_json::from_str(line)
            .map_err(|e| unreadable(format!("line {} is not JSON ({e})", number + 1)))?;
        let file = entry_of(root, &line, generation, identity)
            .ok_or_else(|| unreadable(format!("line {} is not an output line", number + 1)))?;
        files.push(file);
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files
        .into_iter()
        .map(|(path, entry, verdict)| ((path.clone(), entry), (path, verdict)))
        .unzip())
}

/// The entries to commit, and each file's verdict.
type RepairedFiles = (Vec<(RelPath, FileEntry)>, Vec<(RelPath, FileVerdict)>);

/// The state entry of one output line, and what was made of its file under `root`.
fn entry_of(
    root: &Path,
    line: &Value,
    generation: u64,
    identity: Identity,
) -> Option<(RelPath, FileEntry, FileVerdict)> {
    if line["generation"].as_u64()? != generation {
        return None;
    }
    let path = match line.get("path_bytes") {
        Some(bytes) => RelPath::new(serde_json::from_value::<Vec<u8>>(bytes.clone()).ok()?),
        None => RelPath::from(line["path"].as_str()?),
    };
    let size = line["size"].as_u64()?;
    let start = line.get("start").and_then(Value::as_u64).unwrap_or(0);
    let mtime = line["mtime"].as_str()?;
    let (outcome, offset) = match line.get("error").and_then(Value::as_str) {
        Some(reason) => (
            Outcome::Failed {
                reason: reason.into(),
            },
            start,
        ),
        None => (Outcome::Done, size),
    };
    // Lines of earlier versions have no identity: nothing to show a file is theirs.
    let recorded: LineIdentity = match line.get("identity") {
        Some(identity) => serde_json::from_value(identity.clone()).ok()?,
        None => LineIdentity::default(),
    };
    // The file as committed, as far as the line tells.
    let committed = FileEntry {
        size,
        mtime_ns: humantime::parse_rfc3339(mtime)
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        inode: recorded.inode.unwrap_or(0),
        btime_ns: recorded.btime_ns().unwrap_or(0),
        offset,
        generation,
        outcome,
        fingerprint: recorded.fingerprint().unwrap_or(0),
    };
    let live_path: PathBuf = absolute(root, &path);
    let Some(meta) = std::fs::symlink_metadata(&live_path)
        .ok()
        .filter(|meta| meta.is_file())
    else {
        return Some((path, committed, FileVerdict::Gone));
    };
    use std::os::unix::fs::MetadataExt;
    let live = Live {
        size: meta.len(),
        mtime: rfc3339(mtime_ns(&meta)),
        inode: meta.ino(),
        btime_ns: btime_ns(&meta),
        ctime_ns: ctime_ns(&meta),
    };
    let first_kib = |len| fingerprint_file(root, &path, len, Some(live.inode));
    let verdict = judge(&recorded, size, mtime, &live, identity, first_kib);
    let entry = match &verdict {
        FileVerdict::Unchanged { .. } => FileEntry {
            mtime_ns: mtime_ns(&meta),
            inode: live.inode,
            btime_ns: live.btime_ns,
            fingerprint: first_kib(size).unwrap_or(0),
            ..committed
        },
        FileVerdict::ChangedSince | FileVerdict::Gone => committed,
        // No identity the file in the directory could match: the next start lists it as
        // another file under the name, and processes it.
        FileVerdict::Reprocess { .. } => FileEntry {
            inode: 0,
            btime_ns: 0,
            ..committed
        },
    };
    Some((path, entry, verdict))
}

/// A file found in the watched directory under a line's path.
#[derive(Clone, Debug)]
struct Live {
    size: u64,
    /// As output lines write it (RFC 3339, microseconds).
    mtime: String,
    inode: u64,
    /// 0: not recorded by the file system.
    btime_ns: i64,
    ctime_ns: i64,
}

/// Whether `live` is the file of a line that records `recorded`, `size` and `mtime`.
/// `first_kib(len)` fingerprints the live file's first `len` bytes, asked only where
/// `--identity content` lets a fingerprint count.
fn judge(
    recorded: &LineIdentity,
    size: u64,
    mtime: &str,
    live: &Live,
    identity: Identity,
    first_kib: impl Fn(u64) -> Option<u64>,
) -> FileVerdict {
    let reprocess = |why: String| FileVerdict::Reprocess { why };
    let Some(inode) = recorded.inode else {
        return reprocess(
            "its output line records no identity to compare (written by an earlier version)".into(),
        );
    };
    if live.inode != inode {
        return reprocess(format!(
            "another file has its name (inode {}, the line's is {inode})",
            live.inode
        ));
    }
    let born = recorded.btime_ns().filter(|_| live.btime_ns != 0);
    if born.is_some_and(|btime| btime != live.btime_ns) {
        return reprocess(format!(
            "another file has its name (same inode {inode}, born {}, the line's at {})",
            rfc3339(live.btime_ns),
            recorded.btime.as_deref().unwrap_or_default()
        ));
    }
    let same_birth = born.is_some();
    if live.size != size || live.mtime != mtime {
        if same_birth {
            return FileVerdict::ChangedSince;
        }
        return reprocess(format!(
            "changed since it was read (size {}, modified {}), and no birth time tells whether \
             it is still the same file",
            live.size, live.mtime
        ));
    }
    let by_content = || {
        identity == Identity::Content
            && recorded
                .fingerprint()
                .is_some_and(|recorded| first_kib(size) == Some(recorded))
    };
    match recorded.ctime_ns() {
        Some(ctime) if ctime == live.ctime_ns => FileVerdict::Unchanged {
            proof: if same_birth {
                "same inode, birth time and status change time"
            } else {
                "same inode and status change time"
            },
        },
        _ if by_content() => FileVerdict::Unchanged {
            proof: "same inode, size and first KiB (--identity content)",
        },
        Some(ctime) => reprocess(format!(
            "changed since it was read: written over, or touched, at {} (its status change \
             time; {} when it was read)",
            rfc3339(live.ctime_ns),
            rfc3339(ctime)
        )),
        // A line of a file that failed before it was read: no ctime; the birth time alone.
        None if same_birth => FileVerdict::Unchanged {
            proof: "same inode and birth time",
        },
        None => reprocess(
            "no status change or birth time recorded to show it is still the same file".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ_AT: i64 = 1_796_000_000_123_456_789;
    const BORN_AT: i64 = 1_795_000_000_000_000_001;

    /// A line's identity as this version writes it.
    fn recorded(btime_ns: i64, ctime_ns: Option<i64>, fingerprint: u64) -> LineIdentity {
        let file = state_store::PlannedFile {
            path: "a.log".into(),
            size: 10,
            mtime_ns: 0,
            inode: 7,
            btime_ns,
            start: 0,
        };
        LineIdentity::of(&file, ctime_ns, fingerprint)
    }

    /// The file of that line, untouched since it was read.
    fn live() -> Live {
        Live {
            size: 10,
            mtime: "2026-11-24T10:00:00.000000Z".into(),
            inode: 7,
            btime_ns: BORN_AT,
            ctime_ns: READ_AT,
        }
    }

    fn verdict(recorded: &LineIdentity, live: &Live, identity: Identity) -> FileVerdict {
        judge(
            recorded,
            10,
            "2026-11-24T10:00:00.000000Z",
            live,
            identity,
            |_| Some(0xf00d),
        )
    }

    #[test]
    fn a_file_is_unchanged_only_when_it_can_be_shown_to_be_the_file_read() {
        let line = recorded(BORN_AT, Some(READ_AT), 0);
        let path = Identity::Path;
        assert!(verdict(&line, &live(), path).is_unchanged());

        // `rsync -t`: renamed over the name, another inode.
        let renamed = Live { inode: 8, ..live() };
        assert!(
            matches!(verdict(&line, &renamed, path), FileVerdict::Reprocess { why } if why.contains("another file has its name"))
        );
        // The inode number handed to the next file: another birth time.
        let reborn = Live {
            btime_ns: BORN_AT + 5,
            ..live()
        };
        assert!(verdict(&line, &reborn, path).is_reprocess());
        // `cp -p` over it: the same inode and birth time, a later ctime.
        let written_over = Live {
            ctime_ns: READ_AT + 1,
            ..live()
        };
        assert!(
            matches!(verdict(&line, &written_over, path), FileVerdict::Reprocess { why } if why.contains("changed since it was read"))
        );
        // Where the file system records no birth time, the ctime still tells.
        let no_btime = recorded(0, Some(READ_AT), 0);
        assert_eq!(
            verdict(&no_btime, &live(), path),
            FileVerdict::Unchanged {
                proof: "same inode and status change time"
            }
        );
        assert!(verdict(&no_btime, &written_over, path).is_reprocess());
    }

    #[test]
    fn a_fingerprint_counts_only_with_identity_content_and_where_recorded() {
        let touched = Live {
            ctime_ns: READ_AT + 1,
            ..live()
        };
        let with_fingerprint = recorded(BORN_AT, Some(READ_AT), 0xf00d);
        assert_eq!(
            verdict(&with_fingerprint, &touched, Identity::Content),
            FileVerdict::Unchanged {
                proof: "same inode, size and first KiB (--identity content)"
            }
        );
        assert!(verdict(&with_fingerprint, &touched, Identity::Path).is_reprocess());
        let other_content = recorded(BORN_AT, Some(READ_AT), 0xbeef);
        assert!(verdict(&other_content, &touched, Identity::Content).is_reprocess());
        let none = recorded(BORN_AT, Some(READ_AT), 0);
        assert!(verdict(&none, &touched, Identity::Content).is_reprocess());
        // Never across inodes: a copy elsewhere is another file.
        let copy = Live { inode: 9, ..live() };
        assert!(verdict(&with_fingerprint, &copy, Identity::Content).is_reprocess());
    }

    #[test]
    fn changed_files_lines_without_ctime_and_old_lines() {
        // The same file (inode and birth time), grown since: --on-change decides.
        let grown = Live {
            size: 20,
            ctime_ns: READ_AT + 9,
            ..live()
        };
        let line = recorded(BORN_AT, Some(READ_AT), 0);
        assert_eq!(
            verdict(&line, &grown, Identity::Path),
            FileVerdict::ChangedSince
        );
        // Without a birth time, a changed file cannot be told from a new one: processed.
        let no_btime = recorded(0, Some(READ_AT), 0);
        assert!(verdict(&no_btime, &grown, Identity::Path).is_reprocess());
        // A failed line (the file was never read: no ctime): inode and birth time.
        let failed = recorded(BORN_AT, None, 0);
        assert_eq!(
            verdict(&failed, &live(), Identity::Path),
            FileVerdict::Unchanged {
                proof: "same inode and birth time"
            }
        );
        assert!(verdict(&recorded(0, None, 0), &live(), Identity::Path).is_reprocess());
        // A line written before identities were recorded proves nothing.
        assert!(
            matches!(verdict(&LineIdentity::default(), &live(), Identity::Path), FileVerdict::Reprocess { why } if why.contains("earlier version"))
        );
    }
}
