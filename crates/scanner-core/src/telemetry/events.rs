//! The pipeline's events: each records its metrics, writes its log line and updates the status.

use std::path::Path;
use std::time::{Duration, SystemTime};

use metrics::{counter, gauge, histogram};
use state_store::{DeltasRead, FileEntry, Location, RelPath, StateError};
use tracing::{debug, error, info, warn};

use super::*;
use crate::process::FailureKind;
use crate::readiness::mtime;
use crate::scanner::{DrainMode, DrainReport, Leftover, LeftoverReason};
use crate::{ErrorChain, ScanError, ScanReport};

/// A scan ended without error.
pub(crate) struct ScanFinished<'a> {
    pub(crate) report: &'a ScanReport,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for ScanFinished<'_> {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.ready = true;
        status.scans += 1;
        status.last_error = None;
        true
    }

    fn emit(self) {
        let Self { report, elapsed } = self;
        histogram!(SCAN_DURATION).record(elapsed.as_secs_f64());
        counter!(SCANS_TOTAL, "result" => "ok").increment(1);
        gauge!(LAST_SUCCESSFUL_SCAN).set(unix_seconds(SystemTime::now()));
        let files = report.committed_files();
        if files > 0 || !report.listing_problems.is_empty() {
            info!(
                listed = report.listed,
                scope_dirs = report.scope_dirs,
                committed_files = files,
                batches = report.batches.len(),
                not_ready = report.not_ready(),
                changed = report.changed,
                gone = report.gone,
                listing_problems = report.listing_problems.len(),
                ?elapsed,
                "scan complete"
            );
        } else {
            debug!(
                listed = report.listed,
                scope_dirs = report.scope_dirs,
                ?elapsed,
                "scan complete: nothing new"
            );
        }
    }
}

/// A scan failed.
pub(crate) struct ScanFailed<'a> {
    pub(crate) error: &'a ScanError,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for ScanFailed<'_> {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.ready = false;
        status.last_error = Some(ErrorChain(self.error).to_string());
        true
    }

    fn emit(self) {
        histogram!(SCAN_DURATION).record(self.elapsed.as_secs_f64());
        counter!(SCANS_TOTAL, "result" => "error").increment(1);
        counter!(ERRORS_TOTAL, "stage" => self.error.stage()).increment(1);
        if self.error.is_fenced() {
            gauge!(FENCED).set(1.0);
        }
        error!(error = %ErrorChain(self.error), "scan failed");
    }
}

/// The scanner could not be opened (the process stops).
pub(crate) struct StartFailed<'a> {
    pub(crate) error: &'a ScanError,
}

impl InternalEvent for StartFailed<'_> {
    fn emit(self) {
        counter!(ERRORS_TOTAL, "stage" => self.error.stage()).increment(1);
        if self.error.is_fenced() {
            gauge!(FENCED).set(1.0);
        }
        // The caller reports the error itself (the binary's last line): one message, not two.
        debug!(error = %ErrorChain(self.error), "cannot start");
    }
}

/// The scanner is open: it collects this source.
pub(crate) struct SourceOpened<'a> {
    pub(crate) source_id: &'a str,
}

impl InternalEvent for SourceOpened<'_> {
    fn emit(self) {
        gauge!(SOURCE_INFO, "source_id" => self.source_id.to_string()).set(1.0);
    }
}

/// The scan loop starts, with a scan every `interval`.
pub(crate) struct LoopStarted {
    pub(crate) interval: Duration,
}

impl InternalEvent for LoopStarted {
    fn emit(self) {
        gauge!(SCAN_INTERVAL).set(self.interval.as_secs_f64());
    }
}

/// One phase of a scan ended (see [`SCAN_PHASES`]).
pub(crate) struct PhaseTimed {
    pub(crate) phase: &'static str,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for PhaseTimed {
    fn emit(self) {
        histogram!(SCAN_PHASE_DURATION, "phase" => self.phase).record(self.elapsed.as_secs_f64());
    }
}

/// Seconds since the Unix epoch (negative before it).
fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// A failed scan will be tried again.
pub(crate) struct ScanRetry<'a> {
    pub(crate) error: &'a ScanError,
    pub(crate) retry_in: Duration,
}

impl InternalEvent for ScanRetry<'_> {
    fn emit(self) {
        warn!(error = %ErrorChain(self.error), retry_in = ?self.retry_in, "scan failed; will retry");
    }
}

/// A scan starts before its time (events, or a caller's wake-up).
pub(crate) struct WokenEarly;

impl InternalEvent for WokenEarly {
    fn emit(self) {
        debug!("woken for an early scan");
    }
}

/// Shutdown was requested: the drain begins.
pub(crate) struct DrainStarted {
    pub(crate) mode: DrainMode,
    pub(crate) timeout: Duration,
}

impl InternalEvent for DrainStarted {
    fn emit(self) {
        let mode = match self.mode {
            DrainMode::Wait => "wait",
            DrainMode::WriterGone => "writer-gone",
        };
        info!(
            mode,
            timeout = ?self.timeout,
            "shutdown requested: draining until every file that waits only for time is committed"
        );
    }
}

/// A scan of the drain is done: the files it left waiting.
pub(crate) struct DrainProgress<'a> {
    pub(crate) waiting: &'a [Leftover],
}

impl InternalEvent for DrainProgress<'_> {
    fn emit(self) {
        for reason in LeftoverReason::LABELS {
            let files = self
                .waiting
                .iter()
                .filter(|w| w.reason.label() == reason)
                .count();
            gauge!(DRAIN_LEFTOVER_FILES, "reason" => reason).set(files as f64);
        }
    }
}

/// The drain is over: complete, or with files left in the watched directory.
pub(crate) struct Drained<'a> {
    pub(crate) report: &'a DrainReport,
}

/// A batch ended before its last planned file: its results reached `--max-output-bytes`.
pub(crate) struct BatchCut {
    pub(crate) generation: u64,
    pub(crate) files: usize,
    pub(crate) left: usize,
    pub(crate) max_output_bytes: u64,
}

impl InternalEvent for BatchCut {
    fn emit(self) {
        counter!(BATCHES_CUT_TOTAL).increment(1);
        info!(
            generation = self.generation,
            files = self.files,
            left_for_next_batch = self.left,
            max_output_bytes = self.max_output_bytes,
            "batch cut: its results reached --max-output-bytes; the rest runs in the next batch"
        );
    }
}

/// A scan of the drain failed; it is tried again after `retry_in`, or not (`None`: the
/// deadline comes first).
pub(crate) struct DrainScanFailed<'a> {
    pub(crate) error: &'a ScanError,
    pub(crate) retry_in: Option<Duration>,
}

impl InternalEvent for DrainScanFailed<'_> {
    fn emit(self) {
        // Counted in `gleaner_errors_total` by the scan's own failure event.
        match self.retry_in {
            Some(retry_in) => warn!(
                error = %ErrorChain(self.error),
                retry_in = ?retry_in,
                "drain scan failed; trying again until the shutdown deadline"
            ),
            None => error!(
                error = %ErrorChain(self.error),
                "drain scan failed, and the shutdown deadline comes before another attempt: \
                 the files not committed are named below"
            ),
        }
    }
}

/// After the drain's last scan failed, the watched directory could not be listed either:
/// the files left cannot be named.
pub(crate) struct LeftoversUnlisted<'a> {
    pub(crate) error: &'a ScanError,
}

impl InternalEvent for LeftoversUnlisted<'_> {
    fn emit(self) {
        counter!(ERRORS_TOTAL, "stage" => self.error.stage()).increment(1);
        error!(
            error = %ErrorChain(self.error),
            "cannot list the watched directory to name the files the drain leaves"
        );
    }
}

/// The raw bytes of a file left at shutdown were copied to the output store (or could not be).
pub(crate) struct LeftoverShipped<'a> {
    pub(crate) path: &'a RelPath,
    /// URL of the copy.
    pub(crate) object: &'a str,
    /// The bytes copied.
    pub(crate) result: Result<u64, &'a ScanError>,
}

impl InternalEvent for LeftoverShipped<'_> {
    fn emit(self) {
        let label = match self.result {
            Ok(bytes) => {
                info!(path = %self.path, object = %self.object, bytes, "left in the watched directory: raw bytes shipped");
                "done"
            }
            Err(e) => {
                warn!(path = %self.path, object = %self.object, error = %ErrorChain(e), "left in the watched directory: raw bytes could not be shipped");
                "error"
            }
        };
        counter!(LEFTOVERS_SHIPPED_TOTAL, "result" => label).increment(1);
    }
}

/// How many leftovers are named one by one in the log; the rest are counted.
const LEFTOVERS_NAMED: usize = 100;

impl InternalEvent for Drained<'_> {
    fn emit(self) {
        let report = self.report;
        if report.complete {
            info!(
                generation = report.generation,
                scans = report.scans,
                failed_scans = report.failed_scans,
                committed_files = report.committed_files,
                last_error = report.last_error.as_deref(),
                "drained; every ready file is committed"
            );
            return;
        }
        warn!(
            generation = report.generation,
            scans = report.scans,
            failed_scans = report.failed_scans,
            committed_files = report.committed_files,
            left = report.leftovers.len(),
            named = report.leftovers.len().min(LEFTOVERS_NAMED),
            shipped = report.shipped,
            last_error = report.last_error.as_deref(),
            "drain incomplete: files are left in the watched directory"
        );
    }
}

/// The drain is incomplete: the files it leaves, named before their raw bytes are shipped
/// (which may outlast the process).
pub(crate) struct LeftoversNamed<'a> {
    pub(crate) report: &'a DrainReport,
}

impl InternalEvent for LeftoversNamed<'_> {
    fn emit(self) {
        let report = self.report;
        for leftover in report.leftovers.iter().take(LEFTOVERS_NAMED) {
            warn!(path = %leftover.path, reason = leftover.reason.label(), "left in the watched directory at exit: not committed");
        }
        // The gauge shows what the last scan left; after a failed one, what is uncommitted.
        if report.last_error.is_some() {
            DrainProgress {
                waiting: &report.leftovers,
            }
            .emit();
        }
    }
}

/// A shutdown request stops a scan between two batches.
pub(crate) struct ScanInterrupted {
    pub(crate) remaining: usize,
}

impl InternalEvent for ScanInterrupted {
    fn emit(self) {
        info!(
            remaining = self.remaining,
            "shutdown requested: leaving the rest of this scan to the drain"
        );
    }
}

/// The state log was read (at start, or after a failure left its contents in doubt).
pub(crate) struct StateLoaded<'a> {
    pub(crate) location: &'a Location,
    pub(crate) generation: u64,
    pub(crate) tracked_files: usize,
    pub(crate) last_commit_ms: Option<u64>,
    pub(crate) objects: usize,
    pub(crate) bytes: u64,
    pub(crate) interrupted: Option<u64>,
    /// How the deltas after the snapshot were read.
    pub(crate) deltas: DeltasRead,
    /// Why the spool directory was not used for deltas too large to hold, if it was needed.
    pub(crate) spool_refused: Option<&'a str>,
}

impl InternalEvent for StateLoaded<'_> {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.ready = status.last_error.is_none();
        status.generation = self.generation;
        status.tracked_files = self.tracked_files;
        true
    }

    fn emit(self) {
        gauge!(GENERATION).set(self.generation as f64);
        gauge!(TRACKED_FILES).set(self.tracked_files as f64);
        if let Some(ms) = self.last_commit_ms {
            gauge!(LAST_COMMIT).set(ms as f64 / 1000.0);
        }
        info!(
            state = %self.location,
            generation = self.generation,
            tracked_files = self.tracked_files,
            objects = self.objects,
            bytes = self.bytes,
            interrupted_batch = self.interrupted,
            deltas = ?self.deltas,
            spool_refused = self.spool_refused,
            "state loaded"
        );
    }
}

/// Objects a newer snapshot or delta supersedes were found while loading, and removed (or not).
pub(crate) struct StaleObjectsRemoved<'a> {
    pub(crate) count: usize,
    pub(crate) result: Result<(), &'a StateError>,
}

impl InternalEvent for StaleObjectsRemoved<'_> {
    fn emit(self) {
        match self.result {
            Ok(()) if self.count > 0 => info!(
                stale = self.count,
                "removed state objects a newer snapshot or delta supersedes (an earlier run \
                 stopped before cleaning up)"
            ),
            Ok(()) => {}
            // Harmless: stale objects are ignored by loading and removed by the next snapshot.
            Err(e) => warn!(
                error = %ErrorChain(e),
                stale = self.count,
                "could not remove superseded state objects"
            ),
        }
    }
}

/// Temporary files of writes a killed process left behind were removed at start.
pub(crate) struct TemporariesRemoved {
    pub(crate) count: usize,
}

impl InternalEvent for TemporariesRemoved {
    fn emit(self) {
        if self.count > 0 {
            info!(
                temporaries = self.count,
                "removed temporary files left by an interrupted write"
            );
        }
    }
}

/// The outputs hold batches the state does not know, and `allow_rescan` lets the start go on.
pub(crate) struct RescanAllowed<'a> {
    pub(crate) what: &'a str,
    pub(crate) from_generation: u64,
}

impl InternalEvent for RescanAllowed<'_> {
    fn emit(self) {
        warn!(
            "{}; --allow-rescan: files will be processed again, from generation {}",
            self.what, self.from_generation
        );
    }
}

/// `adopt_source`: this watch root takes the source id over from another.
pub(crate) struct SourceAdopted<'a> {
    pub(crate) theirs: &'a state_store::Origin,
    pub(crate) ours: &'a state_store::Origin,
    /// `--adopt-source`; else a new root in the old one's place (same host and directory).
    pub(crate) deliberate: bool,
}

impl InternalEvent for SourceAdopted<'_> {
    fn emit(self) {
        if self.deliberate {
            warn!(theirs = %self.theirs, ours = %self.ours, "--adopt-source: this watch root takes the source id over from another");
        } else {
            warn!(theirs = %self.theirs, ours = %self.ours, "a new watch root in the place of the last one (the same directory on the same host: a Pod recreated with a fresh emptyDir) takes the source id over; the old root is retired, and refused should it come back");
        }
    }
}

/// An interrupted batch is done again, before anything else.
pub(crate) struct BatchRedone {
    pub(crate) generation: u64,
    pub(crate) files: usize,
    /// Abnormal ends of the process before this batch's commit so far.
    pub(crate) ended: u32,
}

impl InternalEvent for BatchRedone {
    fn emit(self) {
        warn!(
            generation = self.generation,
            files = self.files,
            abnormal_ends = self.ended,
            "redoing a batch that was interrupted before its commit"
        );
    }
}

/// A batch that ended the process several times is redone with its first files only.
pub(crate) struct RedoCut {
    pub(crate) generation: u64,
    pub(crate) kept: usize,
    pub(crate) planned: usize,
    pub(crate) ended: u32,
}

impl InternalEvent for RedoCut {
    fn emit(self) {
        counter!(BATCHES_CUT_TOTAL).increment(1);
        warn!(
            generation = self.generation,
            kept = self.kept,
            planned = self.planned,
            abnormal_ends = self.ended,
            "the process ended several times before this batch's commit (out of memory?): \
             redoing it with its first files only; the others go to later batches"
        );
    }
}

/// A listing was merged with the state and judged: what it found.
pub(crate) struct ListingSurveyed<'a> {
    pub(crate) report: &'a ScanReport,
    pub(crate) skipped_special: u64,
}

impl InternalEvent for ListingSurveyed<'_> {
    fn emit(self) {
        let report = self.report;
        for problem in &report.listing_problems {
            warn!(path = %problem.path, reason = %problem.reason, "cannot examine part of the watched directory");
        }
        gauge!(LISTED_FILES).set(report.listed as f64);
        gauge!(CHANGED_FILES).set(report.changed as f64);
        gauge!(LISTING_PROBLEMS).set(report.listing_problems.len() as f64);
        gauge!(SKIPPED_SPECIAL).set(self.skipped_special as f64);
        let counts = [
            report.in_progress,
            report.too_young,
            report.no_marker,
            report.unstable,
            report.partial_line,
            report.retrying,
        ];
        for (reason, files) in NOT_READY_REASONS.into_iter().zip(counts) {
            gauge!(NOT_READY_FILES, "reason" => reason).set(files as f64);
        }
        gauge!(EXCLUDED_FILES).set(report.excluded as f64);
        gauge!(FUTURE_MTIME_FILES).set(report.future_mtime as f64);
    }
}

/// Ready files not yet committed: after a listing, and after each batch.
pub(crate) struct Backlog {
    pub(crate) files: usize,
    pub(crate) bytes: u64,
    /// The modification time of the oldest of them.
    pub(crate) oldest_mtime_ns: Option<i64>,
}

impl InternalEvent for Backlog {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.pending_files = self.files as u64;
        true
    }

    fn emit(self) {
        gauge!(PENDING_FILES).set(self.files as f64);
        gauge!(PENDING_BYTES).set(self.bytes as f64);
        let age = self.oldest_mtime_ns.map_or(0.0, |ns| {
            SystemTime::now()
                .duration_since(mtime(ns))
                .map_or(0.0, |d| d.as_secs_f64())
        });
        gauge!(OLDEST_PENDING_AGE).set(age);
        let oldest = self
            .oldest_mtime_ns
            .map_or(0.0, |ns| unix_seconds(mtime(ns)));
        gauge!(OLDEST_PENDING_TIMESTAMP).set(oldest);
    }
}

/// The free space of the watched volume was measured.
pub(crate) struct FreeSpace<'a> {
    pub(crate) free: u64,
    pub(crate) min_free: Option<u64>,
    pub(crate) dir: &'a Path,
}

impl InternalEvent for FreeSpace<'_> {
    fn emit(self) {
        gauge!(WATCH_FREE_BYTES).set(self.free as f64);
        let low = self.min_free.is_some_and(|min| self.free < min);
        gauge!(WATCH_LOW_SPACE).set(if low { 1.0 } else { 0.0 });
        if low {
            warn!(
                free_bytes = self.free,
                min_free = self.min_free,
                dir = %self.dir.display(),
                "the watched volume is running out of space (consider --after delete or move)"
            );
        }
    }
}

/// A walk of the whole tree measured the space the watched directory takes.
pub(crate) struct WatchUsage<'a> {
    pub(crate) used: u64,
    pub(crate) capacity: Option<u64>,
    pub(crate) dir: &'a Path,
}

/// The share of `--watch-capacity` from which every walk warns.
const CAPACITY_WARNING: f64 = 0.8;

impl InternalEvent for WatchUsage<'_> {
    fn emit(self) {
        gauge!(WATCH_BYTES).set(self.used as f64);
        let Some(capacity) = self.capacity else {
            return;
        };
        gauge!(WATCH_CAPACITY).set(capacity as f64);
        let share = self.used as f64 / capacity.max(1) as f64;
        if share >= CAPACITY_WARNING {
            warn!(
                used_bytes = self.used,
                capacity_bytes = capacity,
                used_percent = (share * 100.0).round(),
                dir = %self.dir.display(),
                "the watched directory is filling its capacity (--watch-capacity): past it the \
                 kubelet evicts the Pod at once, without a drain, and every file in it is lost"
            );
        }
    }
}

/// A listing saw, for the first time, a file whose modification time is further in the future
/// than the clock-skew tolerance.
pub(crate) struct FutureMtime<'a> {
    pub(crate) path: &'a RelPath,
    pub(crate) tolerance: Duration,
}

impl InternalEvent for FutureMtime<'_> {
    fn emit(self) {
        warn!(
            path = %self.path,
            tolerance = ?self.tolerance,
            "modification time in the future (a skewed clock?): the file's age counts from now"
        );
    }
}

/// A processed file that changed is left alone (`on_change` says so).
pub(crate) struct FileLeftAlone<'a> {
    pub(crate) path: &'a RelPath,
    pub(crate) why: &'static str,
}

impl InternalEvent for FileLeftAlone<'_> {
    fn emit(self) {
        debug!(path = %self.path, why = self.why, "left alone");
    }
}

/// A new path holds a processed file, renamed: recognised by content.
pub(crate) struct FileRenamed<'a> {
    pub(crate) path: &'a RelPath,
    pub(crate) was: &'a RelPath,
}

impl InternalEvent for FileRenamed<'_> {
    fn emit(self) {
        debug!(path = %self.path, was = %self.was, "renamed processed file");
    }
}

/// Committed files that an earlier run did not finish cleaning up are cleaned up now.
pub(crate) struct CleanupResumed {
    pub(crate) files: usize,
}

impl InternalEvent for CleanupResumed {
    fn emit(self) {
        info!(
            files = self.files,
            "cleaning up committed files left by an earlier run"
        );
    }
}

/// One committed file was deleted or moved, left alone, or could not be.
pub(crate) struct FileCleanedUp<'a> {
    pub(crate) path: &'a RelPath,
    /// `delete`, `move` or `quarantine`.
    pub(crate) action: &'static str,
    /// `Ok(true)`: done; `Ok(false)`: the file changed since its commit, left alone.
    pub(crate) result: Result<bool, &'a std::io::Error>,
}

impl InternalEvent for FileCleanedUp<'_> {
    fn emit(self) {
        let Self {
            path,
            action,
            result,
        } = self;
        let label = match result {
            Ok(true) => "done",
            Ok(false) => {
                debug!(%path, "changed since its commit; not cleaned up");
                "skipped"
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                warn!(%path, action, error = %e, "cleanup failed; retried at the next scan");
                "permission_denied"
            }
            Err(e) => {
                warn!(%path, action, error = %e, "cleanup failed; retried at the next scan");
                "error"
            }
        };
        counter!(CLEANUP_TOTAL, "action" => action, "result" => label).increment(1);
    }
}

/// Processed files were recognised by content under new paths, and recorded there.
pub(crate) struct RenamesCommitted<'a> {
    pub(crate) generation: u64,
    pub(crate) renames: &'a [(RelPath, FileEntry)],
}

impl InternalEvent for RenamesCommitted<'_> {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.generation = self.generation;
        true
    }

    fn emit(self) {
        for (path, entry) in self.renames {
            info!(path = %path, processed_in = entry.generation, "recognised by content as a renamed file; not processed again");
        }
        counter!(RENAMED_FILES_TOTAL).increment(self.renames.len() as u64);
        gauge!(GENERATION).set(self.generation as f64);
    }
}

/// The writer's lease could not be renewed; tried again at the next renewal.
pub(crate) struct LeaseNotRenewed<'a> {
    pub(crate) error: &'a StateError,
}

impl InternalEvent for LeaseNotRenewed<'_> {
    fn emit(self) {
        warn!(error = %ErrorChain(self.error), "cannot renew the writer's lease; retried at the next renewal");
    }
}

/// The baseline was committed: the files already there recorded as not processed.
pub(crate) struct BaselineCommitted<'a> {
    pub(crate) report: &'a crate::scanner::Baseline,
}

impl InternalEvent for BaselineCommitted<'_> {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        match self.report {
            crate::scanner::Baseline::Committed { generation, .. } => {
                status.generation = *generation;
                true
            }
            crate::scanner::Baseline::Skipped { .. } => false,
        }
    }

    fn emit(self) {
        if let crate::scanner::Baseline::Committed {
            generation,
            files,
            bytes,
            younger,
        } = *self.report
        {
            info!(
                generation,
                files,
                bytes,
                younger,
                "baseline committed: the files already there are recorded as seen, not processed"
            );
            gauge!(GENERATION).set(generation as f64);
        }
    }
}

/// A file of a committed batch failed; told once it is committed, so that a batch that is
/// redone does not count its failures twice.
pub(crate) struct FileFailed<'a> {
    pub(crate) path: &'a RelPath,
    pub(crate) generation: u64,
    pub(crate) kind: FailureKind,
    pub(crate) reason: &'a str,
}

impl InternalEvent for FileFailed<'_> {
    fn emit(self) {
        counter!(FILES_FAILED_TOTAL, "reason" => self.kind.label()).increment(1);
        warn!(path = %self.path, generation = self.generation, reason = %self.reason, "file failed; recorded and skipped");
    }
}

/// A file's reading failed in a way that may pass: it is held back, and tried again at `at`.
pub(crate) struct FileRetrying<'a> {
    pub(crate) path: &'a RelPath,
    pub(crate) kind: FailureKind,
    pub(crate) reason: &'a str,
    /// The attempt that failed (1 for the first).
    pub(crate) attempt: u32,
    pub(crate) at: SystemTime,
}

impl InternalEvent for FileRetrying<'_> {
    fn emit(self) {
        counter!(FILE_RETRIES_TOTAL, "reason" => self.kind.label()).increment(1);
        let retry_in = self
            .at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        warn!(path = %self.path, reason = %self.reason, attempt = self.attempt, ?retry_in, "file failed in a way that may pass; tried again later");
    }
}

/// A batch is committed.
pub(crate) struct BatchCommitted<'a> {
    pub(crate) generation: u64,
    pub(crate) files: usize,
    pub(crate) failed: usize,
    pub(crate) bytes: u64,
    /// URL of its output object.
    pub(crate) output: &'a str,
    pub(crate) elapsed: Duration,
    /// It redid an interrupted batch.
    pub(crate) recovered: bool,
    pub(crate) committed_at_ms: u64,
    pub(crate) tracked_files: usize,
    /// Per file, seconds from when it could first be ready to the commit.
    pub(crate) commit_delays: Vec<f64>,
}

impl InternalEvent for BatchCommitted<'_> {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.generation = self.generation;
        status.tracked_files = self.tracked_files;
        status.batches += 1;
        status.files_done += (self.files - self.failed) as u64;
        status.files_failed += self.failed as u64;
        status.bytes += self.bytes;
        true
    }

    fn emit(self) {
        let kind = if self.recovered { "recovered" } else { "fresh" };
        counter!(BATCHES_TOTAL, "kind" => kind).increment(1);
        histogram!(BATCH_DURATION).record(self.elapsed.as_secs_f64());
        counter!(FILES_TOTAL, "outcome" => "done").increment((self.files - self.failed) as u64);
        counter!(FILES_TOTAL, "outcome" => "failed").increment(self.failed as u64);
        counter!(BYTES_TOTAL).increment(self.bytes);
        gauge!(GENERATION).set(self.generation as f64);
        gauge!(LAST_COMMIT).set(self.committed_at_ms as f64 / 1000.0);
        gauge!(TRACKED_FILES).set(self.tracked_files as f64);
        let delays = histogram!(COMMIT_DELAY);
        for delay in &self.commit_delays {
            delays.record(*delay);
        }
        info!(
            generation = self.generation,
            files = self.files,
            failed = self.failed,
            bytes = self.bytes,
            output = %self.output,
            elapsed = ?self.elapsed,
            "committed batch"
        );
    }
}

/// The plan of a committed batch could not be removed (harmless: the next load removes it).
pub(crate) struct PlanNotRemoved<'a> {
    pub(crate) generation: u64,
    pub(crate) error: &'a StateError,
}

impl InternalEvent for PlanNotRemoved<'_> {
    fn emit(self) {
        warn!(error = %ErrorChain(self.error), generation = self.generation, "could not remove the plan of a committed batch");
    }
}

/// Folding the state log into a snapshot begins.
pub(crate) struct SnapshotStarted {
    pub(crate) generation: u64,
    pub(crate) entries: usize,
}

impl InternalEvent for SnapshotStarted {
    fn emit(self) {
        debug!(
            generation = self.generation,
            entries = self.entries,
            "folding the state log into a snapshot"
        );
    }
}

/// A snapshot is stored, and what it supersedes removed.
pub(crate) struct SnapshotStored {
    pub(crate) generation: u64,
    pub(crate) entries: usize,
    pub(crate) bytes: u64,
    /// Entries of files gone from the directory, dropped.
    pub(crate) dropped: usize,
    /// Objects it superseded, removed.
    pub(crate) removed: usize,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for SnapshotStored {
    fn update_status(&self, status: &mut ScanStatus) -> bool {
        status.tracked_files = self.entries;
        true
    }

    fn emit(self) {
        counter!(SNAPSHOTS_TOTAL, "result" => "ok").increment(1);
        histogram!(SNAPSHOT_DURATION).record(self.elapsed.as_secs_f64());
        gauge!(SNAPSHOT_BYTES).set(self.bytes as f64);
        gauge!(TRACKED_FILES).set(self.entries as f64);
        info!(
            generation = self.generation,
            entries = self.entries,
            bytes = self.bytes,
            dropped_gone = self.dropped,
            removed_objects = self.removed,
            elapsed = ?self.elapsed,
            "state log folded into a snapshot"
        );
    }
}

/// A snapshot could not be made. With `retry_at`, it failed to store and is tried again at
/// that generation; without, the scan fails with the error.
pub(crate) struct SnapshotFailed<'a> {
    pub(crate) generation: u64,
    pub(crate) error: &'a (dyn std::error::Error + 'static),
    pub(crate) retry_at: Option<u64>,
}

impl InternalEvent for SnapshotFailed<'_> {
    fn emit(self) {
        counter!(SNAPSHOTS_TOTAL, "result" => "error").increment(1);
        if let Some(retry_at) = self.retry_at {
            warn!(
                error = %ErrorChain(self.error),
                generation = self.generation,
                retry_at,
                "could not store a snapshot; will try again later"
            );
        }
    }
}

/// Watching the directory for file-system events began.
pub(crate) struct WatchingStarted<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) debounce: Duration,
}

impl InternalEvent for WatchingStarted<'_> {
    fn emit(self) {
        info!(dir = %self.dir.display(), debounce = ?self.debounce, "watching for file-system events");
    }
}

/// A file-system event that may have made a file ready.
pub(crate) struct FileEventSeen;

impl InternalEvent for FileEventSeen {
    fn emit(self) {
        counter!(EVENTS_TOTAL).increment(1);
    }
}

/// A burst of file-system events is over: the scanner is woken.
pub(crate) struct FileEventsSettled;

impl InternalEvent for FileEventsSettled {
    fn emit(self) {
        debug!("file-system events: waking the scanner");
    }
}

/// File-system events were lost; the interval scan covers what they missed.
pub(crate) struct FileEventsLost<'a> {
    /// `overflow`, `watch_limit`, `unsupported`, `vanished` or `error`.
    pub(crate) reason: &'static str,
    pub(crate) detail: &'a str,
}

impl InternalEvent for FileEventsLost<'_> {
    fn emit(self) {
        counter!(EVENTS_LOST_TOTAL, "reason" => self.reason).increment(1);
        warn!(
            reason = self.reason,
            detail = self.detail,
            "file-system events lost; the interval scan covers what they missed"
        );
    }
}
