//! The batch loop: list → diff → ready? → plan → process → flush → commit, and its triggers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use metrics::{counter, gauge, histogram};
use state_store::{
    Delta, FileEntry, Location, Outcome, Plan, PlannedFile, RelPath, State, StateError, StateLog,
    now_ms,
};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::cleanup::{self, CleanupReport, CleanupRules, CleanupTask};
use crate::diff::{Change, OnChange, diff};
use crate::identity::{Identity, fingerprint_file};
use crate::listing::{self, ListingProblem};
use crate::output::{Compression, OutputSink, WriteMode};
use crate::plan::{BatchLimits, cut_batches};
use crate::process::{FileOutcome, ReadLimits, UnitOutcome, combine, plan_units, process_unit};
use crate::processor::DynProcessor;
use crate::readiness::{NotReady, Readiness, mtime};
use crate::{ScanError, telemetry as m};

/// Everything a [`Scanner`] needs to know besides where state and outputs go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScannerConfig {
    /// The directory the emitter writes; walked recursively.
    pub watch_dir: PathBuf,
    /// Names this instance's state and outputs.
    pub source_id: String,
    /// When a file counts as complete.
    pub readiness: Readiness,
    /// Caps on one batch.
    pub limits: BatchLimits,
    /// Files processed at once (at least 1).
    pub workers: usize,
    /// Compression of output objects.
    pub compression: Compression,
    /// Fold the log into a snapshot once this many generations were committed since the last
    /// one (at least 1).
    pub snapshot_every: u64,
    /// Start even though the state is empty (or behind) while the output location already
    /// holds batches of this source id: everything is processed again.
    pub allow_rescan: bool,
    /// Limits on reading files (the decoded size of compressed ones).
    pub read_limits: ReadLimits,
    /// What happens to files once their results are committed.
    pub cleanup: CleanupRules,
    /// What to do with processed files that changed since.
    pub on_change: OnChange,
    /// How a file is recognised across listings.
    pub identity: Identity,
    /// Warn when the watched volume has less free space than this, in bytes.
    pub min_free: Option<u64>,
}

impl ScannerConfig {
    /// A configuration with defaults: 5 s minimum age, 10 000 files or 4 GiB per batch, one
    /// worker per core, uncompressed outputs, a snapshot every 64 generations, no rescan.
    pub fn new(watch_dir: impl Into<PathBuf>, source_id: impl Into<String>) -> Self {
        Self {
            watch_dir: watch_dir.into(),
            source_id: source_id.into(),
            readiness: Readiness::default(),
            limits: BatchLimits::default(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            compression: Compression::None,
            snapshot_every: 64,
            allow_rescan: false,
            read_limits: ReadLimits::default(),
            cleanup: CleanupRules::default(),
            on_change: OnChange::default(),
            identity: Identity::default(),
            min_free: None,
        }
    }
}

/// What a running scanner reports about itself, for health checks and summaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanStatus {
    /// State is loaded and the last scan, if any, succeeded.
    pub ready: bool,
    /// The last committed generation.
    pub generation: u64,
    /// Files the state tracks.
    pub tracked_files: usize,
    /// Scans completed since the scanner was opened.
    pub scans: u64,
    /// Batches committed since the scanner was opened.
    pub batches: u64,
    /// Files committed as done since the scanner was opened.
    pub files_done: u64,
    /// Files committed as failed since the scanner was opened.
    pub files_failed: u64,
    /// Input bytes processed since the scanner was opened.
    pub bytes: u64,
    /// Ready files not yet committed.
    pub pending_files: u64,
    /// The error of the last scan, if it failed.
    pub last_error: Option<String>,
}

/// A summary of one committed batch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// The committed generation.
    pub generation: u64,
    /// Files in the batch.
    pub files: usize,
    /// Files of the batch that failed.
    pub failed: usize,
    /// Input bytes read.
    pub bytes: u64,
    /// URL of the output object.
    pub output: String,
    /// True when this batch redid an interrupted one.
    pub recovered: bool,
}

/// A summary of one scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanReport {
    /// Regular files listed.
    pub listed: usize,
    /// Files the state does not know.
    pub new_files: usize,
    /// New files that were ready.
    pub ready: usize,
    /// New files not ready because of their name.
    pub in_progress: usize,
    /// New files not ready because they were modified too recently.
    pub too_young: usize,
    /// New files not ready because their ready marker does not exist yet.
    pub no_marker: usize,
    /// Appended files without a complete new line yet (`--on-change=append`).
    pub partial_line: usize,
    /// New files not ready because they were not yet seen unchanged across two listings.
    pub unstable: usize,
    /// Files that `--include` / `--exclude` leave out, and ready markers: never processed.
    pub excluded: usize,
    /// Tracked files that changed since processing (left alone).
    pub changed: usize,
    /// Tracked files no longer present.
    pub gone: usize,
    /// What the listing could not examine.
    pub listing_problems: Vec<ListingProblem>,
    /// Committed batches, in order.
    pub batches: Vec<BatchReport>,
    /// When the youngest not-yet-ready file becomes old enough, if any.
    pub next_ready_at: Option<SystemTime>,
    /// True if a shutdown request stopped the scan before all ready files were committed.
    pub interrupted: bool,
}

/// Creates a linked pair: a [`ShutdownTrigger`] that requests shutdown, and the [`Shutdown`]
/// signal a scanner watches.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

/// Requests a shutdown (on SIGTERM, say).
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    /// Asks the scanner to finish its current batch, drain, and return.
    pub fn request(&self) {
        self.0.send_replace(true);
    }
}

/// The scanner's view of a shutdown request. Dropping the trigger never requests shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested (never, if the trigger was dropped unused).
    pub async fn requested(&mut self) {
        loop {
            if *self.0.borrow_and_update() {
                return;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The batch loop over one watched directory.
///
/// Each batch goes through the steps of the design, in this order, and each step only after
/// the previous one succeeded:
///
/// 1. **plan**: create `<generation>.plan` (if absent) listing exactly which bytes of which files
///    the batch covers;
/// 2. **process** the files on a bounded pool of worker threads;
/// 3. **flush** the results as one object at a key that depends only on the generation;
/// 4. **commit**: create `<generation>.delta` (if absent): the commit point;
/// 5. remove the plan.
///
/// A crash anywhere before 4 leaves a plan without a delta; the next start redoes that plan
/// (same files, same byte ranges, same key), replacing a partial or complete earlier output, so
/// every file ends up in exactly one output object. A crash after 4 loses nothing.
pub struct Scanner {
    config: ScannerConfig,
    processor: DynProcessor,
    log: StateLog,
    output: OutputSink,
    state: State,
    /// The plan of an interrupted batch, redone before anything else.
    pending: Option<Plan>,
    /// Set after a failed batch: what reached storage is unknown until the log is read again.
    needs_reload: bool,
    /// Generation of the newest snapshot (0: none yet).
    snapshot_generation: u64,
    /// No snapshot before this generation (pushed back after a failed attempt).
    next_snapshot_at: u64,
    /// Tracked paths the last listing did not find: dropped from the state at the next snapshot.
    gone: Vec<RelPath>,
    /// Files waiting to be stable, as the last listing saw them.
    sightings: Sightings,
    status: watch::Sender<ScanStatus>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("config", &self.config)
            .field("generation", &self.state.generation())
            .finish_non_exhaustive()
    }
}

impl Scanner {
    /// Checks the configuration and both locations, then loads the committed state.
    ///
    /// Fails if the watch directory is unusable, if state or output would live inside it (their
    /// objects would be collected as input), if either location is not writable, or if the state
    /// cannot be read and verified.
    pub async fn open(
        config: ScannerConfig,
        processor: DynProcessor,
        state: &Location,
        output: &Location,
    ) -> Result<Self, ScanError> {
        state_store::validate_source_id(&config.source_id)?;
        let root = config.watch_dir.clone();
        let watch_dir = blocking(move || {
            listing::check_root(&root)?;
            std::fs::canonicalize(&root).map_err(|e| ScanError::WatchDir {
                path: root.clone(),
                reason: e.to_string(),
            })
        })
        .await?;
        for (flag, location) in [("state", state), ("output", output)] {
            // Objects go below `<location>/<source-id>/`: that directory must stay outside.
            let objects = location.child(&config.source_id);
            if objects
                .local_dir()
                .is_some_and(|dir| dir.starts_with(&watch_dir))
            {
                return Err(ScanError::Config(format!(
                    "the {flag} location {objects} is inside the watched directory {}; \
                     its objects would be collected as input",
                    watch_dir.display()
                )));
            }
        }
        if config.on_change == OnChange::Append && !config.cleanup.is_noop() {
            return Err(ScanError::Config(
                "--on-change append keeps files in place: it cannot be combined with --after \
                 delete|move or --quarantine (a file still being appended to would be removed, \
                 and the lines written after that lost)"
                    .into(),
            ));
        }
        let destinations: Vec<PathBuf> = config
            .cleanup
            .destinations()
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        let watched = watch_dir.clone();
        blocking(move || {
            for dir in destinations {
                let unusable = |reason: String| {
                    ScanError::Config(format!("cleanup directory {}: {reason}", dir.display()))
                };
                std::fs::create_dir_all(&dir).map_err(|e| unusable(e.to_string()))?;
                let absolute = std::fs::canonicalize(&dir).map_err(|e| unusable(e.to_string()))?;
                // Moved files must not be listed again (a hidden directory is never listed).
                let hidden = absolute.strip_prefix(&watched).is_ok_and(|rel| {
                    rel.components()
                        .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."))
                });
                if absolute.starts_with(&watched) && !hidden {
                    return Err(unusable(format!(
                        "is inside the watched directory {}; moved files would be collected again",
                        watched.display()
                    )));
                }
            }
            Ok(())
        })
        .await?;
        let log = StateLog::new(state, &config.source_id)?;
        let output = OutputSink::new(output.clone(), &config.source_id, config.compression);

        let (status, _) = watch::channel(ScanStatus::default());
        let mut scanner = Scanner {
            config: ScannerConfig {
                watch_dir,
                ..config
            },
            processor,
            log,
            output,
            state: State::new(),
            pending: None,
            needs_reload: true,
            snapshot_generation: 0,
            next_snapshot_at: 0,
            gone: Vec::new(),
            sightings: Sightings::new(),
            status,
            wake: Arc::new(Notify::new()),
        };
        // Read and verify the state before writing anything: damaged state must stop the process
        // with nothing written, not even a probe.
        let loaded = scanner.reload().await?;
        scanner.refuse_silent_rescan().await?;
        // A process killed during a local write leaves its temporary file behind.
        let temporaries = scanner.log.remove_orphaned_temporaries()
            + scanner.output.remove_orphaned_temporaries();
        if temporaries > 0 {
            info!(
                temporaries,
                "removed temporary files left by an interrupted write"
            );
        }
        scanner.log.check_writable().await?;
        scanner
            .output
            .check_writable(scanner.log.writer_id())
            .await?;
        loaded.log(scanner.log.location());
        Ok(scanner)
    }

    /// The committed state as this scanner knows it.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configuration in use (with the watch directory made absolute).
    pub fn config(&self) -> &ScannerConfig {
        &self.config
    }

    /// The location of this source's state log.
    pub fn state_location(&self) -> &Location {
        self.log.location()
    }

    /// A live view of the scanner's status.
    pub fn status(&self) -> watch::Receiver<ScanStatus> {
        self.status.subscribe()
    }

    /// A handle that makes a running [`Scanner::run`] scan now instead of at the next tick
    /// (file-system events, a completed write known to the caller).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Scans until shutdown is requested, then drains: one last scan of what is ready, all of it
    /// committed, before returning.
    ///
    /// Scans start every `interval` (start to start), earlier when woken or when a file that was
    /// too young becomes old enough. A failed scan is retried with exponential backoff (1 s
    /// doubling, at most the interval or 5 minutes); only fatal errors (lost writer fence,
    /// damaged state) end the loop with an error.
    pub async fn run(
        &mut self,
        interval: Duration,
        mut shutdown: Shutdown,
    ) -> Result<(), ScanError> {
        let max_backoff = interval
            .min(Duration::from_secs(300))
            .max(Duration::from_secs(1));
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let wait = match self.scan(Some(&shutdown)).await {
                Ok(report) => {
                    backoff = Duration::from_secs(1);
                    let mut wait = interval.saturating_sub(started.elapsed());
                    if let Some(at) = report.next_ready_at {
                        let until = at
                            .duration_since(SystemTime::now())
                            .unwrap_or(Duration::ZERO);
                        wait = wait.min(until + Duration::from_millis(10));
                    }
                    wait
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                    warn!(error = %e, retry_in = ?wait, "scan failed; will retry");
                    wait
                }
            };
            if shutdown.is_requested() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => debug!("woken for an early scan"),
                () = shutdown.requested() => {}
            }
            if shutdown.is_requested() {
                break;
            }
        }
        info!("shutdown requested: draining with a last scan");
        self.scan(None).await?;
        info!(
            generation = self.state.generation(),
            "drained; every ready file is committed"
        );
        Ok(())
    }

    /// Runs one scan: redoes an interrupted batch if there is one, lists the watch directory,
    /// and commits every ready new file in as many batches as the limits require.
    ///
    /// With `shutdown` given, a requested shutdown stops the scan between batches (never inside
    /// one) and the report says `interrupted`.
    pub async fn scan(&mut self, shutdown: Option<&Shutdown>) -> Result<ScanReport, ScanError> {
        let started = Instant::now();
        let result = self.scan_inner(shutdown).await;
        histogram!(m::SCAN_DURATION).record(started.elapsed().as_secs_f64());
        match &result {
            Ok(report) => {
                counter!(m::SCANS_TOTAL, "result" => "ok").increment(1);
                gauge!(m::READY).set(1.0);
                self.status.send_modify(|s| {
                    s.ready = true;
                    s.scans += 1;
                    s.last_error = None;
                });
                let files: usize = report.batches.iter().map(|b| b.files).sum();
                if files > 0 || !report.listing_problems.is_empty() {
                    info!(
                        listed = report.listed,
                        committed_files = files,
                        batches = report.batches.len(),
                        not_ready = report.in_progress + report.too_young,
                        changed = report.changed,
                        gone = report.gone,
                        listing_problems = report.listing_problems.len(),
                        elapsed = ?started.elapsed(),
                        "scan complete"
                    );
                } else {
                    debug!(listed = report.listed, elapsed = ?started.elapsed(), "scan complete: nothing new");
                }
            }
            Err(e) => {
                counter!(m::SCANS_TOTAL, "result" => "error").increment(1);
                counter!(m::ERRORS_TOTAL, "stage" => error_stage(e)).increment(1);
                gauge!(m::READY).set(0.0);
                error!(error = %e, "scan failed");
                let message = e.to_string();
                self.status.send_modify(|s| {
                    s.ready = false;
                    s.last_error = Some(message);
                });
            }
        }
        result
    }

    async fn scan_inner(&mut self, shutdown: Option<&Shutdown>) -> Result<ScanReport, ScanError> {
        if self.needs_reload {
            self.reload().await?.log(self.log.location());
        }
        let stop_requested = || shutdown.is_some_and(Shutdown::is_requested);
        // Only this scan's listing may say which files are gone.
        self.gone.clear();

        let mut recovered = None;
        if let Some(plan) = self.pending.take() {
            warn!(
                generation = plan.generation,
                files = plan.files.len(),
                "redoing a batch that was interrupted before its commit"
            );
            let result = self.run_batch(plan, WriteMode::Replace).await;
            recovered = Some(self.settle(result)?);
        }

        // Listing, diff, readiness and batching walk the directory and merge it with the whole
        // state: blocking IO and CPU work, done on a worker thread. The state travels there and
        // back by value.
        let config = self.config.clone();
        let state = std::mem::take(&mut self.state);
        let mut sightings = std::mem::take(&mut self.sightings);
        let joined = tokio::task::spawn_blocking(move || {
            let survey = survey(&config, &state, &mut sightings);
            (state, sightings, survey)
        })
        .await;
        let survey = match joined {
            Ok((state, sightings, survey)) => {
                self.state = state;
                self.sightings = sightings;
                survey?
            }
            Err(e) => {
                self.needs_reload = true;
                return Err(ScanError::Worker(e.to_string()));
            }
        };
        for problem in &survey.report.listing_problems {
            warn!(path = %problem.path, reason = %problem.reason, "cannot examine part of the watched directory");
        }
        self.gone = survey.gone;
        if !survey.cleanup.is_empty() {
            info!(
                files = survey.cleanup.len(),
                "cleaning up committed files left by an earlier run"
            );
            self.clean_up(survey.cleanup).await?;
        }
        if !survey.renames.is_empty() {
            self.commit_renames(survey.renames).await?;
        }
        self.check_free_space(survey.free_bytes);
        let mut report = survey.report;
        report.batches.extend(recovered);
        self.publish_listing_gauges(
            &report,
            survey.skipped_special,
            &survey.batches,
            survey.listed_at,
        );

        let batches = survey.batches;
        let mut remaining: usize = batches.iter().map(Vec::len).sum();
        for files in batches {
            if stop_requested() {
                report.interrupted = true;
                info!(
                    remaining,
                    "shutdown requested: leaving the rest of this scan to the drain"
                );
                break;
            }
            let generation = self.state.generation() + 1;
            let plan = Plan {
                generation,
                writer_id: self.log.writer_id(),
                created_at_ms: now_ms(),
                output_key: self.output.key_for(generation),
                files,
            };
            let count = plan.files.len();
            let bytes: u64 = plan.files.iter().map(|f| f.size - f.start).sum();
            let result = match self.log.create_plan(&plan).await {
                Ok(()) => self.run_batch(plan, WriteMode::Create).await,
                Err(e) => Err(e.into()),
            };
            report.batches.push(self.settle(result)?);
            remaining -= count;
            gauge!(m::PENDING_FILES).decrement(count as f64);
            gauge!(m::PENDING_BYTES).decrement(bytes as f64);
        }
        if remaining == 0 {
            gauge!(m::OLDEST_PENDING_AGE).set(0.0);
        }
        self.status
            .send_modify(|s| s.pending_files = remaining as u64);
        Ok(report)
    }

    /// Publishes the watched volume's free space, and warns when it is below `min_free`: an
    /// `emptyDir` that fills up stops the emitter.
    fn check_free_space(&self, free: Option<u64>) {
        let Some(free) = free else { return };
        gauge!(m::WATCH_FREE_BYTES).set(free as f64);
        let low = self.config.min_free.is_some_and(|min| free < min);
        gauge!(m::WATCH_LOW_SPACE).set(if low { 1.0 } else { 0.0 });
        if low {
            warn!(
                free_bytes = free,
                min_free = self.config.min_free,
                dir = %self.config.watch_dir.display(),
                "the watched volume is running out of space (consider --after delete or move)"
            );
        }
    }

    /// Fingerprints are computed (one read of a file's first KiB at commit) only for the rules
    /// that use them.
    fn needs_fingerprints(&self) -> bool {
        self.config.identity == Identity::Content || self.config.on_change == OnChange::Append
    }

    /// Records files recognised as renamed processed files under their new paths, in a commit
    /// of its own (no output: nothing was processed).
    async fn commit_renames(
        &mut self,
        renames: Vec<(RelPath, FileEntry)>,
    ) -> Result<(), ScanError> {
        let generation = self.state.generation() + 1;
        let delta = Delta {
            generation,
            writer_id: self.log.writer_id(),
            committed_at_ms: now_ms(),
            output_key: None,
            upserts: renames,
        };
        if let Err(e) = self.log.commit(&delta).await {
            self.needs_reload = true;
            return Err(e.into());
        }
        self.state
            .apply(&delta)
            .map_err(|reason| ScanError::Config(format!("internal: {reason}")))?;
        for (path, entry) in &delta.upserts {
            info!(path = %path, processed_in = entry.generation, "recognised by content as a renamed file; not processed again");
        }
        counter!(m::RENAMED_FILES_TOTAL).increment(delta.upserts.len() as u64);
        gauge!(m::GENERATION).set(generation as f64);
        Ok(())
    }

    /// Deletes or moves committed files on a worker thread. Errors are logged and counted, and
    /// the files stay for the next scan to retry.
    async fn clean_up(&self, tasks: Vec<CleanupTask>) -> Result<CleanupReport, ScanError> {
        let root = self.config.watch_dir.clone();
        blocking(move || Ok(cleanup::clean(&root, &tasks))).await
    }

    /// After a failed batch, what reached storage is unknown (a plan or delta may have landed
    /// although the call failed): re-read the log before the next batch.
    fn settle(&mut self, result: Result<BatchReport, ScanError>) -> Result<BatchReport, ScanError> {
        if result.is_err() {
            self.needs_reload = true;
        }
        result
    }

    /// Processes, flushes and commits one planned batch (its plan is already stored).
    async fn run_batch(&mut self, plan: Plan, mode: WriteMode) -> Result<BatchReport, ScanError> {
        let started = Instant::now();
        let generation = plan.generation;
        let outcomes = self.process(&plan.files).await?;

        let source_id = self.config.source_id.clone();
        let processor = self.processor.name().to_string();
        let key = plan.output_key.clone();
        let fingerprinting = self.needs_fingerprints();
        let root = self.config.watch_dir.clone();
        let (plan, outcomes, body, fingerprints) = blocking(move || {
            // Of processed files only, and of the very file processed (same inode).
            let fingerprints: Vec<u64> = plan
                .files
                .iter()
                .zip(&outcomes)
                .map(|(f, outcome)| match outcome {
                    FileOutcome::Done { .. } if fingerprinting => {
                        fingerprint_file(&root, &f.path, f.size, Some(f.inode)).unwrap_or(0)
                    }
                    _ => 0,
                })
                .collect();
            let body = OutputSink::render(
                &source_id,
                &processor,
                generation,
                &key,
                &plan.files,
                &outcomes,
            );
            Ok((plan, outcomes, body, fingerprints))
        })
        .await?;
        // The fence for outputs: never (re)write the output of a generation another writer has
        // committed. A fresh plan was just created, so no one else can commit this generation
        // from now on; a redo may race a live writer that still holds the plan, and this check
        // leaves it only the moments between here and the write.
        self.log.ensure_uncommitted(generation).await?;
        self.output.write(&plan.output_key, body, mode).await?;

        let mut failed = 0;
        let mut bytes = 0;
        let upserts: Vec<(RelPath, FileEntry)> = plan
            .files
            .iter()
            .zip(&outcomes)
            .zip(&fingerprints)
            .map(|((file, outcome), &fingerprint)| {
                let outcome = match outcome {
                    FileOutcome::Done { bytes: read, .. } => {
                        bytes += read;
                        Outcome::Done
                    }
                    FileOutcome::Failed { reason, .. } => {
                        failed += 1;
                        Outcome::Failed {
                            reason: reason.as_str().into(),
                        }
                    }
                };
                // A failed range counts as not processed: an appended file is retried from
                // its start.
                let offset = if outcome.is_failed() {
                    file.start
                } else {
                    file.size
                };
                let entry = FileEntry {
                    size: file.size,
                    mtime_ns: file.mtime_ns,
                    inode: file.inode,
                    btime_ns: file.btime_ns,
                    offset,
                    generation,
                    outcome,
                    fingerprint,
                };
                (file.path.clone(), entry)
            })
            .collect();
        let delta = Delta {
            generation,
            writer_id: self.log.writer_id(),
            committed_at_ms: now_ms(),
            output_key: Some(plan.output_key.clone()),
            upserts,
        };
        self.log.commit(&delta).await?;
        self.state
            .apply(&delta)
            .map_err(|reason| ScanError::Config(format!("internal: {reason}")))?;
        if let Err(e) = self.log.remove_plan(generation).await {
            // Harmless: the next load sees a plan older than the committed generation and
            // removes it then.
            warn!(error = %e, generation, "could not remove the plan of a committed batch");
        }
        if generation - self.snapshot_generation >= self.config.snapshot_every.max(1)
            && generation >= self.next_snapshot_at
        {
            self.snapshot().await?;
        }

        let tasks: Vec<CleanupTask> = delta
            .upserts
            .iter()
            .filter_map(|(path, entry)| self.config.cleanup.task(path, entry))
            .collect();
        if !tasks.is_empty() {
            self.clean_up(tasks).await?;
        }

        // Failures are reported once they are committed: an attempt that is redone would
        // otherwise count (and log) them twice.
        for (file, outcome) in plan.files.iter().zip(&outcomes) {
            if let FileOutcome::Failed { kind, reason } = outcome {
                counter!(m::FILES_FAILED_TOTAL, "reason" => kind.label()).increment(1);
                warn!(path = %file.path, generation, %reason, "file failed; recorded and skipped");
            }
        }
        let files = plan.files.len();
        let recovered = mode == WriteMode::Replace;
        let elapsed = started.elapsed();
        counter!(m::BATCHES_TOTAL, "kind" => if recovered { "recovered" } else { "fresh" })
            .increment(1);
        histogram!(m::BATCH_DURATION).record(elapsed.as_secs_f64());
        counter!(m::FILES_TOTAL, "outcome" => "done").increment((files - failed) as u64);
        counter!(m::FILES_TOTAL, "outcome" => "failed").increment(failed as u64);
        counter!(m::BYTES_TOTAL).increment(bytes);
        gauge!(m::GENERATION).set(generation as f64);
        gauge!(m::LAST_COMMIT).set(delta.committed_at_ms as f64 / 1000.0);
        gauge!(m::TRACKED_FILES).set(self.state.len() as f64);
        let output = self.output.describe(&plan.output_key);
        info!(generation, files, failed, bytes, %output, ?elapsed, "committed batch");
        let tracked = self.state.len();
        self.status.send_modify(|s| {
            s.generation = generation;
            s.tracked_files = tracked;
            s.batches += 1;
            s.files_done += (files - failed) as u64;
            s.files_failed += failed as u64;
            s.bytes += bytes;
        });
        Ok(BatchReport {
            generation,
            files,
            failed,
            bytes,
            output,
            recovered,
        })
    }

    /// Refuses to start when the output location holds batches of this source beyond the
    /// committed state (state deleted, or restored from an old copy): starting would process
    /// those files again and duplicate their results. With `allow_rescan`, it records a base
    /// snapshot after the newest existing batch instead, so new batches never reuse its keys.
    async fn refuse_silent_rescan(&mut self) -> Result<(), ScanError> {
        let committed = self.state.generation();
        let pending = self.pending.as_ref().map(|p| p.generation);
        let ahead: Vec<u64> = self
            .output
            .generations_after(committed)
            .await?
            .into_iter()
            .filter(|g| Some(*g) != pending)
            .collect();
        let Some(&newest) = ahead.iter().max() else {
            return Ok(());
        };
        // A live writer that moved on since the log was loaded also explains outputs ahead of
        // it; such a writer always leaves a plan, delta or snapshot beyond our generation.
        if let Some(object) = self.log.first_after(committed, pending).await? {
            return Err(StateError::Fenced {
                location: self.log.location().to_string(),
                object: self.log.location().describe(&object.path),
                generation: object.generation,
            }
            .into());
        }
        let what = if committed == 0 {
            format!(
                "the state at {} is empty, but the output location already holds {} batch(es) \
                 of source id {:?} (up to generation {newest})",
                self.log.location(),
                ahead.len(),
                self.config.source_id
            )
        } else {
            format!(
                "the state at {} is at generation {committed}, but the output location holds \
                 {} later batch(es) of source id {:?} (up to generation {newest}); was the state \
                 restored from an older copy?",
                self.log.location(),
                ahead.len(),
                self.config.source_id
            )
        };
        if !self.config.allow_rescan {
            return Err(ScanError::Config(format!(
                "refusing to start: {what}. Starting would process those files again and \
                 duplicate their results. If that is what you want, pass --allow-rescan"
            )));
        }
        warn!(
            "{what}; --allow-rescan: files will be processed again, from generation {}",
            newest + 1
        );
        // The interrupted batch, if any, is dropped with the rest: its files are processed anew.
        self.state.rebase(newest, Some(now_ms()));
        let bytes = state_store::encode_snapshot(&self.state, self.log.writer_id(), now_ms());
        self.log.store_snapshot(newest, bytes).await?;
        self.pending = None;
        self.snapshot_generation = newest;
        Ok(())
    }

    /// Folds the log into a snapshot of the current state, without the entries of files the last
    /// listing did not find, and removes what the snapshot supersedes.
    ///
    /// The batch is committed already: a failed store only means the log stays longer until the
    /// next attempt (another `snapshot_every` generations later), so it is logged and counted,
    /// not returned. Only a worker failure, which loses the in-memory state, ends the scan.
    async fn snapshot(&mut self) -> Result<(), ScanError> {
        let started = Instant::now();
        let generation = self.state.generation();
        debug!(
            generation,
            entries = self.state.len(),
            "folding the state log into a snapshot"
        );
        let writer_id = self.log.writer_id();
        let mut state = std::mem::take(&mut self.state);
        let gone = std::mem::take(&mut self.gone);
        // Dropping entries, compacting and encoding are linear in the state: a worker's job.
        let joined = tokio::task::spawn_blocking(move || {
            let dropped = state.forget(&gone);
            state.compact();
            let bytes = state_store::encode_snapshot(&state, writer_id, now_ms());
            (state, dropped, bytes)
        })
        .await;
        let (state, dropped, bytes) = match joined {
            Ok(done) => done,
            Err(e) => {
                self.needs_reload = true;
                counter!(m::SNAPSHOTS_TOTAL, "result" => "error").increment(1);
                return Err(ScanError::Worker(format!(
                    "snapshot of generation {generation}: {e}; the state will be reloaded"
                )));
            }
        };
        self.state = state;
        let size = bytes.len();
        match self.log.store_snapshot(generation, bytes).await {
            Ok(removed) => {
                self.snapshot_generation = generation;
                counter!(m::SNAPSHOTS_TOTAL, "result" => "ok").increment(1);
                histogram!(m::SNAPSHOT_DURATION).record(started.elapsed().as_secs_f64());
                gauge!(m::SNAPSHOT_BYTES).set(size as f64);
                gauge!(m::TRACKED_FILES).set(self.state.len() as f64);
                info!(
                    generation,
                    entries = self.state.len(),
                    bytes = size,
                    dropped_gone = dropped,
                    removed_objects = removed,
                    elapsed = ?started.elapsed(),
                    "state log folded into a snapshot"
                );
            }
            Err(e) => {
                // Memory no longer holds the dropped entries the log still has: re-read it.
                self.needs_reload = true;
                self.next_snapshot_at = generation + self.config.snapshot_every.max(1);
                counter!(m::SNAPSHOTS_TOTAL, "result" => "error").increment(1);
                warn!(
                    error = %e,
                    generation,
                    retry_at = self.next_snapshot_at,
                    "could not store a snapshot; will try again later"
                );
            }
        }
        Ok(())
    }

    /// Processes the files on at most `workers` worker threads; outcomes come back in plan order.
    ///
    /// Large files of splittable processors become several line-aligned units, so that one big
    /// file keeps every worker busy; units are merged back per file. A resource shortage of the
    /// process fails the whole batch (it is retried later).
    async fn process(&self, files: &[PlannedFile]) -> Result<Vec<FileOutcome>, ScanError> {
        let root = Arc::new(self.config.watch_dir.clone());
        let files = Arc::new(files.to_vec());
        let workers = self.config.workers.max(1);
        let units = {
            let (root, files, processor) = (
                Arc::clone(&root),
                Arc::clone(&files),
                self.processor.clone(),
            );
            blocking(move || Ok(plan_units(&root, &files, &processor, workers))).await?
        };
        let limits = self.config.read_limits;
        let mut outcomes: Vec<Option<UnitOutcome>> = (0..units.len()).map(|_| None).collect();
        let mut work = futures::stream::iter(units.iter().cloned().enumerate())
            .map(|(index, unit)| {
                let (root, files, processor) = (
                    Arc::clone(&root),
                    Arc::clone(&files),
                    self.processor.clone(),
                );
                async move {
                    let outcome = tokio::task::spawn_blocking(move || {
                        process_unit(&root, &files[unit.file], unit.range, &processor, limits)
                    })
                    .await
                    .unwrap_or_else(|join| {
                        Ok(UnitOutcome::Failed {
                            kind: crate::FailureKind::Processor,
                            reason: format!("processor panicked: {}", panic_message(join)),
                        })
                    });
                    (index, outcome)
                }
            })
            .buffer_unordered(workers);
        while let Some((index, outcome)) = work.next().await {
            outcomes[index] = Some(outcome?);
        }
        drop(work);
        // Merging and finishing results is CPU work too.
        let processor = self.processor.clone();
        let count = files.len();
        blocking(move || {
            let mut per_file: Vec<Vec<UnitOutcome>> = (0..count).map(|_| Vec::new()).collect();
            for (unit, outcome) in units.iter().zip(outcomes) {
                per_file[unit.file].push(outcome.expect("every unit has an outcome"));
            }
            Ok(per_file
                .into_iter()
                .map(|units| combine(&processor, units))
                .collect())
        })
        .await
    }

    /// Re-reads the state log: the committed state and an interrupted plan, if any.
    async fn reload(&mut self) -> Result<LoadSummary, ScanError> {
        let loaded = self.log.load().await?;
        let stale = loaded.stale.len();
        match self.log.remove(loaded.stale).await {
            Ok(()) if stale > 0 => info!(
                stale,
                "removed state objects a newer snapshot or delta supersedes (an earlier run \
                 stopped before cleaning up)"
            ),
            Ok(()) => {}
            // Harmless: stale objects are ignored by loading and removed by the next snapshot.
            Err(e) => warn!(error = %e, stale, "could not remove superseded state objects"),
        }
        self.snapshot_generation = loaded.snapshot_generation.unwrap_or(0);
        let summary = LoadSummary {
            generation: loaded.state.generation(),
            tracked_files: loaded.state.len(),
            objects: loaded.objects_read,
            bytes: loaded.bytes_read,
            interrupted: loaded.pending.as_ref().map(|p| p.generation),
        };
        self.state = loaded.state;
        self.pending = loaded.pending;
        self.needs_reload = false;
        gauge!(m::GENERATION).set(self.state.generation() as f64);
        gauge!(m::TRACKED_FILES).set(self.state.len() as f64);
        if let Some(ms) = self.state.last_commit_ms() {
            gauge!(m::LAST_COMMIT).set(ms as f64 / 1000.0);
        }
        let (generation, tracked) = (self.state.generation(), self.state.len());
        self.status.send_modify(|s| {
            s.ready = s.last_error.is_none();
            gauge!(m::READY).set(if s.ready { 1.0 } else { 0.0 });
            s.generation = generation;
            s.tracked_files = tracked;
        });
        Ok(summary)
    }

    fn publish_listing_gauges(
        &self,
        report: &ScanReport,
        skipped_special: u64,
        batches: &[Vec<PlannedFile>],
        now: SystemTime,
    ) {
        gauge!(m::LISTED_FILES).set(report.listed as f64);
        gauge!(m::CHANGED_FILES).set(report.changed as f64);
        gauge!(m::LISTING_PROBLEMS).set(report.listing_problems.len() as f64);
        gauge!(m::SKIPPED_SPECIAL).set(skipped_special as f64);
        gauge!(m::NOT_READY_FILES, "reason" => "in_progress_name").set(report.in_progress as f64);
        gauge!(m::NOT_READY_FILES, "reason" => "too_young").set(report.too_young as f64);
        gauge!(m::NOT_READY_FILES, "reason" => "no_marker").set(report.no_marker as f64);
        gauge!(m::NOT_READY_FILES, "reason" => "unstable").set(report.unstable as f64);
        gauge!(m::NOT_READY_FILES, "reason" => "partial_line").set(report.partial_line as f64);
        gauge!(m::EXCLUDED_FILES).set(report.excluded as f64);
        let ready = batches.iter().flatten();
        gauge!(m::PENDING_FILES).set(report.ready as f64);
        gauge!(m::PENDING_BYTES).set(ready.clone().map(|f| f.size - f.start).sum::<u64>() as f64);
        let oldest = ready.map(|f| f.mtime_ns).min();
        let age = oldest.map_or(0.0, |ns| {
            now.duration_since(mtime(ns))
                .map_or(0.0, |d| d.as_secs_f64())
        });
        gauge!(m::OLDEST_PENDING_AGE).set(age);
    }
}

/// What a reload of the state log found, logged once the caller knows the start succeeded.
struct LoadSummary {
    generation: u64,
    tracked_files: usize,
    objects: usize,
    bytes: u64,
    interrupted: Option<u64>,
}

impl LoadSummary {
    fn log(&self, location: &Location) {
        info!(
            state = %location,
            generation = self.generation,
            tracked_files = self.tracked_files,
            objects = self.objects,
            bytes = self.bytes,
            interrupted_batch = self.interrupted,
            "state loaded"
        );
    }
}

/// What one listing found, and the batches to run: the pure part of a scan.
struct Survey {
    /// The scan's report so far (no batches yet).
    report: ScanReport,
    /// Ready files, cut into batches.
    batches: Vec<Vec<PlannedFile>>,
    /// Tracked paths not found by the listing.
    gone: Vec<RelPath>,
    skipped_special: u64,
    listed_at: SystemTime,
    /// Committed files left over by an unfinished cleanup.
    cleanup: Vec<CleanupTask>,
    /// New paths of processed files recognised by content, with their entries.
    renames: Vec<(RelPath, FileEntry)>,
    /// Free space of the watched volume, if it could be read.
    free_bytes: Option<u64>,
}

/// Lists `root`, merges the listing with `state`, applies the readiness rules and cuts the ready
/// files into batches. Blocking: run it on a worker thread.
fn survey(
    config: &ScannerConfig,
    state: &State,
    sightings: &mut Sightings,
) -> Result<Survey, ScanError> {
    let root = config.watch_dir.as_path();
    let readiness = &config.readiness;
    let rules = &config.cleanup;
    let (on_change, identity) = (config.on_change, config.identity);
    let listing = listing::list(root)?;
    // Committed files still here, unchanged: cleaned up now if an earlier attempt did not
    // finish (a crash, an error).
    let mut cleanup = Vec::new();
    if !rules.is_noop() {
        for file in &listing.files {
            if let Some(entry) = state.get(&file.path) {
                if crate::diff::change_of(file, entry).is_none() {
                    cleanup.extend(rules.task(&file.path, entry));
                }
            }
        }
    }
    let listed_at = listing.started_at.unwrap_or_else(SystemTime::now);
    let diff = diff(&listing, state);
    let mut report = ScanReport {
        listed: listing.files.len(),
        gone: diff.gone.len(),
        ..ScanReport::default()
    };
    let listed = |path: &[u8]| {
        listing
            .files
            .binary_search_by(|f| f.path.as_bytes().cmp(path))
            .is_ok()
    };
    let mut seen = Sightings::new();
    let mut ready = Vec::new();
    let mut moved_away = MovedAway::default();
    if identity == Identity::Content {
        let replaced = diff
            .entries
            .iter()
            .filter(|e| e.change == Change::Replaced)
            .map(|e| &e.file.path);
        for path in diff.gone.iter().chain(replaced) {
            if let Some(entry) = state.get(path) {
                moved_away.add(path.clone(), entry);
            }
        }
    }
    let mut renames = Vec::new();
    for entry in diff.entries {
        let path = entry.file.path.as_bytes();
        if !readiness.names.wants(path)
            || readiness.marker.as_ref().is_some_and(|m| m.is_marker(path))
        {
            report.excluded += 1;
            continue;
        }
        let tracked = state.get(&entry.file.path);
        let Some(start) = start_for(root, on_change, &entry, tracked) else {
            report.changed += 1;
            debug!(path = %entry.file.path, change = ?entry.change, "changed since processed; left alone");
            continue;
        };
        report.new_files += 1;
        let verdict = readiness
            .check(&entry.file, listed_at)
            .and_then(|()| match &readiness.marker {
                Some(marker) if !listed(&marker.marker_of(path)) => Err(NotReady::NoMarker),
                // The walk may have examined the file before its last write and found the
                // marker after it: look again, now that the marker is known to exist.
                Some(_) if !unchanged_since_listed(root, &entry.file) => Err(NotReady::Unstable {
                    recheck_at: listed_at,
                }),
                _ => Ok(()),
            })
            .and_then(|()| match readiness.stable_for {
                None => Ok(()),
                Some(window) => {
                    let sighting = Sighting::of(&entry.file, listed_at);
                    let first = sightings
                        .get(&entry.file.path)
                        .filter(|earlier| earlier.same_as(&sighting))
                        .map_or(sighting, |earlier| *earlier);
                    seen.insert(entry.file.path.clone(), first);
                    // An earlier listing must have seen it, and long enough ago.
                    let at = first
                        .at
                        .checked_add(window)
                        .unwrap_or(listed_at + Duration::from_secs(100 * 365 * 86_400));
                    if first.at < listed_at && at <= listed_at {
                        Ok(())
                    } else {
                        Err(NotReady::Unstable {
                            recheck_at: at.max(listed_at),
                        })
                    }
                }
            });
        // A complete file new at its path may be a processed one, renamed (checked only once
        // it is ready: a file still being written must not be taken for a finished one).
        if verdict.is_ok() && start == 0 && matches!(entry.change, Change::New | Change::Replaced) {
            if let Some((was, renamed)) =
                moved_away.take_match(root, &entry.file, on_change == OnChange::Append)
            {
                debug!(path = %entry.file.path, %was, "renamed processed file");
                renames.push((entry.file.path.clone(), renamed));
                continue;
            }
        }
        // Appending: whole lines only; the partial last line waits until it is complete.
        let verdict = verdict.and_then(|()| {
            if on_change != OnChange::Append {
                return Ok(Some((start, entry.file.size)));
            }
            match whole_lines(root, &entry.file, start) {
                AppendRange::Lines(start, end) => Ok(Some((start, end))),
                AppendRange::Partial => Err(NotReady::PartialLine),
                AppendRange::Compressed => Ok(None),
            }
        });
        match verdict {
            Ok(Some((start, end))) => ready.push(PlannedFile {
                path: entry.file.path,
                size: end,
                mtime_ns: entry.file.mtime_ns,
                inode: entry.file.inode,
                btime_ns: entry.file.btime_ns,
                start,
            }),
            Ok(None) => {
                // A compressed file that grew: its stream cannot be resumed, and processing it
                // whole again would count its start twice.
                report.new_files -= 1;
                report.changed += 1;
                debug!(path = %entry.file.path, "compressed file grew; left alone");
            }
            Err(NotReady::PartialLine) => report.partial_line += 1,
            Err(NotReady::InProgressName) => report.in_progress += 1,
            Err(NotReady::NoMarker) => report.no_marker += 1,
            Err(NotReady::TooYoung { ready_at: at })
            | Err(NotReady::Unstable { recheck_at: at }) => {
                if matches!(verdict, Err(NotReady::TooYoung { .. })) {
                    report.too_young += 1;
                } else {
                    report.unstable += 1;
                }
                report.next_ready_at = Some(report.next_ready_at.map_or(at, |t| t.min(at)));
            }
        }
    }
    // Only files still waiting are remembered: the rest are committed or gone.
    *sightings = seen;
    report.ready = ready.len();
    report.listing_problems = listing.problems;
    Ok(Survey {
        report,
        batches: cut_batches(ready, config.limits),
        gone: diff.gone,
        skipped_special: listing.skipped_special,
        listed_at,
        cleanup,
        renames,
        free_bytes: rustix::fs::statvfs(root)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
    })
}

/// Where processing of a listed file that is not unchanged starts, or `None` to leave it.
///
/// New files (and other files under a processed name) start at 0. A processed file that
/// changed is handled as `on_change` says; a failed one that changed is tried again (from the
/// failed range's start when appending: what was committed before it stays counted once).
fn start_for(
    root: &Path,
    on_change: OnChange,
    entry: &crate::diff::DiffEntry,
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

/// True if `file` still has the size and modification time the listing saw.
fn unchanged_since_listed(root: &Path, file: &crate::listing::ListedFile) -> bool {
    std::fs::symlink_metadata(listing::absolute(root, &file.path)).is_ok_and(|meta| {
        meta.len() == file.size && crate::listing::mtime_ns(&meta) == file.mtime_ns
    })
}

/// Processed files that left their path (gone, or another file took the path), by the
/// length their fingerprint covers and the fingerprint: `--identity content` finds them under
/// new paths.
#[derive(Default)]
struct MovedAway<'a> {
    by_fingerprint: std::collections::HashMap<(u64, u64), Vec<(RelPath, &'a FileEntry)>>,
}

impl<'a> MovedAway<'a> {
    fn add(&mut self, path: RelPath, entry: &'a FileEntry) {
        // Empty files are all alike: never matched.
        if entry.fingerprint != 0 && entry.size > 0 {
            let window = entry.size.min(state_store::FINGERPRINT_BYTES);
            self.by_fingerprint
                .entry((window, entry.fingerprint))
                .or_default()
                .push((path, entry));
        }
    }

    /// The processed file `file` is, renamed, if any; with the entry to record under its new
    /// path. The sizes must be equal, or, when appending, the new one at least the committed
    /// one (lines written before the rename are then processed as appended).
    fn take_match(
        &mut self,
        root: &Path,
        file: &crate::listing::ListedFile,
        appending: bool,
    ) -> Option<(RelPath, FileEntry)> {
        if self.by_fingerprint.is_empty() {
            return None;
        }
        let windows: std::collections::BTreeSet<u64> = self
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
                ..old.clone()
            };
            return Some((was, renamed));
        }
        None
    }
}

/// What to process of a file when appending.
enum AppendRange {
    /// From `start` to the end of its last complete line.
    Lines(u64, u64),
    /// No complete line after `start` yet.
    Partial,
    /// A compressed file that grew: a stream cannot be resumed in the middle.
    Compressed,
}

/// The bytes of `file` to process from `start` when appending: up to the end of its last
/// complete line. A compressed file is processed whole when new. If the file cannot be read
/// now, the whole listed range is planned, and processing says why it fails.
fn whole_lines(root: &Path, file: &crate::listing::ListedFile, start: u64) -> AppendRange {
    use std::io::{Read, Seek, SeekFrom};
    let whole = AppendRange::Lines(start, file.size);
    let Ok(mut handle) = crate::process::open(&listing::absolute(root, &file.path)) else {
        return whole;
    };
    let mut head = [0u8; 4];
    let n = handle.read(&mut head).unwrap_or(0);
    if crate::process::Encoding::sniff(&head[..n]) != crate::process::Encoding::Plain {
        return if start == 0 {
            AppendRange::Lines(0, file.size)
        } else {
            AppendRange::Compressed
        };
    }
    // Backwards from the listed size, a window at a time.
    let mut window = vec![0u8; 64 << 10];
    let mut end = file.size;
    while end > start {
        let from = end.saturating_sub(window.len() as u64).max(start);
        let len = (end - from) as usize;
        if handle.seek(SeekFrom::Start(from)).is_err()
            || handle.read_exact(&mut window[..len]).is_err()
        {
            return whole;
        }
        if let Some(i) = memchr::memrchr(b'\n', &window[..len]) {
            return AppendRange::Lines(start, from + i as u64 + 1);
        }
        end = from;
    }
    AppendRange::Partial
}

/// What one listing saw of a file that is waiting to be stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sighting {
    size: u64,
    mtime_ns: i64,
    inode: u64,
    /// The listing that first saw the file like this.
    at: SystemTime,
}

impl Sighting {
    fn of(file: &crate::listing::ListedFile, at: SystemTime) -> Self {
        Self {
            size: file.size,
            mtime_ns: file.mtime_ns,
            inode: file.inode,
            at,
        }
    }

    fn same_as(&self, other: &Sighting) -> bool {
        (self.size, self.mtime_ns, self.inode) == (other.size, other.mtime_ns, other.inode)
    }
}

/// Files waiting to be seen unchanged, by path (`stable_for`); kept in memory only, so after a
/// restart a file needs two listings again.
type Sightings = std::collections::HashMap<RelPath, Sighting>;

async fn blocking<T, F>(work: F) -> Result<T, ScanError>
where
    F: FnOnce() -> Result<T, ScanError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ScanError::Worker(e.to_string()))?
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(join) => join.to_string(),
    }
}

fn error_stage(e: &ScanError) -> &'static str {
    match e {
        ScanError::WatchDir { .. } => "watch",
        ScanError::State(_) => "state",
        ScanError::Output { .. } | ScanError::OutputFenced { .. } => "output",
        ScanError::Config(_) => "config",
        ScanError::Resources(_) => "resources",
        ScanError::Worker(_) => "worker",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, UNIX_EPOCH};

    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use state_store::{Delta, FileEntry, Location, Outcome, StateLog};

    use super::*;
    use crate::processor::Stats;

    fn entry_for(path: &std::path::Path, outcome: Outcome) -> FileEntry {
        let meta = std::fs::metadata(path).unwrap();
        FileEntry {
            size: meta.len(),
            mtime_ns: crate::listing::mtime_ns(&meta),
            inode: meta.ino(),
            btime_ns: crate::listing::btime_ns(&meta),
            offset: meta.len(),
            generation: 1,
            outcome,
            fingerprint: 0,
        }
    }

    #[tokio::test]
    async fn failed_files_are_processed_again_once_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let watch = dir.path();
        let old = SystemTime::now() - Duration::from_secs(600);
        for name in ["changed.log", "unchanged.log", "done.log"] {
            std::fs::write(watch.join(name), b"first\n").unwrap();
        }
        let failed = Outcome::Failed {
            reason: "was replaced by another file after it was listed".into(),
        };
        let state = Location::parse("memory://").unwrap();
        let output = Location::parse("memory://").unwrap();
        let log = StateLog::new(&state, "t").unwrap();
        let upserts = ["changed.log", "done.log", "unchanged.log"]
            .map(|name| {
                let outcome = if name == "done.log" {
                    Outcome::Done
                } else {
                    failed.clone()
                };
                (RelPath::from(name), entry_for(&watch.join(name), outcome))
            })
            .to_vec();
        log.commit(&Delta {
            generation: 1,
            upserts,
            committed_at_ms: UNIX_EPOCH.elapsed().unwrap().as_millis() as u64,
            ..Delta::default()
        })
        .await
        .unwrap();
        // Both the done and the failed file get rewritten; only the failed one is collected.
        for name in ["changed.log", "done.log"] {
            std::fs::write(watch.join(name), b"second version\n").unwrap();
            let file = std::fs::File::options()
                .write(true)
                .open(watch.join(name))
                .unwrap();
            file.set_modified(old).unwrap();
        }

        let mut config = ScannerConfig::new(watch, "t");
        config.readiness.min_age = Duration::ZERO;
        let mut scanner = Scanner::open(config, DynProcessor::new(Stats), &state, &output)
            .await
            .unwrap();
        let report = scanner.scan(None).await.unwrap();
        assert_eq!(report.changed, 1, "done.log changed and is left alone");
        assert_eq!(report.batches.len(), 1);
        assert_eq!(report.batches[0].files, 1);

        let objects: Vec<_> = output.store().list(None).try_collect().await.unwrap();
        assert_eq!(objects.len(), 1);
        let body = output.store().get(&objects[0].location).await.unwrap();
        let text = String::from_utf8(body.bytes().await.unwrap().to_vec()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["path"], "changed.log");
        assert_eq!(line["result"]["words"], 2);
        assert_eq!(
            scanner.state().get(&"changed.log".into()).unwrap().outcome,
            Outcome::Done
        );
    }
}
