//! Everything the pipeline tells the outside: metrics, log lines and the status channel.
//!
//! The batch loop does not record metrics or write log lines itself. It emits named events
//! (`ScanFinished`, `BatchCommitted`, `FileFailed`, `ListingSurveyed`, `SnapshotStored`,
//! `FileCleanedUp`, …, in `events.rs`), in the manner of Vector's `internal_events`; each event
//! records its metrics, writes its log line and updates the [`ScanStatus`]
//! in one place. A new metric goes into the event that knows its value, and its name and help
//! text below.
//!
//! Metrics go through the `metrics` facade: nothing is recorded unless the application
//! installs a recorder; the `gleaner` binary installs a Prometheus one. Call [`describe`] once
//! after installing it so that every metric has its help text.

mod events;
mod heartbeat;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use tokio::sync::watch;

use crate::ScanStatus;

pub(crate) use events::*;
pub use heartbeat::{Heartbeat, Liveness, LoopPhase};
pub(crate) use heartbeat::{ReadingFor, bytes_read};

/// Something that happened in the pipeline, told to the outside.
pub(crate) trait InternalEvent: Sized {
    /// Applies the event to the status; returns whether anything changed.
    fn update_status(&self, _status: &mut ScanStatus) -> bool {
        false
    }

    /// Records the event's metrics and writes its log line.
    fn emit(self);
}

/// Emits an event that does not concern a scanner's status (a worker thread's, an event
/// watcher's).
pub(crate) fn emit(event: impl InternalEvent) {
    event.emit();
}

/// Where a scanner's events go: the global metrics and log, and its status channel.
#[derive(Debug)]
pub(crate) struct Observer {
    status: watch::Sender<ScanStatus>,
    heartbeat: Heartbeat,
}

impl Observer {
    /// An observer with a fresh status, whose heartbeat counts the loop as stalled after
    /// `stall_timeout` without an event.
    pub(crate) fn new(stall_timeout: std::time::Duration) -> Self {
        Self {
            status: watch::channel(ScanStatus::default()).0,
            heartbeat: Heartbeat::new(stall_timeout),
        }
    }

    /// The scan loop's heartbeat.
    pub(crate) fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Emits `event`: status first, so that a reader woken by the log line sees it. The
    /// `gleaner_ready` gauge mirrors the status's `ready`, whichever event changed it. Every
    /// event is progress for the heartbeat.
    pub(crate) fn emit(&self, event: impl InternalEvent) {
        self.heartbeat.progress();
        if self
            .status
            .send_if_modified(|status| event.update_status(status))
        {
            let ready = self.status.borrow().ready;
            metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
        }
        event.emit();
    }

    /// A live view of the status.
    pub(crate) fn subscribe(&self) -> watch::Receiver<ScanStatus> {
        self.status.subscribe()
    }
}

/// Scans run, by `result` (`ok`, `error`).
pub const SCANS_TOTAL: &str = "gleaner_scans_total";
/// Duration of whole scans (listing, all batches).
pub const SCAN_DURATION: &str = "gleaner_scan_duration_seconds";
/// Batches committed, by `kind` (`fresh`, `recovered`: an interrupted batch redone).
pub const BATCHES_TOTAL: &str = "gleaner_batches_total";
/// Duration of one batch, from plan to commit.
pub const BATCH_DURATION: &str = "gleaner_batch_duration_seconds";
/// Batches ended before their last planned file, because their results reached
/// `--max-output-bytes`, or because the process ended several times before their commit (a
/// redo cut smaller): the rest ran in later batches.
pub const BATCHES_CUT_TOTAL: &str = "gleaner_batches_cut_total";
/// Files in committed batches, by `outcome` (`done`, `failed`).
pub const FILES_TOTAL: &str = "gleaner_files_total";
/// Files that failed, by `reason` (`vanished`, `replaced`, `truncated`, `permission_denied`,
/// `corrupt`, `too_large`, `io`, `processor`).
pub const FILES_FAILED_TOTAL: &str = "gleaner_files_failed_total";
/// Failures that may pass (permission denied, IO errors) held back for another attempt, by
/// `reason` (as [`FILES_FAILED_TOTAL`]).
pub const FILE_RETRIES_TOTAL: &str = "gleaner_file_retries_total";
/// Bytes read from input files in committed batches.
pub const BYTES_TOTAL: &str = "gleaner_bytes_total";
/// The last committed generation.
pub const GENERATION: &str = "gleaner_committed_generation";
/// When the last generation was committed (Unix seconds).
pub const LAST_COMMIT: &str = "gleaner_last_commit_timestamp_seconds";
/// When the last successful scan ended (Unix seconds): `time() - x` keeps growing while scans
/// fail or stop, unlike [`LAST_COMMIT`], which also stalls when nothing new arrives.
pub const LAST_SUCCESSFUL_SCAN: &str = "gleaner_last_successful_scan_timestamp_seconds";
/// Always 1; its `source_id` label names the source this process collects, so that alerts
/// and dashboards can join on it (`* on(instance) group_left(source_id)`).
pub const SOURCE_INFO: &str = "gleaner_source_info";
/// The configured time between scans (`--interval`), for staleness rules.
pub const SCAN_INTERVAL: &str = "gleaner_scan_interval_seconds";
/// Duration of one phase of a scan, by `phase`: `list` (walking the watched directory),
/// `diff` (against the state, and readiness), `process` (a batch's files on the workers),
/// `flush` (writing its output object), `commit` (its delta).
pub const SCAN_PHASE_DURATION: &str = "gleaner_scan_phase_duration_seconds";
/// The phases of [`SCAN_PHASE_DURATION`].
pub const SCAN_PHASES: [&str; 5] = ["list", "diff", "process", "flush", "commit"];
/// For each committed file, the time from when it could first be ready (its modification
/// time plus `--min-age`) to its commit: the freshness SLI (good: the bucket at the target).
pub const COMMIT_DELAY: &str = "gleaner_commit_delay_seconds";
/// The buckets of [`COMMIT_DELAY`]: freshness targets from seconds (events) to a day. The
/// bounds under 15 s resolve a sidecar driven by file-system events, whose files are committed
/// within seconds of their `--min-age` (`bench/steady.sh` reads its percentiles from them).
pub const COMMIT_DELAY_BUCKETS: [f64; 18] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0, 43200.0, 86400.0,
];
/// 1 once this process lost its writer fence (another writer committed first, or another
/// watch root owns the source id); it then stops with exit code 3.
pub const FENCED: &str = "gleaner_fenced";
/// Files the state tracks.
pub const TRACKED_FILES: &str = "gleaner_tracked_files";
/// Regular files found by the last listing.
pub const LISTED_FILES: &str = "gleaner_listed_files";
/// Ready files not yet committed.
pub const PENDING_FILES: &str = "gleaner_pending_files";
/// Bytes of ready files not yet committed.
pub const PENDING_BYTES: &str = "gleaner_pending_bytes";
/// Age of the oldest ready file not yet committed (0 when none), as of the last scan: it does
/// not grow while scans stop; alert on [`OLDEST_PENDING_TIMESTAMP`] instead.
pub const OLDEST_PENDING_AGE: &str = "gleaner_oldest_pending_age_seconds";
/// Modification time (Unix seconds) of the oldest ready file not yet committed, 0 when none:
/// `time() - x` keeps growing while it waits, whether scans run or not.
pub const OLDEST_PENDING_TIMESTAMP: &str = "gleaner_oldest_pending_timestamp_seconds";
/// New files that are not ready yet, by `reason` (one of [`NOT_READY_REASONS`]).
pub const NOT_READY_FILES: &str = "gleaner_not_ready_files";
/// The reasons a file is not ready, as the `reason` label of [`NOT_READY_FILES`] (and of
/// [`DRAIN_LEFTOVER_FILES`], with `uncommitted`).
pub const NOT_READY_REASONS: [&str; 6] = [
    "in_progress_name",
    "too_young",
    "no_marker",
    "unstable",
    "partial_line",
    "retrying",
];
/// Files the drain at shutdown left in the watched directory, by `reason` (as
/// [`NOT_READY_FILES`], and `uncommitted` for ready files no scan of the drain could commit:
/// see [`LeftoverReason`](crate::LeftoverReason)): set after every scan of the drain, so its
/// last value is what the process left at exit.
pub const DRAIN_LEFTOVER_FILES: &str = "gleaner_drain_leftover_files";
/// Files left at shutdown whose raw bytes were copied to the output store
/// (`--ship-leftovers`), by `result` (`done`, `error`).
pub const LEFTOVERS_SHIPPED_TOTAL: &str = "gleaner_leftovers_shipped_total";
/// Files of the last listing whose modification time is further in the future than the
/// clock-skew tolerance (`--max-clock-skew`): their age counts from their first sighting.
pub const FUTURE_MTIME_FILES: &str = "gleaner_future_mtime_files";
/// Committed files cleaned up, by `action` (`delete`, `move`, `quarantine`, and `put_back`
/// for another file found under a name being cleaned up) and `result` (`done`, `skipped` when
/// the file changed since its commit, `error`, `permission_denied`: Gleaner may not write the
/// file's directory).
pub const CLEANUP_TOTAL: &str = "gleaner_cleanup_total";
/// Files recognised by content (`--identity=content`) as renamed processed files, and not
/// processed again.
pub const RENAMED_FILES_TOTAL: &str = "gleaner_renamed_files_total";
/// Free space of the volume holding the watch directory, in bytes (for the unprivileged user).
pub const WATCH_FREE_BYTES: &str = "gleaner_watch_free_bytes";
/// 1 while the watched volume has less free space than `--min-free`, else 0.
pub const WATCH_LOW_SPACE: &str = "gleaner_watch_low_space";
/// Disk space the watched directory takes, in bytes (its files' and directories' blocks,
/// hidden ones included, as the kubelet counts an `emptyDir`), at the last walk of the whole
/// tree.
pub const WATCH_BYTES: &str = "gleaner_watch_bytes";
/// What the watched directory may hold (`--watch-capacity`, the `emptyDir`'s `sizeLimit`), in
/// bytes; absent without the flag.
pub const WATCH_CAPACITY: &str = "gleaner_watch_capacity_bytes";
/// File-system events that can make a file ready (each may wake the scanner early).
pub const EVENTS_TOTAL: &str = "gleaner_events_total";
/// File-system events lost, by `reason` (`overflow`, `watch_limit`, `unsupported`, `vanished`,
/// `error`): the interval scan covers what they missed.
pub const EVENTS_LOST_TOTAL: &str = "gleaner_events_lost_total";
/// Listed files that `--include` / `--exclude` leave out, and ready markers.
pub const EXCLUDED_FILES: &str = "gleaner_excluded_files";
/// Tracked files that changed since they were processed, and were left alone.
pub const CHANGED_FILES: &str = "gleaner_changed_files";
/// Entries of the watched directory that could not be examined, by the last listing.
pub const LISTING_PROBLEMS: &str = "gleaner_listing_problems";
/// Symbolic links, FIFOs, sockets and devices skipped by the last listing.
pub const SKIPPED_SPECIAL: &str = "gleaner_skipped_special_files";
/// Errors that failed a scan, by `stage` (`watch`, `state`, `output`, `config`, `resources`,
/// `worker`, `internal`).
pub const ERRORS_TOTAL: &str = "gleaner_errors_total";
/// Snapshots of the state log, by `result` (`ok`, `error`).
pub const SNAPSHOTS_TOTAL: &str = "gleaner_snapshots_total";
/// Duration of writing a snapshot and removing what it supersedes.
pub const SNAPSHOT_DURATION: &str = "gleaner_snapshot_duration_seconds";
/// Size of the last snapshot.
pub const SNAPSHOT_BYTES: &str = "gleaner_snapshot_bytes";
/// 1 when the last scan succeeded and state is loaded, else 0.
pub const READY: &str = "gleaner_ready";

/// Registers help text and units for every metric above, and every counter at zero, so that
/// rates and increases are defined from the first scrape on.
pub fn describe() {
    use metrics::{counter, gauge};
    for result in ["ok", "error"] {
        counter!(SCANS_TOTAL, "result" => result).increment(0);
    }
    for kind in ["fresh", "recovered"] {
        counter!(BATCHES_TOTAL, "kind" => kind).increment(0);
    }
    counter!(BATCHES_CUT_TOTAL).increment(0);
    for outcome in ["done", "failed"] {
        counter!(FILES_TOTAL, "outcome" => outcome).increment(0);
    }
    for kind in crate::process::FailureKind::ALL {
        counter!(FILES_FAILED_TOTAL, "reason" => kind.label()).increment(0);
        if kind.may_pass() {
            counter!(FILE_RETRIES_TOTAL, "reason" => kind.label()).increment(0);
        }
    }
    for stage in [
        "watch",
        "state",
        "output",
        "config",
        "resources",
        "worker",
        "internal",
    ] {
        counter!(ERRORS_TOTAL, "stage" => stage).increment(0);
    }
    counter!(BYTES_TOTAL).increment(0);
    counter!(EVENTS_TOTAL).increment(0);
    counter!(RENAMED_FILES_TOTAL).increment(0);
    for action in ["delete", "move", "quarantine", "put_back"] {
        for result in ["done", "skipped", "error", "permission_denied"] {
            counter!(CLEANUP_TOTAL, "action" => action, "result" => result).increment(0);
        }
    }
    for reason in [
        "overflow",
        "watch_limit",
        "unsupported",
        "vanished",
        "error",
    ] {
        counter!(EVENTS_LOST_TOTAL, "reason" => reason).increment(0);
    }
    for result in ["ok", "error"] {
        counter!(SNAPSHOTS_TOTAL, "result" => result).increment(0);
    }
    for result in ["done", "error"] {
        counter!(LEFTOVERS_SHIPPED_TOTAL, "result" => result).increment(0);
    }
    describe_counter!(SCANS_TOTAL, "Scans run, by result (ok, error).");
    describe_histogram!(SCAN_DURATION, Unit::Seconds, "Duration of whole scans.");
    describe_counter!(
        BATCHES_TOTAL,
        "Batches committed, by kind (fresh, recovered: an interrupted batch redone)."
    );
    describe_counter!(
        BATCHES_CUT_TOTAL,
        "Batches ended before their last planned file (results past --max-output-bytes, or a redo \
         cut after abnormal ends); the rest ran later."
    );
    describe_histogram!(
        BATCH_DURATION,
        Unit::Seconds,
        "Duration of one batch, plan to commit."
    );
    describe_counter!(
        FILES_TOTAL,
        "Files in committed batches, by outcome (done, failed)."
    );
    describe_counter!(
        FILES_FAILED_TOTAL,
        "Files that failed processing, by reason."
    );
    describe_counter!(
        FILE_RETRIES_TOTAL,
        "Failures that may pass, held back to be tried again, by reason."
    );
    describe_counter!(
        BYTES_TOTAL,
        Unit::Bytes,
        "Bytes read from input files in committed batches."
    );
    describe_gauge!(GENERATION, "The last committed generation.");
    describe_gauge!(LAST_COMMIT, Unit::Seconds, "Unix time of the last commit.");
    describe_gauge!(
        LAST_SUCCESSFUL_SCAN,
        Unit::Seconds,
        "Unix time the last successful scan ended."
    );
    describe_gauge!(
        SOURCE_INFO,
        "Always 1; the source_id label names the source this process collects."
    );
    describe_gauge!(
        SCAN_INTERVAL,
        Unit::Seconds,
        "The configured time between scans."
    );
    describe_histogram!(
        SCAN_PHASE_DURATION,
        Unit::Seconds,
        "Duration of one phase of a scan, by phase (list, diff, process, flush, commit)."
    );
    describe_histogram!(
        COMMIT_DELAY,
        Unit::Seconds,
        "Per committed file, seconds from when it could first be ready (mtime plus min-age) to its commit."
    );
    describe_gauge!(
        OLDEST_PENDING_TIMESTAMP,
        Unit::Seconds,
        "Modification time (Unix) of the oldest ready file not yet committed; 0 when none."
    );
    describe_gauge!(
        FENCED,
        "1 once this process lost its writer fence or another root owns its source id."
    );
    gauge!(FENCED).set(0.0);
    describe_gauge!(TRACKED_FILES, "Files the state tracks.");
    describe_gauge!(LISTED_FILES, "Regular files found by the last listing.");
    describe_gauge!(PENDING_FILES, "Ready files not yet committed.");
    describe_gauge!(
        PENDING_BYTES,
        Unit::Bytes,
        "Bytes of ready files not yet committed."
    );
    describe_gauge!(
        OLDEST_PENDING_AGE,
        Unit::Seconds,
        "Age of the oldest ready file not yet committed (0 when none)."
    );
    describe_gauge!(NOT_READY_FILES, "New files not ready yet, by reason.");
    describe_counter!(
        LEFTOVERS_SHIPPED_TOTAL,
        "Files left at shutdown whose raw bytes were copied to the output store, by result."
    );
    describe_gauge!(
        FUTURE_MTIME_FILES,
        "Files whose modification time is beyond the clock-skew tolerance, aged from first sighting."
    );
    describe_gauge!(
        DRAIN_LEFTOVER_FILES,
        "Files the drain at shutdown has left in the watched directory, by reason."
    );
    describe_gauge!(
        WATCH_FREE_BYTES,
        Unit::Bytes,
        "Free space of the volume holding the watch directory."
    );
    describe_gauge!(
        WATCH_LOW_SPACE,
        "1 while the watched volume has less free space than --min-free."
    );
    describe_gauge!(
        WATCH_BYTES,
        Unit::Bytes,
        "Disk space the watched directory takes (blocks of its files and directories, hidden \
         ones included), at the last walk of the whole tree."
    );
    describe_gauge!(
        WATCH_CAPACITY,
        Unit::Bytes,
        "What the watched directory may hold (--watch-capacity: the emptyDir's sizeLimit)."
    );
    describe_counter!(
        RENAMED_FILES_TOTAL,
        "Files recognised by content as renamed processed files, not processed again."
    );
    describe_counter!(
        CLEANUP_TOTAL,
        "Committed files deleted or moved after commit, by action and result."
    );
    describe_counter!(
        EVENTS_TOTAL,
        "File-system events that may have made a file ready."
    );
    describe_counter!(
        EVENTS_LOST_TOTAL,
        "File-system events lost, by reason; the interval scan covers them."
    );
    describe_gauge!(
        EXCLUDED_FILES,
        "Listed files never processed: left out by --include/--exclude, or ready markers."
    );
    describe_gauge!(
        CHANGED_FILES,
        "Tracked files changed since processing, left alone."
    );
    describe_gauge!(
        LISTING_PROBLEMS,
        "Entries the last listing could not examine."
    );
    describe_gauge!(
        SKIPPED_SPECIAL,
        "Links, FIFOs, sockets and devices skipped by the last listing."
    );
    describe_counter!(ERRORS_TOTAL, "Errors that failed a scan, by stage.");
    describe_gauge!(READY, "1 when state is loaded and the last scan succeeded.");
    describe_counter!(
        SNAPSHOTS_TOTAL,
        "Snapshots of the state log, by result (ok, error)."
    );
    describe_histogram!(
        SNAPSHOT_DURATION,
        Unit::Seconds,
        "Duration of writing a snapshot and removing what it supersedes."
    );
    describe_gauge!(SNAPSHOT_BYTES, Unit::Bytes, "Size of the last snapshot.");
}
