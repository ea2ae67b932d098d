//! The batch loop: list → diff → ready? → plan → process → flush → commit → cleanup, and its
//! triggers.
//!
//! This module is the [`Scanner`] façade and its configuration and report types. The phases
//! live in files named after them:
//!
//! * `startup.rs` — the checks before anything is written, loading the state, the rescan guard,
//!   the writer's lease;
//! * `baseline.rs` — a first generation that records the files already there as not processed;
//! * `survey.rs` — list, diff and judge readiness: one verdict per listed file;
//! * `batch.rs` — one batch: processed → flushed → committed, then cleanup;
//! * `workers.rs` — the fan-out of files to the bounded pool of blocking threads;
//! * `snapshot.rs` — folding the state log into a snapshot every so many generations;
//! * `shutdown.rs` — the shutdown request the loop watches.

mod baseline;
mod batch;
mod deadline;
mod redo;
mod replay;
mod retry;
mod shutdown;
mod snapshot;
mod startup;
pub(crate) mod survey;
mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use state_store::{Location, Plan, RelPath, SourceId, State, StateLog};
use tokio::sync::{Notify, watch};

use crate::cleanup::CleanupRules;
use crate::diff::OnChange;
use crate::events::Touched;
use crate::identity::Identity;
use crate::labels::{Label, Labels};
use crate::listing::{DirScope, ListingProblem};
use crate::output::{Compression, OutputLayout, OutputSink, WriteMode};
use crate::plan::{BatchLimits, BatchQueue};
use crate::process::ReadLimits;
use crate::processor::DynProcessor;
use crate::readiness::{Readiness, Sightings};
use crate::telemetry::{
    Backlog, CleanupResumed, FreeSpace, Heartbeat, ListingSurveyed, LoopPhase, LoopStarted,
    Observer, ScanFailed, ScanFinished, ScanInterrupted, ScanRetry, StartFailed, WatchUsage,
    WokenEarly,
};
use crate::{ConfigError, ScanError};

pub use baseline::Baseline;
use deadline::StorageDeadline;
pub use replay::{ReplayReport, ReplaySelection};
use retry::Retries;
pub use retry::RetryPolicy;
pub use shutdown::{
    DrainMode, DrainReport, Leftover, LeftoverReason, Shutdown, ShutdownTrigger, shutdown_channel,
};
use snapshot::SnapshotSchedule;

/// Everything a [`Scanner`] needs to know besides where state and outputs go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScannerConfig {
    /// The directory the emitter writes; walked recursively.
    pub watch_dir: PathBuf,
    /// Names this instance's state and outputs.
    pub source_id: SourceId,
    /// When a file counts as complete.
    pub readiness: Readiness,
    /// Caps on one batch.
    pub limits: BatchLimits,
    /// Files processed at once (at least 1).
    pub workers: usize,
    /// Compression of output objects.
    pub compression: Compression,
    /// How output keys are laid out.
    pub output_layout: OutputLayout,
    /// Written into every output line ([`crate::labels`]).
    pub labels: Labels,
    /// Keys of `labels` whose values are partition folders of the hive layout, in this order
    /// (`source=<id>/<key>=<value>/…/date=<day>/`). Every source under one output root should
    /// name the same ones: engines read one set of partition columns per root.
    pub partition_labels: Vec<String>,
    /// Fold the log into a snapshot once this many generations were committed since the last
    /// one (at least 1).
    pub snapshot_every: u64,
    /// Start even though the state is empty (or behind) while the output location already
    /// holds batches of this source id: the files of those batches are processed again.
    pub allow_rescan: bool,
    /// Limits on reading files (the decoded size of compressed ones).
    pub read_limits: ReadLimits,
    /// How a file whose reading failed in a way that may pass is tried again before the
    /// failure is final.
    pub retry: RetryPolicy,
    /// What happens to files once their results are committed.
    pub cleanup: CleanupRules,
    /// What to do with processed files that changed since.
    pub on_change: OnChange,
    /// How a file is recognised across listings.
    pub identity: Identity,
    /// Warn when the watched volume has less free space than this, in bytes.
    pub min_free: Option<u64>,
    /// What the watched directory may hold, in bytes: in a Pod, its `emptyDir`'s `sizeLimit`,
    /// past which the kubelet evicts the Pod at once (no drain). The space the directory
    /// takes is measured at every walk of the whole tree and compared with it; Gleaner warns
    /// from 80 %.
    pub watch_capacity: Option<u64>,
    /// Take over the source id from another watch root (one that is gone for good): without
    /// it, a source id whose last generation another root wrote is refused, since two roots
    /// under one source id would take turns and forget each other's files (a new root in the
    /// old one's place, the same directory on the same host, takes over by itself). Also takes
    /// the watch root over from the source ids recorded in it.
    pub adopt_source: bool,
    /// Collect the watch root together with the source ids already recorded in it
    /// (`.gleaner-root.sources`): without it, a root collected under another source id is
    /// refused, since every file would be processed again. For collectors that divide one
    /// directory between them on purpose (disjoint `--include`/`--exclude`).
    pub share_root: bool,
    /// How the drain at shutdown treats files that are not ready yet.
    pub drain: DrainMode,
    /// In [`DrainMode::Wait`], how long the watched directory must have been quiet (no
    /// uncommitted file modified, from the shutdown request on) before the drain may end: a
    /// writer that is still stopping (a classic sidecar gets SIGTERM with it) may write its
    /// last file a moment after the request.
    pub drain_settle: Duration,
    /// Copy the raw bytes of every file the drain leaves to the output store, under
    /// `.leftovers/<source-id>/<generation>/` (see [`OutputSink::leftover_object`]), so that a
    /// Pod's last partial file survives its `emptyDir`. They stay uncommitted: a later run that
    /// still finds them processes them as usual.
    pub ship_leftovers: bool,
    /// How long the drain may take from the shutdown request: a file that becomes ready later
    /// is left (and reported). Leave the process's own deadline (a Pod's grace period) a
    /// little longer.
    pub shutdown_timeout: Duration,
    /// How long the scan loop may go without progress (an event, or the end of its wait for
    /// the next scan) before its [`Scanner::heartbeat`] counts it as stalled.
    pub stall_timeout: Duration,
}

/// The cores this process may run on, as the standard library reads them (the CPU affinity
/// mask and a cgroup's CPU quota, so a Pod's CPU limit counts), or 1 when they cannot be read.
/// [`ScannerConfig::new`] gives one worker to each.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl ScannerConfig {
    /// A configuration with defaults: 5 s minimum age, 10 000 files or 4 GiB per batch, one
    /// worker per core, uncompressed outputs, a snapshot every 64 generations, no rescan, a
    /// drain that waits for files up to 25 s after the shutdown request, a loop stalled after
    /// 10 minutes without progress.
    pub fn new(watch_dir: impl Into<PathBuf>, source_id: SourceId) -> Self {
        Self {
            watch_dir: watch_dir.into(),
            source_id,
            readiness: Readiness::default(),
            limits: BatchLimits::default(),
            workers: cores(),
            compression: Compression::None,
            output_layout: OutputLayout::Flat,
            labels: Labels::default(),
            partition_labels: Vec::new(),
            snapshot_every: 64,
            allow_rescan: false,
            read_limits: ReadLimits::default(),
            retry: RetryPolicy::default(),
            cleanup: CleanupRules::default(),
            on_change: OnChange::default(),
            identity: Identity::default(),
            min_free: None,
            watch_capacity: None,
            adopt_source: false,
            share_root: false,
            drain: DrainMode::default(),
            drain_settle: Duration::from_secs(2),
            ship_leftovers: false,
            shutdown_timeout: Duration::from_secs(25),
            stall_timeout: Duration::from_secs(600),
        }
    }

    /// Checks the rules that tie settings together, before anything is opened.
    /// [`Scanner::open`] calls it; a front end calls it first to tell a usage error from a
    /// failure of the surroundings.
    ///
    /// * Counts (`workers`, `snapshot_every`, `limits.max_files`) are at least 1, and
    ///   `stall_timeout` at least a millisecond.
    /// * Appending (`on_change: Append`) keeps files in place: no cleanup that deletes or moves
    ///   them, since a file still being appended to would be removed, and the lines written
    ///   after that lost.
    /// * Content identity (`identity: Content`) cannot delete or move processed files: a new
    ///   file whose size and first KiB equal those of a file cleaned up earlier would be taken
    ///   for it and not processed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (setting, value) in [
            ("workers", self.workers as u64),
            ("snapshot_every", self.snapshot_every),
            ("limits.max_files", self.limits.max_files as u64),
            (
                "stall_timeout (in milliseconds)",
                u64::try_from(self.stall_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { setting });
            }
        }
        self.partitions()?;
        if self.on_change == OnChange::Append && !self.cleanup.is_noop() {
            return Err(ConfigError::Conflict(
                "--on-change append keeps files in place: it cannot be combined with --after \
                 delete|move or --quarantine (a file still being appended to would be removed, \
                 and the lines written after that lost)",
            ));
        }
        if self.identity == Identity::Content && self.cleanup.after != crate::AfterCommit::Keep {
            return Err(ConfigError::Conflict(
                "--identity content cannot be combined with --after delete or move: a new file \
                 whose size and first KiB equal those of a file cleaned up earlier would be \
                 taken for it and not processed",
            ));
        }
        Ok(())
    }
}

impl ScannerConfig {
    /// The labels that are partitions, in order: each a label with a value, named once, in the
    /// hive layout.
    pub fn partitions(&self) -> Result<Vec<Label>, ConfigError> {
        let refuse = |key: &str, reason| ConfigError::PartitionLabel {
            key: key.to_string(),
            reason,
        };
        let mut partitions: Vec<Label> = Vec::new();
        for key in &self.partition_labels {
            if self.output_layout != OutputLayout::Hive {
                return Err(refuse(key, "partitions need --output-layout hive"));
            }
            let value = self
                .labels
                .get(key)
                .ok_or_else(|| refuse(key, "not a label: give it with --label KEY=VALUE"))?;
            if value.is_empty() {
                return Err(refuse(
                    key,
                    "its value is empty, which cannot name a partition folder",
                ));
            }
            if partitions.iter().any(|p| p.key() == key) {
                return Err(refuse(key, "named twice"));
            }
            partitions.push(Label::new(key.as_str(), value)?);
        }
        Ok(partitions)
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
    /// The error of the last scan, with its causes, if it failed.
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
    /// Files whose reading failed in a way that may pass, waiting to be tried again.
    pub retrying: usize,
    /// Files that `--include` / `--exclude` leave out, and ready markers: never processed.
    pub excluded: usize,
    /// Tracked files that changed since processing (left alone).
    pub changed: usize,
    /// Tracked files no longer present.
    pub gone: usize,
    /// Files whose modification time is further in the future than the clock-skew tolerance:
    /// their age counts from their first sighting.
    pub future_mtime: usize,
    /// What the listing could not examine.
    pub listing_problems: Vec<ListingProblem>,
    /// Committed batches, in order.
    pub batches: Vec<BatchReport>,
    /// When the youngest not-yet-ready file becomes old enough, if any.
    pub next_ready_at: Option<SystemTime>,
    /// True if a shutdown request stopped the scan before all ready files were committed.
    pub interrupted: bool,
    /// The new files not ready yet, by path: named by the scans of a drain only.
    pub waiting: Vec<Leftover>,
    /// How many directories the scan looked at, when file-system events or waiting files
    /// named them; 0 for a scan of the whole tree.
    pub scope_dirs: usize,
    /// The latest modification time among the files the walk found that are not committed
    /// and unchanged (new, waiting, in progress, changed; markers included, files the globs
    /// leave out not): the writer's last sign of activity, which a drain waits to see settle.
    /// Only times up to the start of the listing count: a time in the future comes from a
    /// wrong clock, not from a write.
    pub last_modified: Option<SystemTime>,
    /// When the scan's listing started (`None`: it did not list): what it saw is the watched
    /// directory as of then.
    pub listed_at: Option<SystemTime>,
}

impl ScanReport {
    /// New files not ready yet, for any reason.
    pub fn not_ready(&self) -> usize {
        self.in_progress
            + self.too_young
            + self.no_marker
            + self.unstable
            + self.partial_line
            + self.retrying
    }

    /// Files in the committed batches.
    pub fn committed_files(&self) -> usize {
        self.batches.iter().map(|b| b.files).sum()
    }

    /// Files of the committed batches that failed.
    pub fn failed_files(&self) -> usize {
        self.batches.iter().map(|b| b.failed).sum()
    }

    /// Input bytes read by the committed batches.
    pub fn bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes).sum()
    }

    /// Two consecutive scans as one: the batches of both, and what the later one found.
    pub fn merge(self, mut later: ScanReport) -> ScanReport {
        let mut batches = self.batches;
        batches.append(&mut later.batches);
        later.batches = batches;
        later
    }
}

/// The shortest time between the starts of two scans of [`Scanner::run`] (the first scan
/// after a quiet spell is not delayed): files that become ready, or are written, within this
/// long of each other are committed by one scan.
pub(crate) const SCAN_SPACING: Duration = Duration::from_secs(1);

/// How long [`Scanner::run`] sleeps after a successful scan: until the next full walk is due
/// (`interval` after the last one started), or until the first waiting file is old enough.
fn until_next_scan(
    report: &ScanReport,
    interval: Duration,
    full_started: Option<Instant>,
) -> Duration {
    let since_full = full_started.map_or(Duration::ZERO, |at| at.elapsed());
    let wait = interval.saturating_sub(since_full);
    match report.next_ready_at {
        Some(at) => {
            let until = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            wait.min(until + Duration::from_millis(10))
        }
        None => wait,
    }
}

/// What ended the scan loop's wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woke {
    /// Its time: the interval (or the first scan, or a retry).
    Interval,
    /// The time a waiting file becomes ready.
    Timer,
    /// A wake-up: file-system events, or a caller of [`Scanner::waker`].
    Notified,
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
/// 5. remove the plan, and clean up the committed files if asked to.
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
    /// How many redos of the interrupted batch were started by earlier processes, and did not
    /// end in them (each is recorded in the log before it reads anything), plus this
    /// process's own while it runs.
    pending_redos: u32,
    /// The generation of the last plan this process created or started to redo: if it fails
    /// here and is redone here, that is no abnormal end of the process, and is not recorded.
    own_plan: Option<u64>,
    /// The redo marker this process recorded for its redo in progress (generation, attempt):
    /// removed again if the redo fails in the process.
    redo_marker: Option<(u64, u32)>,
    /// Set after a failed batch: what reached storage is unknown until the log is read again.
    needs_reload: bool,
    /// Committed generations whose commit records ([`crate::manifest`]) are not known to be
    /// written, in generation order: written after each commit, and before any snapshot folds
    /// their deltas (a load finds the ones a crash left among the deltas after the snapshot).
    unrecorded: Vec<state_store::CommittedOutput>,
    snapshots: SnapshotSchedule,
    /// Tracked paths the last walk of the whole tree did not find (less those found again
    /// since): dropped from the state at the next snapshot.
    gone: Vec<RelPath>,
    /// Files waiting to be seen unchanged across listings.
    sightings: Sightings,
    /// Set while draining after a shutdown request.
    draining: Option<DrainMode>,
    /// Files held back for another attempt.
    retries: Retries,
    observer: Observer,
    wake: Arc<Notify>,
    /// Directories named by file-system events since the last scan.
    touched: Touched,
    /// The directories of the files the last scan found waiting.
    waiting_dirs: DirScope,
    /// When storage requests must have ended: set once shutdown is requested.
    deadline: StorageDeadline,
    /// The watch root this one took the source id over from at its start.
    taken_over: Option<state_store::Origin>,
    /// Another writer's lease that was live when this one started (see
    /// [`state_store::Lease`]): a sign of a second live writer, which a baseline refuses.
    live_writer_at_open: Option<state_store::Lease>,
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
    /// Fails if the configuration is invalid ([`ScannerConfig::validate`]), if the watch
    /// directory is unusable, if state or output would live inside it (their objects would be
    /// collected as input), if either location is not writable, or if the state cannot be read
    /// and verified.
    pub async fn open(
        config: ScannerConfig,
        processor: DynProcessor,
        state: &Location,
        output: &Location,
    ) -> Result<Self, ScanError> {
        let opened = Self::open_checked(config, processor, state, output).await;
        if let Err(error) = &opened {
            crate::telemetry::emit(StartFailed { error });
        }
        opened
    }

    async fn open_checked(
        config: ScannerConfig,
        processor: DynProcessor,
        state: &Location,
        output: &Location,
    ) -> Result<Self, ScanError> {
        config.validate()?;
        let watch_dir = startup::resolve_watch_dir(&config.watch_dir).await?;
        startup::check_locations(&config, &watch_dir, [state, output])?;
        startup::prepare_cleanup_dirs(&config.cleanup, &watch_dir).await?;
        let origin = startup::origin(&watch_dir, &config.source_id).await?;
        startup::claim_root_for(&config, &watch_dir).await?;
        let deadline = StorageDeadline::default();
        let (state, output) = (&deadline.layer(state), &deadline.layer(output));
        let wake = Arc::new(Notify::new());
        let watch_dir_for_events = watch_dir.clone();
        let mut scanner = Scanner {
            // Deltas too large to hold for the merge at a load are copied to the watched
            // directory: the one place a sidecar in a Pod may write besides its stores (the
            // root file system is read-only), and the copies have no names there.
            log: StateLog::new(state, &config.source_id)
                .with_origin(origin)
                .with_spool_dir(&watch_dir),
            output: OutputSink::new(output.clone(), &config.source_id, config.compression)
                .with_layout(config.output_layout)
                .with_partitions(config.partitions()?),
            config: ScannerConfig {
                watch_dir,
                ..config
            },
            processor,
            state: State::new(),
            pending: None,
            pending_redos: 0,
            own_plan: None,
            redo_marker: None,
            needs_reload: true,
            unrecorded: Vec::new(),
            snapshots: SnapshotSchedule::default(),
            gone: Vec::new(),
            sightings: Sightings::default(),
            draining: None,
            retries: Retries::default(),
            observer: Observer::new(config.stall_timeout),
            wake: Arc::clone(&wake),
            touched: Touched::new(watch_dir_for_events, wake),
            waiting_dirs: DirScope::default(),
            deadline,
            taken_over: None,
            live_writer_at_open: None,
        };
        scanner.start().await?;
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
        self.observer.subscribe()
    }

    /// The scan loop's heartbeat, for a liveness probe: stalled once the loop shows no
    /// progress for [`ScannerConfig::stall_timeout`] (beyond the wait for its next scan).
    pub fn heartbeat(&self) -> Heartbeat {
        self.observer.heartbeat().clone()
    }

    /// A handle that makes a running [`Scanner::run`] scan now instead of at the next tick
    /// (file-system events, a completed write known to the caller).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// A handle for file-system events ([`EventTrigger`](crate::EventTrigger)): the directories
    /// they name, and a wake-up after which [`Scanner::run`] looks at those directories only
    /// (a plain [`Scanner::waker`] wake-up walks the whole tree).
    pub fn touched(&self) -> Touched {
        self.touched.clone()
    }

    /// Scans until shutdown is requested, then drains as [`ScannerConfig::drain`] says, and
    /// returns what the drain left behind.
    ///
    /// Scans start every `interval` (start to start), earlier when woken or when a file that was
    /// too young becomes old enough. A failed scan is retried with exponential backoff (1 s
    /// doubling, at most the interval or 5 minutes); only fatal errors (lost writer fence,
    /// damaged state) end the loop with an error.
    pub async fn run(
        &mut self,
        interval: Duration,
        mut shutdown: Shutdown,
    ) -> Result<DrainReport, ScanError> {
        let max_backoff = interval
            .min(Duration::from_secs(300))
            .max(Duration::from_secs(1));
        let mut backoff = Duration::from_secs(1);
        let _lease = self.keep_lease();
        self.observer.emit(LoopStarted { interval });
        // A scan under way when shutdown is requested must not wait on storage past the
        // drain's deadline: requests are abandoned then, so that the drain can still name what
        // it leaves.
        let _deadline = self
            .deadline
            .set_at_shutdown(shutdown.clone(), self.config.shutdown_timeout);
        // The whole tree is walked every `interval`; in between, a scan woken by events or by
        // a waiting file's time looks at the directories they name.
        let mut full_started: Option<Instant> = None;
        let mut woke = Woke::Interval;
        loop {
            let started = Instant::now();
            let due = full_started.is_none_or(|at| at.elapsed() >= interval);
            let scope = self.partial_scope(woke, due);
            if scope.is_none() {
                full_started = Some(started);
            }
            let wait = match self.scan_scoped(Some(&shutdown), scope).await {
                Ok(report) => {
                    backoff = Duration::from_secs(1);
                    until_next_scan(&report, interval, full_started)
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(error) => {
                    // Whatever failed, the next scan walks everything.
                    full_started = None;
                    let retry_in = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                    self.observer.emit(ScanRetry {
                        error: &error,
                        retry_in,
                    });
                    retry_in
                }
            };
            if shutdown.is_requested() {
                break;
            }
            woke = self.sleep(wait, started, &mut shutdown).await;
            if shutdown.is_requested() {
                break;
            }
        }
        let requested_at = shutdown.requested_at().unwrap_or_else(Instant::now);
        self.drain(requested_at).await
    }

    /// Sleeps until the next scan: `wait`, or a wake-up, or shutdown. Scans start at least
    /// [`SCAN_SPACING`] apart: under a steady writer a file becomes ready every few
    /// milliseconds, and a scan per file would list the whole waiting backlog and commit a
    /// generation each time (seven scans a second at 20 MB/s of mixed files, most of the
    /// sidecar's CPU); spaced, one scan commits what became ready in that second.
    async fn sleep(&mut self, wait: Duration, started: Instant, shutdown: &mut Shutdown) -> Woke {
        let earliest = started + SCAN_SPACING;
        let wait = wait.max(earliest.saturating_duration_since(Instant::now()));
        self.observer.heartbeat().sleeping(wait);
        let woke = tokio::select! {
            () = tokio::time::sleep(wait) => Woke::Timer,
            () = self.wake.notified() => {
                self.observer.emit(WokenEarly);
                Woke::Notified
            }
            () = shutdown.requested() => return Woke::Interval,
        };
        if let Woke::Notified = woke {
            tokio::select! {
                () = tokio::time::sleep_until(earliest.into()) => {}
                () = shutdown.requested() => {}
            }
        }
        woke
    }

    /// Collects what is ready now, for a run that ends after it (`gleaner run --once`): one
    /// scan, then more while files wait to be tried again ([`ScannerConfig::retry`]: their
    /// attempts are bounded), and, when stability needs a second listing
    /// ([`Readiness::stable_for`]), one more once the files seen for the first time can be
    /// confirmed (files still changing then wait for the next run). Returns the scans as one
    /// report.
    pub async fn run_once(&mut self) -> Result<ScanReport, ScanError> {
        let _lease = self.keep_lease();
        let mut report = self.scan(None).await?;
        let mut confirming = self.config.readiness.stable_for.is_some();
        loop {
            let settle = report.retrying > 0 || (confirming && report.unstable > 0);
            let Some(at) = report.next_ready_at.filter(|_| settle) else {
                return Ok(report);
            };
            confirming = false;
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(wait + Duration::from_millis(10)).await;
            let next = self.scan(None).await?;
            report = report.merge(next);
        }
    }

    /// Runs one scan: redoes an interrupted batch if there is one, lists the watch directory,
    /// and commits every ready new file in as many batches as the limits require.
    ///
    /// With `shutdown` given, a requested shutdown stops the scan between batches (never inside
    /// one) and the report says `interrupted`.
    pub async fn scan(&mut self, shutdown: Option<&Shutdown>) -> Result<ScanReport, ScanError> {
        self.scan_scoped(shutdown, None).await
    }

    /// Where a scan that is not due to walk the whole tree looks: after a wake-up by events,
    /// the directories they named (and those of the files waiting); after a waiting file's
    /// time came, the directories of the files waiting. `None` (the whole tree) when events
    /// were lost, after a plain wake-up, or when files are recognised by content (a rename
    /// is only recognised by a walk that also sees the old path gone).
    fn partial_scope(&mut self, woke: Woke, full_due: bool) -> Option<DirScope> {
        // Taken in any case: a walk of the whole tree sees what the events named.
        let (touched, woken_by_events) = self.touched.take();
        if full_due || self.config.identity == Identity::Content || self.draining.is_some() {
            return None;
        }
        let mut scope = match woke {
            // A plain wake-up (a caller of `waker`) may be for any file.
            Woke::Notified if !woken_by_events => return None,
            Woke::Notified => touched.filter(|t| !t.is_empty())?,
            Woke::Timer => touched?,
            Woke::Interval => return None,
        };
        if woke == Woke::Timer && self.waiting_dirs.is_empty() && self.retries.len() == 0 {
            return None;
        }
        scope.extend(&self.waiting_dirs);
        // Files held back for another attempt were ready, not waiting: their directories too.
        for (path, _) in self.retries.held() {
            let bytes = path.as_bytes();
            scope.add(&bytes[..memchr::memrchr(b'/', bytes).unwrap_or(0)], false);
        }
        // Beyond this, one walk of the tree is cheaper than many small ones.
        (scope.len() <= 1000).then_some(scope)
    }

    /// [`Scanner::scan`], of the directories of `scope` only if given.
    async fn scan_scoped(
        &mut self,
        shutdown: Option<&Shutdown>,
        scope: Option<DirScope>,
    ) -> Result<ScanReport, ScanError> {
        self.observer.heartbeat().beat(LoopPhase::Scanning);
        let started = Instant::now();
        let result = self.collect(shutdown, scope).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(report) => self.observer.emit(ScanFinished { report, elapsed }),
            Err(error) => self.observer.emit(ScanFailed { error, elapsed }),
        }
        result
    }

    /// The scan itself: the interrupted batch, the survey, what it found to clean up or
    /// rename, then the ready files, batch by batch.
    async fn collect(
        &mut self,
        shutdown: Option<&Shutdown>,
        scope: Option<DirScope>,
    ) -> Result<ScanReport, ScanError> {
        let recovered = self.recover(scope.is_none()).await?;
        let partial = scope.is_some();
        let mut survey = self.survey(scope).await?;
        let mut report = std::mem::take(&mut survey.report);
        // Gauges of the whole tree: only a walk of it may set them.
        if !partial {
            self.observer.emit(ListingSurveyed {
                report: &report,
                skipped_special: survey.skipped_special,
            });
        }
        report.batches.extend(recovered);
        let batches = self.act_on(survey).await?;
        self.run_batches(batches, shutdown, &mut report).await?;
        // The state is kept through the idle hour that follows: what the scan changed costs
        // twice as much in the overlay, and pins pages among the memory the scan freed; the
        // entries of files known gone only take memory. Folded once either is a noticeable
        // share, since folding is linear in the state.
        let share = self.state.len() / 64;
        if self.state.uncompacted() > share || self.gone.len() > share {
            self.compact_state().await?;
        }
        // Files held back for another attempt, in this scan or before: the loop wakes for them.
        report.retrying = self.retries.len();
        if let Some(at) = self.retries.next_at() {
            report.next_ready_at = Some(report.next_ready_at.map_or(at, |t| t.min(at)));
        }
        Ok(report)
    }

    /// Before a scan: reads the log again after a failure, and redoes an interrupted batch.
    /// `whole_tree`: the scan walks all of it, so what is gone will be known anew.
    async fn recover(&mut self, whole_tree: bool) -> Result<Option<BatchReport>, ScanError> {
        if self.needs_reload {
            let loaded = self.reload().await?;
            // Running, this root never takes over: another root that wrote since is live.
            self.check_root(false).await?;
            self.record_commits().await?;
            self.observer.emit(loaded.event(self.log.location()));
            self.gone.clear();
        }
        // Only a walk of the whole tree may say which files are gone; a walk of some
        // directories keeps what the last one said, less the files it finds again.
        if whole_tree {
            self.gone.clear();
        }
        let Some(plan) = self.pending.take() else {
            return Ok(None);
        };
        let result = self.redo(plan).await;
        if result.is_err() {
            self.unrecord_redo().await;
        }
        self.settle(result)
    }

    /// What a survey found, acted on: cleanups to finish, renames to record, the volume's
    /// gauges. Returns its batches.
    async fn act_on(
        &mut self,
        survey: survey::Survey,
    ) -> Result<Vec<Vec<state_store::PlannedFile>>, ScanError> {
        self.waiting_dirs = survey.waiting_dirs;
        self.gone = survey.gone;
        if !survey.cleanup.is_empty() {
            self.observer.emit(CleanupResumed {
                files: survey.cleanup.len(),
            });
            self.clean_up(survey.cleanup).await?;
        }
        if !survey.renames.is_empty() {
            self.commit_renames(survey.renames).await?;
        }
        if let Some(free) = survey.free_bytes {
            self.observer.emit(FreeSpace {
                free,
                min_free: self.config.min_free,
                dir: &self.config.watch_dir,
            });
        }
        if let Some(used) = survey.disk_bytes {
            self.observer.emit(WatchUsage {
                used,
                capacity: self.config.watch_capacity,
                dir: &self.config.watch_dir,
            });
        }
        Ok(survey.batches)
    }

    /// Runs `batches` in order, each planned, processed, flushed and committed, until done or
    /// a shutdown is requested between two of them.
    async fn run_batches(
        &mut self,
        batches: Vec<Vec<state_store::PlannedFile>>,
        shutdown: Option<&Shutdown>,
        report: &mut ScanReport,
    ) -> Result<(), ScanError> {
        let mut queue = BatchQueue::new(batches);
        self.observer.emit(backlog(&queue));
        // The processing of the batch after the current one, started once the current one's
        // files are processed: it reads while the current batch is flushed and committed.
        let mut ahead = None;
        while let Some(files) = queue.next() {
            if shutdown.is_some_and(Shutdown::is_requested) {
                report.interrupted = true;
                self.observer.emit(ScanInterrupted {
                    remaining: files.len() + queue.files(),
                });
                break;
            }
            let processing = match ahead.take() {
                Some(processing) => processing,
                None => self.start_processing(files.clone()),
            };
            let result = self
                .plan_and_run(files, processing, &mut queue, &mut ahead)
                .await;
            report.batches.extend(self.settle(result)?);
            self.observer.emit(backlog(&queue));
        }
        Ok(())
    }

    /// One fresh batch of `files`, whose `processing` has started: its plan stored, then its
    /// processing awaited; what it left (its results reached their bound) goes back to the
    /// front of `queue`, and the next batch starts processing (`ahead`) while this one is
    /// flushed and committed.
    async fn plan_and_run(
        &mut self,
        files: Vec<state_store::PlannedFile>,
        processing: batch::Processing,
        queue: &mut BatchQueue,
        ahead: &mut Option<batch::Processing>,
    ) -> Result<Option<BatchReport>, ScanError> {
        let generation = self.state.generation() + 1;
        let plan = self.log.plan(
            generation,
            self.output.key_for(generation, SystemTime::now()),
            files,
        );
        self.log.create_plan(&plan).await?;
        self.own_plan = Some(generation);
        let mut processed = self.process_batch(plan, processing).await?;
        queue.push_front(std::mem::take(&mut processed.left));
        *ahead = queue
            .peek()
            .map(|files| self.start_processing(files.to_vec()));
        self.finish_batch(processed, WriteMode::Create).await
    }

    /// After a failed batch, what reached storage is unknown (a plan or delta may have landed
    /// although the call failed): re-read the log before the next batch.
    fn settle<T>(&mut self, result: Result<T, ScanError>) -> Result<T, ScanError> {
        if result.is_err() {
            self.needs_reload = true;
        }
        result
    }
}

/// The backlog `queue` makes.
fn backlog(queue: &BatchQueue) -> Backlog {
    Backlog {
        files: queue.files(),
        bytes: queue.bytes(),
        oldest_mtime_ns: queue.oldest_mtime_ns(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use state_store::{Delta, DeltasRead, Location, Outcome, SourceId, StateLog};

    use super::*;
    use crate::processor::Stats;

    /// A state in an object store whose deltas after the snapshot are too large to hold whole
    /// for the merge (6 of 20,000 entries, over 4 MiB): the scanner merges them from unnamed
    /// copies in the watched directory, or folds them where that directory is in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_deltas_of_an_object_store_are_merged_from_the_watched_directory() {
        let state = Location::parse("memory://").unwrap();
        let source: SourceId = "t".parse().unwrap();
        let log = StateLog::new(&state, &source);
        let mut expected = state_store::State::new();
        for generation in 1..=7u64 {
            let mut upserts: Vec<_> = (0..if generation == 1 { 1 } else { 20_000 })
                .map(|i| {
                    let entry = state_store::FileEntry {
                        size: i,
                        mtime_ns: 1_700_000_000_000_000_000,
                        inode: i + 1,
                        btime_ns: 0,
                        offset: i,
                        generation,
                        outcome: Outcome::Done,
                        fingerprint: 0,
                    };
                    (
                        RelPath::from(format!("gone/{generation}/{i:06}.log").as_str()),
                        entry,
                    )
                })
                .collect();
            upserts.sort_by(|a, b| a.0.cmp(&b.0));
            let delta = Delta {
                generation,
                upserts,
                committed_at_ms: UNIX_EPOCH.elapsed().unwrap().as_millis() as u64,
                ..Delta::default()
            };
            log.commit(&delta).await.unwrap();
            expected.apply(&delta).unwrap();
            if generation == 1 {
                log.store_snapshot(&expected).await.unwrap();
            }
        }
        let on_disk = tempfile::tempdir().unwrap();
        let in_memory = std::path::Path::new("/dev/shm");
        let mut cases = vec![(on_disk.path(), DeltasRead::Spooled)];
        if in_memory.is_dir() && tempfile::tempdir_in(in_memory).is_ok() {
            cases.push((in_memory, DeltasRead::Folded));
        }
        for (parent, how) in cases {
            let watch = tempfile::tempdir_in(parent).unwrap();
            let output = Location::parse("memory://").unwrap();
            let config = ScannerConfig::new(watch.path(), source.clone());
            let mut scanner = Scanner::open(config, DynProcessor::new(Stats), &state, &output)
                .await
                .unwrap();
            let summary = scanner.reload().await.unwrap();
            assert_eq!(summary.deltas, how, "{parent:?}");
            if how == DeltasRead::Folded {
                let refused = summary.spool_refused.unwrap();
                assert!(refused.contains("tmpfs"), "{refused}");
            }
            assert_eq!(scanner.state().len(), expected.len());
            // Only the root id is left in the watched directory: the copies had no names.
            let left: Vec<_> = std::fs::read_dir(watch.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, [startup::ROOT_ID_FILE], "{parent:?}");
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
        let source: SourceId = "t".parse().unwrap();
        let log = StateLog::new(&state, &source);
        let upserts = ["changed.log", "done.log", "unchanged.log"]
            .map(|name| {
                let outcome = if name == "done.log" {
                    Outcome::Done
                } else {
                    failed.clone()
                };
                (
                    RelPath::from(name),
                    crate::testing::committed_entry(&watch.join(name), 1, outcome),
                )
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

        let mut config = ScannerConfig::new(watch, source);
        config.readiness.min_age = Duration::ZERO;
        let mut scanner = Scanner::open(config, DynProcessor::new(Stats), &state, &output)
            .await
            .unwrap();
        let report = scanner.scan(None).await.unwrap();
        assert_eq!(report.changed, 1, "done.log changed and is left alone");
        assert_eq!(report.batches.len(), 1);
        assert_eq!(report.batches[0].files, 1);

        // The batch's object, beside its commit record.
        let objects: Vec<_> = output
            .store()
            .list(Some(&"t".into()))
            .try_collect()
            .await
            .unwrap();
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
