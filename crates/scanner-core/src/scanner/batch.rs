//! One batch, whose plan is stored: processed → flushed → committed, then what follows a
//! commit (a snapshot when due, cleanup).
//!
//! What must be durable before what:
//!
//! * the **plan** before the output object (the caller creates it), so that a crash redoes
//!   the same files and bytes under the same output key. Processing only reads, so it may
//!   begin before: the next batch's files are read while this one is flushed and committed;
//! * the **output object** before the delta: a committed generation always has its results;
//! * the **delta** (the commit point) before the plan is removed, the state is changed in
//!   memory, and files are cleaned up: a crash between any two of these loses nothing and
//!   repeats nothing;
//! * the delta before the **commit record** ([`crate::manifest`]), and the record before a
//!   snapshot folds the delta: a crash in between leaves the delta, and the next load writes
//!   the record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use state_store::{Delta, FileEntry, Outcome, Plan, PlannedFile, RelPath};

use super::workers::{WorkSettings, blocking, process_files};
use super::{BatchReport, Scanner};
use crate::ScanError;
use crate::cleanup::{self, CleanupReport, CleanupTask};
use crate::diff::OnChange;
use crate::identity::{Identity, fingerprint_file};
use crate::output::{OutputSink, WriteMode};
use crate::process::FileOutcome;
use crate::readiness::mtime;
use crate::telemetry::{
    BatchCommitted, BatchCut, FileFailed, FileRetrying, PhaseTimed, PlanNotRemoved,
    RenamesCommitted,
};

/// One file of a batch as it goes through the phases: what was planned, how processing
/// ended, and the fingerprint of its first bytes (0: not taken).
#[derive(Debug)]
struct Row {
    file: PlannedFile,
    outcome: FileOutcome,
    fingerprint: u64,
}

impl Row {
    /// The state entry that records this file as processed by `generation`.
    fn entry(&self, generation: u64) -> FileEntry {
        let (outcome, offset) = match &self.outcome {
            FileOutcome::Done { .. } => (Outcome::Done, self.file.size),
            // A failed range counts as not processed: an appended file is retried from its
            // start.
            FileOutcome::Failed { reason, .. } => (
                Outcome::Failed {
                    reason: reason.as_str().into(),
                },
                self.file.start,
            ),
        };
        FileEntry {
            size: self.file.size,
            mtime_ns: self.file.mtime_ns,
            inode: self.file.inode,
            btime_ns: self.file.btime_ns,
            offset,
            generation,
            outcome,
            fingerprint: self.fingerprint,
        }
    }
}

/// Every file of the batch has an outcome.
struct Processed {
    generation: u64,
    output_key: String,
    rows: Vec<Row>,
    /// A replay of committed files ([`Plan::replay`]).
    replay: bool,
}

/// A batch whose files are processed, on its way to its commit, and the planned files it
/// leaves to the next batch.
pub(super) struct ProcessedBatch {
    processed: Processed,
    started: Instant,
    /// Planned files not processed: the results of the others reached
    /// [`BatchLimits::max_output_bytes`](crate::BatchLimits::max_output_bytes). They are not
    /// in this batch's output or delta, so they are new to the state: the next batch takes
    /// them.
    pub(super) left: Vec<PlannedFile>,
}

/// The batch's output object is written.
struct Flushed(Processed);

/// The batch's delta is created: the commit point.
struct Committed {
    delta: Delta,
    rows: Vec<Row>,
}

/// A batch's files being read and reduced on the workers, started before its plan is stored
/// (reading has no effect outside the process). Dropped unused, it is abandoned.
pub(super) struct Processing {
    files: Arc<[PlannedFile]>,
    outcomes: tokio::task::JoinHandle<Result<Vec<FileOutcome>, ScanError>>,
    /// Tells the workers to take no further unit.
    stop: Arc<AtomicBool>,
}

impl Drop for Processing {
    fn drop(&mut self) {
        // Stops the workers after their current unit (their reads would otherwise go on, and
        // count as the loop's progress), and stops waiting for them.
        self.stop.store(true, Ordering::Relaxed);
        self.outcomes.abort();
    }
}

impl Scanner {
    /// Processes, flushes and commits one planned batch (its plan is already stored), then
    /// stores a snapshot if one is due and cleans up the committed files.
    pub(super) async fn run_batch(
        &mut self,
        plan: Plan,
        mode: WriteMode,
    ) -> Result<Option<BatchReport>, ScanError> {
        let processing = self.start_processing(plan.files.clone());
        let processed = self.process_batch(plan, processing).await?;
        self.finish_batch(processed, mode).await
    }

    /// Commits every file of `plan` (a redone batch) as failed with `reason`, unread: a
    /// batch that ended the process too many times ([`super::redo`]).
    pub(super) async fn give_up(
        &mut self,
        plan: Plan,
        reason: String,
    ) -> Result<Option<BatchReport>, ScanError> {
        let rows = plan
            .files
            .into_iter()
            .map(|file| Row {
                file,
                outcome: FileOutcome::Failed {
                    kind: crate::process::FailureKind::Abandoned,
                    reason: reason.clone(),
                },
                fingerprint: 0,
            })
            .collect();
        let batch = ProcessedBatch {
            processed: Processed {
                generation: plan.generation,
                output_key: plan.output_key,
                rows,
                replay: plan.replay,
            },
            started: Instant::now(),
            left: Vec::new(),
        };
        self.finish_batch(batch, WriteMode::Replace).await
    }

    /// Starts reading and reducing `files` on the workers.
    pub(super) fn start_processing(&self, files: Vec<PlannedFile>) -> Processing {
        let files: Arc<[PlannedFile]> = files.into();
        let root = self.config.watch_dir.clone();
        let processor = self.processor.clone();
        let settings = WorkSettings {
            workers: self.config.workers,
            limits: self.config.read_limits,
            max_output_bytes: self.config.limits.max_output_bytes,
        };
        let planned = Arc::clone(&files);
        let heartbeat = self.observer.heartbeat().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let outcomes = tokio::spawn(async move {
            process_files(root, planned, &processor, settings, heartbeat, stopping).await
        });
        Processing {
            files,
            outcomes,
            stop,
        }
    }

    /// Waits for the processing of the batch of `plan` (whose plan is stored), and takes out
    /// the files to try again later.
    pub(super) async fn process_batch(
        &mut self,
        plan: Plan,
        processing: Processing,
    ) -> Result<ProcessedBatch, ScanError> {
        let started = Instant::now();
        let planned = plan.files.len();
        let (processed, left) = self.process(plan, processing).await?;
        if !left.is_empty() {
            self.observer.emit(BatchCut {
                generation: processed.generation,
                files: planned - left.len(),
                left: left.len(),
                max_output_bytes: self.config.limits.max_output_bytes,
            });
        }
        let processed = self.hold_back_retries(processed);
        self.timed("process", started);
        Ok(ProcessedBatch {
            processed,
            started,
            left,
        })
    }

    /// Flushes and commits a processed batch, then stores a snapshot if one is due and cleans
    /// up the committed files. `None` when a fresh batch has nothing to commit.
    pub(super) async fn finish_batch(
        &mut self,
        batch: ProcessedBatch,
        mode: WriteMode,
    ) -> Result<Option<BatchReport>, ScanError> {
        let ProcessedBatch {
            processed, started, ..
        } = batch;
        if processed.rows.is_empty() && mode == WriteMode::Create {
            // Every file was held back for another attempt: no output, no delta. The plan goes
            // (nothing was written under its key), and the next batch plans its generation
            // again. A redo instead commits, even empty: its earlier attempt may have written
            // an object under the key, which the commit replaces.
            self.log.remove_plan(processed.generation, 0).await?;
            return Ok(None);
        }
        let flushing = Instant::now();
        let flushed = self.flush(processed, mode).await?;
        self.timed("flush", flushing);
        let committing = Instant::now();
        let committed = self.commit(flushed).await?;
        self.timed("commit", committing);
        // The record after the commit: a reader trusting the records never sees an object
        // that is not committed. Failing, it is written after the log is read again, and no
        // snapshot folds its delta before: what follows the commit goes on meanwhile.
        self.unrecorded
            .extend(state_store::CommittedOutput::of(&committed.delta));
        let recorded = self.record_commits().await;
        if recorded.is_ok() {
            self.snapshot_if_due().await?;
        }
        self.clean_up_committed(&committed.delta).await?;
        let report = self.report(committed, mode, started);
        recorded.map(|()| Some(report))
    }

    /// Records how long a phase took since `started`.
    fn timed(&self, phase: &'static str, started: Instant) {
        self.observer.emit(PhaseTimed {
            phase,
            elapsed: started.elapsed(),
        });
    }

    /// Waits for the outcomes of the plan's files, then fingerprints the processed ones where a
    /// rule needs it (of the very file processed: same inode). Returns the files processed,
    /// and those left for the next batch (the results reached their bound first).
    async fn process(
        &self,
        plan: Plan,
        mut processing: Processing,
    ) -> Result<(Processed, Vec<PlannedFile>), ScanError> {
        if *processing.files != *plan.files {
            return Err(ScanError::Internal(format!(
                "generation {}: the files processed are not the files planned",
                plan.generation
            )));
        }
        let files = Arc::clone(&processing.files);
        let outcomes = (&mut processing.outcomes)
            .await
            .map_err(|source| ScanError::Worker {
                task: "processing files",
                source,
            })??;
        let left = plan.files[outcomes.len()..].to_vec();
        let fingerprinting =
            self.config.identity == Identity::Content || self.config.on_change == OnChange::Append;
        let root = self.config.watch_dir.clone();
        let rows = blocking("fingerprinting", move || {
            Ok(files
                .iter()
                .zip(outcomes)
                .map(|(file, outcome)| {
                    let fingerprint = match outcome {
                        FileOutcome::Done { .. } if fingerprinting => {
                            fingerprint_file(&root, &file.path, file.size, Some(file.inode))
                                .unwrap_or(0)
                        }
                        _ => 0,
                    };
                    Row {
                        file: file.clone(),
                        outcome,
                        fingerprint,
                    }
                })
                .collect())
        })
        .await?;
        let processed = Processed {
            generation: plan.generation,
            output_key: plan.output_key,
            rows,
            replay: plan.replay,
        };
        Ok((processed, left))
    }

    /// Takes out of the batch the files whose reading failed in a way that may pass and that
    /// have attempts left: they are in no output and no delta, and are tried again later.
    /// A replay holds nothing back: it is run once, on request, and its failures are its
    /// answer.
    fn hold_back_retries(&mut self, mut batch: Processed) -> Processed {
        if batch.replay {
            return batch;
        }
        let policy = self.config.retry;
        let now = std::time::SystemTime::now();
        batch.rows.retain(|row| match &row.outcome {
            FileOutcome::Failed { kind, reason } if kind.may_pass() => {
                match self.retries.hold(&row.file, policy, now) {
                    Some((attempt, at)) => {
                        self.observer.emit(FileRetrying {
                            path: &row.file.path,
                            kind: *kind,
                            reason,
                            attempt,
                            at,
                        });
                        false
                    }
                    None => true,
                }
            }
            _ => {
                self.retries.forget(&row.file.path);
                true
            }
        });
        batch
    }

    /// Renders the results as one object and writes it at the plan's key.
    ///
    /// The fence for outputs comes first: never (re)write the output of a generation another
    /// writer has committed. A fresh plan was just created, so no one else can commit this
    /// generation from now on; a redo may race a live writer that still holds the plan, and
    /// this check leaves it only the moments between here and the write.
    async fn flush(&self, batch: Processed, mode: WriteMode) -> Result<Flushed, ScanError> {
        let source_id = self.config.source_id.clone();
        let processor = self.processor.name().to_string();
        // The labels of this process, a redo's too, but the partition folders of the planned
        // key: the object replaces the earlier attempt's as a whole (same key, whatever the
        // labels are now), and its lines agree with its folders.
        let labels = self.config.labels.as_in_key(&batch.output_key);
        let (batch, body) = blocking("rendering the output", move || {
            let body = OutputSink::render(
                source_id.as_str(),
                &processor,
                &labels,
                (batch.generation, batch.replay),
                &batch.output_key,
                batch
                    .rows
                    .iter()
                    .map(|row| (&row.file, &row.outcome, row.fingerprint)),
            );
            Ok((batch, body))
        })
        .await?;
        self.log.ensure_uncommitted(batch.generation).await?;
        self.output.write(&batch.output_key, body, mode).await?;
        Ok(Flushed(batch))
    }

    /// Creates the batch's delta, the commit point; then applies it in memory and removes the
    /// plan it fulfils.
    async fn commit(&mut self, Flushed(batch): Flushed) -> Result<Committed, ScanError> {
        let generation = batch.generation;
        // A replay that failed leaves the file's record as it was: its earlier result stands,
        // and the failure is in this generation's output.
        let upserts = batch
            .rows
            .iter()
            .filter(|row| !batch.replay || matches!(row.outcome, FileOutcome::Done { .. }))
            .map(|row| (row.file.path.clone(), row.entry(generation)))
            .collect();
        let mut delta = self.log.delta(generation, Some(batch.output_key), upserts);
        delta.replay = batch.replay;
        self.log.commit(&delta).await?;
        self.apply(&delta)?;
        // The markers of the redos of this generation, earlier processes' and ours.
        let redos = if self.own_plan == Some(generation) {
            self.redo_marker = None;
            std::mem::take(&mut self.pending_redos)
        } else {
            0
        };
        if let Err(error) = self.log.remove_plan(generation, redos).await {
            // Harmless: the next load sees a plan older than the committed generation and
            // removes it then.
            self.observer.emit(PlanNotRemoved {
                generation,
                error: &error,
            });
        }
        Ok(Committed {
            delta,
            rows: batch.rows,
        })
    }

    /// Records files recognised as renamed processed files under their new paths, in a commit
    /// of its own (no output: nothing was processed).
    pub(super) async fn commit_renames(
        &mut self,
        renames: Vec<(RelPath, FileEntry)>,
    ) -> Result<(), ScanError> {
        let generation = self.state.generation() + 1;
        let delta = self.log.delta(generation, None, renames);
        if let Err(e) = self.log.commit(&delta).await {
            self.needs_reload = true;
            return Err(e.into());
        }
        self.apply(&delta)?;
        self.observer.emit(RenamesCommitted {
            generation,
            renames: &delta.upserts,
        });
        Ok(())
    }

    /// Applies a committed delta to the state in memory.
    pub(super) fn apply(&mut self, delta: &Delta) -> Result<(), ScanError> {
        self.state.apply(delta).map_err(|e| {
            self.needs_reload = true;
            ScanError::Internal(format!("a committed delta does not apply in memory: {e}"))
        })
    }

    /// Deletes or moves the files `delta` committed, as the cleanup rules say.
    async fn clean_up_committed(&mut self, delta: &Delta) -> Result<(), ScanError> {
        let tasks: Vec<CleanupTask> = delta
            .upserts
            .iter()
            .filter_map(|(path, entry)| self.config.cleanup.task(path, entry))
            .collect();
        if !tasks.is_empty() {
            self.clean_up(tasks).await?;
        }
        Ok(())
    }

    /// Deletes or moves committed files on a worker thread. Errors are logged and counted, and
    /// the files stay for the next scan to retry.
    ///
    /// The paths whose files are gone join the files the last walk found gone: the next
    /// snapshot forgets their entries. Otherwise a sidecar under a steady writer would keep
    /// the entry of every file it deleted until the next walk of the whole tree (39,000 entries
    /// a minute at 650 files a second, and the memory of their peak for good). A new file at
    /// such a path is safe: a scan commits only files it listed, and a listed path is no
    /// longer gone.
    pub(super) async fn clean_up(
        &mut self,
        tasks: Vec<CleanupTask>,
    ) -> Result<CleanupReport, ScanError> {
        let root = self.config.watch_dir.clone();
        // Sorted on the worker too: at a million tracked files the list holds thousands of
        // paths. Should the worker die, the list is lost, which only keeps entries until the
        // next walk of the whole tree finds them gone again.
        let mut gone = std::mem::take(&mut self.gone);
        let (report, gone) = blocking("cleanup", move || {
            let (report, removed) = cleanup::clean(&root, &tasks);
            if !removed.is_empty() {
                gone.extend(removed);
                gone.sort_unstable();
                gone.dedup();
            }
            Ok((report, gone))
        })
        .await?;
        self.gone = gone;
        Ok(report)
    }

    /// Tells the outside about a committed batch. Failures are told once they are committed:
    /// an attempt that is redone would otherwise count (and log) them twice.
    fn report(&self, committed: Committed, mode: WriteMode, started: Instant) -> BatchReport {
        let Committed { delta, rows } = committed;
        let generation = delta.generation;
        let (mut failed, mut bytes) = (0, 0);
        for row in &rows {
            match &row.outcome {
                FileOutcome::Done { bytes: read, .. } => bytes += read,
                FileOutcome::Failed { kind, reason } => {
                    failed += 1;
                    self.observer.emit(FileFailed {
                        path: &row.file.path,
                        generation,
                        kind: *kind,
                        reason,
                    });
                }
            }
        }
        let output = self
            .output
            .describe(delta.output_key.as_deref().unwrap_or_default());
        let recovered = mode == WriteMode::Replace;
        let committed_at = UNIX_EPOCH + Duration::from_millis(delta.committed_at_ms);
        let commit_delays = rows
            .iter()
            .map(|row| {
                let ready_at = mtime(row.file.mtime_ns) + self.config.readiness.min_age;
                committed_at
                    .duration_since(ready_at)
                    .map_or(0.0, |delay| delay.as_secs_f64())
            })
            .collect();
        self.observer.emit(BatchCommitted {
            generation,
            files: rows.len(),
            failed,
            bytes,
            output: &output,
            elapsed: started.elapsed(),
            recovered,
            committed_at_ms: delta.committed_at_ms,
            tracked_files: self.state.len(),
            commit_delays,
        });
        BatchReport {
            generation,
            files: rows.len(),
            failed,
            bytes,
            output,
            recovered,
        }
    }
}
