//! Repairing the end of a state log from the outputs, without processing anything twice.
//!
//! A damaged last delta stops every start (rightly: guessing would lose or duplicate files),
//! and so does a state that lost its last deltas while their outputs exist. Each such batch is
//! still described, file by file, by its committed output object: [`repair`] sets the damaged
//! deltas aside, and commits each of those generations again from its output. A file still in
//! the watched directory, unchanged since its batch (same size and modification time), gets
//! back its exact identity (inode, birth time, fingerprint) from the file itself; a file that
//! changed or is gone is recorded as its output line says, so a changed one is processed again
//! as a new file, and a gone one is forgotten at the next snapshot.
//!
//! Run it with no writer of the source running: its commits are fenced like any other.

use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;
use serde_json::Value;
use state_store::{FileEntry, Location, Outcome, RelPath, SourceId, StateLog};

use crate::identity::fingerprint_file;
use crate::listing::{absolute, btime_ns, mtime_ns};
use crate::output::{Compression, OutputLayout, OutputSink, rfc3339};
use crate::{ConfigError, ScanError};

/// One generation committed again from its output object.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RebuiltGeneration {
    /// The generation.
    pub generation: u64,
    /// URL of the output object it was rebuilt from.
    pub output: String,
    /// Files of the batch.
    pub files: usize,
    /// Of those, files found unchanged in the watched directory (their identity is exact).
    pub matched: usize,
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
}

/// Sets aside the damaged deltas at the end of the log of `source_id` under `state`, then
/// commits every generation that has an output object under `output` beyond the committed
/// state, from that object, with the files of `watch_dir` for their identity.
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
        let (upserts, matched) = tokio::task::spawn_blocking(move || {
            entries_of(&root, &bytes, candidate, gzipped, &url)
        })
        .await
        .map_err(|source| ScanError::Worker {
            task: "reading an output object",
            source,
        })??;
        let files = upserts.len();
        let delta = log.delta(candidate, Some(key.clone()), upserts);
        log.commit(&delta).await?;
        generation = candidate;
        report.rebuilt.push(RebuiltGeneration {
            generation,
            output: sink.describe(&key),
            files,
            matched,
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

/// The state entries of the files of one output object (`url` names it in errors), and how
/// many of them were matched to an unchanged file under `root`. Blocking.
fn entries_of(
    root: &Path,
    bytes: &[u8],
    generation: u64,
    gzipped: bool,
    url: &str,
) -> Result<(Vec<(RelPath, FileEntry)>, usize), ScanError> {
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
    let mut upserts = Vec::new();
    let mut matched = 0;
    for (number, line) in text.lines().enumerate() {
        let line: Value = serde_json::from_str(line)
            .map_err(|e| unreadable(format!("line {} is not JSON ({e})", number + 1)))?;
        let (path, entry, exact) = entry_of(root, &line, generation)
            .ok_or_else(|| unreadable(format!("line {} is not an output line", number + 1)))?;
        matched += usize::from(exact);
        upserts.push((path, entry));
    }
    upserts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((upserts, matched))
}

/// The state entry of one output line, and whether the file was found unchanged under `root`.
fn entry_of(root: &Path, line: &Value, generation: u64) -> Option<(RelPath, FileEntry, bool)> {
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
    let live: PathBuf = absolute(root, &path);
    let unchanged = std::fs::symlink_metadata(&live)
        .ok()
        .filter(|meta| meta.is_file() && meta.len() == size && rfc3339(mtime_ns(meta)) == mtime);
    let entry = match &unchanged {
        Some(meta) => {
            use std::os::unix::fs::MetadataExt;
            FileEntry {
                size,
                mtime_ns: mtime_ns(meta),
                inode: meta.ino(),
                btime_ns: btime_ns(meta),
                offset,
                generation,
                outcome,
                fingerprint: fingerprint_file(root, &path, size, Some(meta.ino())).unwrap_or(0),
            }
        }
        None => FileEntry {
            size,
            mtime_ns: humantime::parse_rfc3339(mtime)
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            inode: 0,
            btime_ns: 0,
            offset,
            generation,
            outcome,
            fingerprint: 0,
        },
    };
    Some((path, entry, unchanged.is_some()))
}
