//! Replaying committed files on purpose (`gleaner state replay`): after a processor bug, the
//! chosen files are processed again under new generations that say they are replays.
//!
//! A replay is a batch like any other — plan, process, flush, commit — so a crash in the middle
//! is redone by the next start exactly as a fresh batch is, and its output key is written once.
//! What differs: the files come from the state, not from a listing (they are committed, so a
//! scan never plans them again); the plan and the delta carry [`Plan::replay`], so its output
//! lines say `"replay":true` (a redo's too); a file whose replay fails keeps its earlier record;
//! nothing is held back for another attempt. Every other file's record is untouched: the
//! exactly-once record of everything else holds, and each replayed file has one more line,
//! marked, in the replay's output.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use state_store::{FileEntry, Plan, PlannedFile, RelPath, State};

use super::workers::blocking;
use super::{BatchReport, Scanner};
use crate::ScanError;
use crate::output::WriteMode;
use crate::plan::cut_batches;

/// Which committed files to replay: the named paths, and every tracked file that matches all
/// of the filters given (none given: no file beyond the named ones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySelection {
    /// Paths relative to the watch root; each must be a committed file that is still there,
    /// unchanged, or nothing is replayed.
    pub paths: Vec<RelPath>,
    /// Files whose last commit was this generation.
    pub generation: Option<u64>,
    /// Files whose modification time, as committed, is at or after this time.
    pub modified_after: Option<SystemTime>,
    /// Files whose modification time, as committed, is before this time.
    pub modified_before: Option<SystemTime>,
}

impl ReplaySelection {
    /// True when at least one filter (generation or time) is given.
    fn filters(&self) -> bool {
        self.generation.is_some() || self.modified_after.is_some() || self.modified_before.is_some()
    }

    /// Whether a tracked file matches every filter given.
    fn matches(&self, entry: &FileEntry) -> bool {
        let modified =
            UNIX_EPOCH + Duration::from_nanos(u64::try_from(entry.mtime_ns).unwrap_or_default());
        self.filters()
            && self.generation.is_none_or(|g| entry.generation == g)
            && self.modified_after.is_none_or(|t| modified >= t)
            && self.modified_before.is_none_or(|t| modified < t)
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The batch an interrupted earlier batch (or replay) was redone in first, if any.
    pub recovered: Option<BatchReport>,
    /// The replay's batches, committed.
    pub batches: Vec<BatchReport>,
    /// Files the filters selected that cannot be replayed, and why (named paths that cannot
    /// be are an error instead).
    pub skipped: Vec<(RelPath, String)>,
}

impl Scanner {
    /// Processes the committed files of `selection` again, as new generations marked as
    /// replays, after redoing an interrupted batch if there is one.
    ///
    /// Fails with nothing replayed when another writer holds the source (its lease was live
    /// when this one started: [`ScanError::LiveWriter`]; the two would race for the next
    /// generation), when a named path is not a committed file that is still there as it was
    /// committed ([`ScanError::NotReplayable`]), or when nothing is selected.
    pub async fn replay(&mut self, selection: &ReplaySelection) -> Result<ReplayReport, ScanError> {
        if let Some(lease) = &self.live_writer_at_open {
            return Err(ScanError::LiveWriter {
                source_id: self.config.source_id.to_string(),
                lease: lease.to_string(),
            });
        }
        let recovered = self.recover(false).await?;
        let state = std::mem::take(&mut self.state);
        let root = self.config.watch_dir.clone();
        let chosen = selection.clone();
        let joined = blocking("choosing the files to replay", move || {
            let chosen = choose(&root, &state, &chosen);
            Ok((state, chosen))
        })
        .await;
        let (state, chosen) = match joined {
            Ok(both) => both,
            Err(error) => {
                // The state went down with the worker: read it again.
                self.needs_reload = true;
                return Err(error);
            }
        };
        self.state = state;
        let (files, skipped) = chosen?;
        let mut report = ReplayReport {
            recovered,
            skipped,
            ..ReplayReport::default()
        };
        let mut batches = cut_batches(files, self.config.limits);
        batches.reverse();
        while let Some(files) = batches.pop() {
            let result = self.replay_batch(files).await;
            let (batch, left) = self.settle(result)?;
            if !left.is_empty() {
                batches.push(left);
            }
            report.batches.extend(batch);
        }
        Ok(report)
    }

    /// One batch of a replay: planned as a replay, then run as every batch is. Returns what
    /// its results' bound left for another batch.
    async fn replay_batch(
        &mut self,
        files: Vec<PlannedFile>,
    ) -> Result<(Option<BatchReport>, Vec<PlannedFile>), ScanError> {
        let generation = self.state.generation() + 1;
        let plan = Plan {
            replay: true,
            ..self.log.plan(
                generation,
                self.output.key_for(generation, SystemTime::now()),
                files,
            )
        };
        self.log.create_plan(&plan).await?;
        self.own_plan = Some(generation);
        let processing = self.start_processing(plan.files.clone());
        let mut processed = self.process_batch(plan, processing).await?;
        let left = std::mem::take(&mut processed.left);
        Ok((self.finish_batch(processed, WriteMode::Create).await?, left))
    }
}

/// A selected file that is not replayed, and why.
type Skipped = (RelPath, String);

/// The files of `selection`, planned from their committed records, and the filtered ones
/// that cannot be replayed. Blocking: it examines each file.
fn choose(
    root: &std::path::Path,
    state: &State,
    selection: &ReplaySelection,
) -> Result<(Vec<PlannedFile>, Vec<Skipped>), ScanError> {
    let mut refused = Vec::new();
    let mut files = Vec::new();
    for path in &selection.paths {
        match state.get(path).ok_or_else(|| untracked(state)) {
            Ok(entry) => match replayable(root, path, &entry) {
                Ok(file) => files.push(file),
                Err(why) => refused.push((path.clone(), why)),
            },
            Err(why) => refused.push((path.clone(), why)),
        }
    }
    if !refused.is_empty() {
        return Err(ScanError::NotReplayable { files: refused });
    }
    let mut skipped = Vec::new();
    if selection.filters() {
        for (path, entry) in state.entries().filter(|(_, e)| selection.matches(e)) {
            let path = RelPath::new(path.as_bytes());
            if selection.paths.contains(&path) {
                continue;
            }
            match replayable(root, &path, &entry) {
                Ok(file) => files.push(file),
                Err(why) => skipped.push((path, why)),
            }
        }
    }
    if files.is_empty() {
        return Err(ScanError::NothingToReplay {
            reason: if selection.paths.is_empty() && !selection.filters() {
                "nothing selected: name files, or give a generation or a time range".into()
            } else {
                format!(
                    "no committed file that is still there matches ({} matching file(s) cannot \
                     be replayed)",
                    skipped.len()
                )
            },
        });
    }
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Ok((files, skipped))
}

/// Why a path the state does not know cannot be replayed.
fn untracked(state: &State) -> String {
    format!(
        "not a committed file of this source (the state, at generation {}, does not know it)",
        state.generation()
    )
}

/// The plan of one committed file's replay: its bytes as committed, if the file is still the
/// one committed (same inode and birth time, no shorter).
fn replayable(
    root: &std::path::Path,
    path: &RelPath,
    entry: &FileEntry,
) -> Result<PlannedFile, String> {
    let meta =
        std::fs::symlink_metadata(crate::listing::absolute(root, path)).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::NotFound => "no longer in the watched directory".to_string(),
                _ => format!("cannot examine it: {e}"),
            }
        })?;
    if !meta.is_file() {
        return Err("no longer a regular file".into());
    }
    let btime = crate::listing::btime_ns(&meta);
    if (entry.inode != 0 && meta.ino() != entry.inode)
        || (entry.btime_ns != 0 && btime != 0 && btime != entry.btime_ns)
    {
        return Err("replaced by another file since its commit".into());
    }
    if meta.len() < entry.size {
        return Err(format!(
            "shorter than committed ({} bytes, {} committed)",
            meta.len(),
            entry.size
        ));
    }
    Ok(PlannedFile {
        path: path.clone(),
        size: entry.size,
        mtime_ns: entry.mtime_ns,
        inode: entry.inode,
        btime_ns: entry.btime_ns,
        start: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use state_store::{Location, SourceId, StateLog};

    use super::*;
    use crate::processor::Stats;
    use crate::{DynProcessor, ScannerConfig};

    /// Every output line under `output` (the `.ndjson` objects), parsed, by object.
    async fn lines(output: &Location) -> Vec<(String, serde_json::Value)> {
        let objects: Vec<_> = output.store().list(None).try_collect().await.unwrap();
        let mut lines = Vec::new();
        for object in objects
            .into_iter()
            .filter(|o| o.location.as_ref().ends_with(".ndjson"))
        {
            let body = output.store().get(&object.location).await.unwrap();
            let text = String::from_utf8(body.bytes().await.unwrap().to_vec()).unwrap();
            for line in text.lines() {
                lines.push((
                    object.location.to_string(),
                    serde_json::from_str(line).unwrap(),
                ));
            }
        }
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        lines
    }

    #[tokio::test]
    async fn a_replay_interrupted_before_its_commit_is_redone_as_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.log", "b.log"] {
            std::fs::write(dir.path().join(name), b"one two\n").unwrap();
        }
        let (state, output) = (
            Location::parse("memory://").unwrap(),
            Location::parse("memory://").unwrap(),
        );
        let source: SourceId = "t".parse().unwrap();
        let mut config = ScannerConfig::new(dir.path(), source.clone());
        config.readiness.min_age = Duration::ZERO;
        let open = || Scanner::open(config.clone(), DynProcessor::new(Stats), &state, &output);
        let mut scanner = open().await.unwrap();
        assert_eq!(scanner.scan(None).await.unwrap().batches.len(), 1);

        // The replay of a.log got as far as its plan, as if the process died right after.
        let chosen = ReplaySelection {
            paths: vec!["a.log".into()],
            ..ReplaySelection::default()
        };
        let (files, _) = choose(&scanner.config.watch_dir, scanner.state(), &chosen).unwrap();
        let log = StateLog::new(&state, &source);
        let plan = Plan {
            replay: true,
            ..log.plan(2, scanner.output.key_for(2, SystemTime::now()), files)
        };
        log.create_plan(&plan).await.unwrap();
        drop(scanner);

        // The next start redoes it, marked as the first attempt would have marked it.
        let mut scanner = open().await.unwrap();
        let report = scanner.scan(None).await.unwrap();
        assert!(report.batches.iter().all(|b| b.recovered), "{report:?}");
        let lines = lines(&output).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        let replayed: Vec<_> = lines.iter().filter(|(_, l)| l["replay"] == true).collect();
        assert_eq!(replayed.len(), 1, "{lines:?}");
        assert_eq!(replayed[0].1["path"], "a.log");
        assert_eq!(replayed[0].1["generation"], 2);
        assert_eq!(scanner.state().get(&"a.log".into()).unwrap().generation, 2);
        assert_eq!(scanner.state().get(&"b.log".into()).unwrap().generation, 1);
        let loaded = log.load().await.unwrap();
        assert!(loaded.pending.is_none());
    }

    #[tokio::test]
    async fn named_files_that_cannot_be_replayed_stop_the_replay_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), b"one\n").unwrap();
        let (state, output) = (
            Location::parse("memory://").unwrap(),
            Location::parse("memory://").unwrap(),
        );
        let mut config = ScannerConfig::new(dir.path(), "t".parse().unwrap());
        config.readiness.min_age = Duration::ZERO;
        let mut scanner = Scanner::open(config, DynProcessor::new(Stats), &state, &output)
            .await
            .unwrap();
        scanner.scan(None).await.unwrap();
        std::fs::write(dir.path().join("new.log"), b"not committed\n").unwrap();
        let chosen = ReplaySelection {
            paths: vec!["a.log".into(), "new.log".into(), "gone.log".into()],
            ..ReplaySelection::default()
        };
        let error = scanner.replay(&chosen).await.unwrap_err().to_string();
        assert!(error.contains("new.log: not a committed file"), "{error}");
        assert!(error.contains("gone.log: not a committed file"), "{error}");
        assert!(!error.contains("a.log"), "{error}");
        assert_eq!(scanner.state().generation(), 1);
        assert_eq!(lines(&output).await.len(), 1);

        // Replaced since its commit: refused too.
        std::fs::remove_file(dir.path().join("a.log")).unwrap();
        std::fs::write(dir.path().join("a.log"), b"another file\n").unwrap();
        let chosen = ReplaySelection {
            paths: vec!["a.log".into()],
            ..ReplaySelection::default()
        };
        let error = scanner.replay(&chosen).await.unwrap_err().to_string();
        assert!(error.contains("a.log: replaced by another file"), "{error}");
        let nothing = scanner
            .replay(&ReplaySelection::default())
            .await
            .unwrap_err();
        assert!(
            nothing.to_string().contains("nothing selected"),
            "{nothing}"
        );
    }
}
