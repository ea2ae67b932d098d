//! Shutdown: the request a running scanner watches (in the manner of mini-redis's
//! `shutdown`), and the drain that follows it.
//!
//! In a Pod the watched directory is an `emptyDir`, deleted with the Pod: a file still there
//! when Gleaner exits is gone for good. So the drain does not stop at one last scan:
//!
//! * [`DrainMode::Wait`] keeps scanning until every file that waits only for time (its minimum
//!   age, its stability window) has become ready and is committed, and the directory has been
//!   quiet for a moment (a writer stopping at the same time may write its last file after the
//!   request), within the shutdown timeout;
//! * [`DrainMode::WriterGone`] is for when the writer is known to have exited (a native
//!   sidecar is stopped after the emitter; the last step of a Job): every file is complete now,
//!   except files under an in-progress name.
//!
//! A scan that fails is tried again until the deadline, and storage requests are abandoned at
//! it (a store that refuses connections would otherwise be retried for minutes). Whatever is
//! left is reported, by path and reason, in the [`DrainReport`].

use std::time::{Duration, Instant, SystemTime};

use state_store::RelPath;
use tokio::sync::watch;

use super::Scanner;
use crate::readiness::NotReady;
use crate::telemetry::{
    DrainProgress, DrainScanFailed, DrainStarted, Drained, LeftoverShipped, LeftoversNamed,
    LeftoversUnlisted,
};
use crate::{ConfigError, ErrorChain, ScanError};

/// Creates a linked pair: a [`ShutdownTrigger`] that requests shutdown, and the [`Shutdown`]
/// signal a scanner watches.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (ShutdownTrigger(tx), Shutdown(rx))
}

/// Requests a shutdown (on SIGTERM, say).
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<Option<Instant>>);

impl ShutdownTrigger {
    /// Asks the scanner to finish its current batch, drain, and return. The shutdown timeout
    /// counts from the first request.
    pub fn request(&self) {
        self.0.send_if_modified(|at| {
            let first = at.is_none();
            at.get_or_insert_with(Instant::now);
            first
        });
    }
}

/// The scanner's view of a shutdown request. Dropping the trigger never requests shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<Option<Instant>>);

impl Shutdown {
    /// True once shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// When shutdown was first requested, if it was.
    pub fn requested_at(&self) -> Option<Instant> {
        *self.0.borrow()
    }

    /// Completes when shutdown is requested (never, if the trigger was dropped unused).
    pub async fn requested(&mut self) {
        loop {
            if self.0.borrow_and_update().is_some() {
                return;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// How the drain at shutdown treats files that are not ready yet (`--drain`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DrainMode {
    /// Keep scanning until every file that waits only for time (minimum age, stability
    /// window) is ready and committed, within the shutdown timeout. Safe whatever the writer
    /// does: a file is never read before the readiness rules say it is complete.
    #[default]
    Wait,
    /// The writer has exited: every file is complete now, except files under an in-progress
    /// name (the minimum age, stability, markers and partial last lines no longer wait). Only
    /// for a writer that is known to be gone.
    WriterGone,
}

impl std::str::FromStr for DrainMode {
    type Err = ConfigError;

    /// Parses `wait` or `writer-gone`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let choices = [("wait", Self::Wait), ("writer-gone", Self::WriterGone)];
        ConfigError::choose(s, &choices, "wait or writer-gone")
    }
}

/// A file the drain left in the watched directory, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    /// Path relative to the watch root.
    pub path: RelPath,
    /// Why it is still there.
    pub reason: LeftoverReason,
}

/// Why the drain left a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftoverReason {
    /// It was not ready yet, for this reason.
    NotReady(NotReady),
    /// It was ready, but no scan of the drain could commit it before the deadline (the state
    /// or output store failing all along).
    Uncommitted,
}

impl LeftoverReason {
    /// Every label of [`LeftoverReason::label`], in a fixed order.
    pub const LABELS: [&'static str; 7] = [
        "in_progress_name",
        "too_young",
        "no_marker",
        "partial_line",
        "unstable",
        "retrying",
        "uncommitted",
    ];

    /// The metric label of the reason.
    pub fn label(&self) -> &'static str {
        match self {
            LeftoverReason::NotReady(why) => why.label(),
            LeftoverReason::Uncommitted => "uncommitted",
        }
    }
}

impl From<NotReady> for LeftoverReason {
    fn from(why: NotReady) -> Self {
        LeftoverReason::NotReady(why)
    }
}

/// How a drain ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// True when no file was left: every file of the watched directory is committed (or
    /// excluded by the name globs, or left alone as changed since its commit).
    pub complete: bool,
    /// The files left behind, by path.
    pub leftovers: Vec<Leftover>,
    /// Scans the drain ran, failed ones included.
    pub scans: usize,
    /// Scans of the drain that failed (each was tried again until the deadline).
    pub failed_scans: usize,
    /// The error of the drain's last scan, with its causes, when it failed: the files it
    /// could not commit are [`LeftoverReason::Uncommitted`].
    pub last_error: Option<String>,
    /// Files the drain committed.
    pub committed_files: usize,
    /// The last committed generation.
    pub generation: u64,
    /// Leftovers whose raw bytes were copied to the output store
    /// ([`ScannerConfig::ship_leftovers`](crate::ScannerConfig::ship_leftovers)).
    pub shipped: usize,
}

/// The instants that bound a drain, from the shutdown request and the shutdown timeout.
#[derive(Clone, Copy, Debug)]
pub(super) struct DrainDeadlines {
    /// Scans (and every storage request they make) end by then: a little before the
    /// timeout, so that the leftovers are named, counted and shipped before the process is
    /// cut short.
    pub(super) scans: Instant,
    /// Shipping leftovers ends by then, just before the timeout.
    pub(super) ships: Instant,
}

impl DrainDeadlines {
    pub(super) fn new(requested_at: Instant, timeout: Duration) -> Self {
        let margin = (timeout / 10).min(Duration::from_secs(2));
        Self {
            scans: requested_at + timeout.saturating_sub(margin),
            ships: requested_at + timeout.saturating_sub(margin / 4),
        }
    }
}

/// Waits between failed scans of a drain: short, since the drain has seconds, not minutes.
const DRAIN_RETRY_FIRST: Duration = Duration::from_millis(250);
const DRAIN_RETRY_MAX: Duration = Duration::from_secs(2);

impl Scanner {
    /// Drains after a shutdown requested at `requested_at`, until nothing is left that the
    /// drain could still commit, or until its deadline:
    ///
    /// * a scan that fails (a full state volume, a store that refuses connections) is tried
    ///   again with backoff (250 ms doubling, at most 2 s) for as long as the deadline allows;
    /// * files waiting only for time (their minimum age, stability window, a retry) are
    ///   waited for;
    /// * in [`DrainMode::Wait`] the writer may still be stopping: the drain goes on until the
    ///   watched directory has been quiet for [`ScannerConfig::drain_settle`] — no uncommitted
    ///   file (in-progress names included) modified since the later of the request and
    ///   that long ago.
    ///
    /// What is left is named in the report, the log and `gleaner_drain_leftover_files`: files
    /// not ready by their reason, and ready files no scan could commit as
    /// [`LeftoverReason::Uncommitted`]; with [`ScannerConfig::ship_leftovers`] their raw bytes
    /// are copied to the output store. Only a fatal error (a lost fence, damaged state) ends
    /// the drain with an error.
    pub(super) async fn drain(&mut self, requested_at: Instant) -> Result<DrainReport, ScanError> {
        let mode = self.config.drain;
        let deadlines = DrainDeadlines::new(requested_at, self.config.shutdown_timeout);
        self.deadline.set(Some(deadlines.scans));
        self.observer.emit(DrainStarted {
            mode,
            timeout: self.config.shutdown_timeout,
        });
        self.draining = Some(mode);
        let drained = self.drain_scans(mode, requested_at, deadlines).await;
        self.draining = None;
        let mut drain = drained?;
        drain.generation = self.state.generation();
        if !drain.complete {
            // Named now: shipping may still be under way when the process is cut short.
            self.observer.emit(LeftoversNamed { report: &drain });
        }
        self.deadline.set(Some(deadlines.ships));
        if self.config.ship_leftovers {
            drain.shipped = self.ship_leftovers(&drain.leftovers).await;
        }
        self.observer.emit(Drained { report: &drain });
        Ok(drain)
    }

    /// The scans of a drain, and what they leave.
    async fn drain_scans(
        &mut self,
        mode: DrainMode,
        requested_at: Instant,
        deadlines: DrainDeadlines,
    ) -> Result<DrainReport, ScanError> {
        // Modification times are wall-clock times; the request is an `Instant`.
        let requested_wall = SystemTime::now() - requested_at.elapsed();
        let mut quiet_since = requested_wall;
        let mut drain = DrainReport::default();
        let mut backoff = DRAIN_RETRY_FIRST;
        let last = loop {
            let scanned = self.scan(None).await;
            drain.scans += 1;
            let report = match scanned {
                Ok(report) => report,
                Err(error) if error.is_fatal() => return Err(error),
                Err(error) => {
                    drain.failed_scans += 1;
                    let retry_in = backoff;
                    backoff = (backoff * 2).min(DRAIN_RETRY_MAX);
                    let retrying = Instant::now() + retry_in < deadlines.scans;
                    self.observer.emit(DrainScanFailed {
                        error: &error,
                        retry_in: retrying.then_some(retry_in),
                    });
                    if !retrying {
                        break Err(error);
                    }
                    tokio::time::sleep(retry_in).await;
                    continue;
                }
            };
            backoff = DRAIN_RETRY_FIRST;
            drain.committed_files += report.committed_files();
            self.observer.emit(DrainProgress {
                waiting: &report.waiting,
            });
            if let Some(modified) = report.last_modified {
                quiet_since = quiet_since.max(modified);
            }
            // Only files waiting for time can become ready without the writer.
            let waiting_for_time = report.too_young + report.unstable + report.retrying > 0;
            let mut next = report.next_ready_at.filter(|_| waiting_for_time);
            if mode == DrainMode::Wait {
                // Settled once a listing that started after the quiet window found nothing
                // newer: a scan that ran long (a backlog) may have missed a last file written
                // meanwhile, so its end proves nothing; the next listing looks.
                let settled_at = quiet_since + self.config.drain_settle;
                if report.listed_at.is_none_or(|listed| listed < settled_at) {
                    next = Some(next.map_or(settled_at, |at| at.min(settled_at)));
                }
            }
            let wait = next.map(|at| {
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    + Duration::from_millis(10)
            });
            match wait {
                Some(wait) if Instant::now() + wait <= deadlines.scans => {
                    tokio::time::sleep(wait).await;
                }
                _ => break Ok(report),
            }
        };
        match last {
            Ok(report) => {
                drain.leftovers = report.waiting;
                // Files held back for another attempt in the last scan are left too.
                for (path, at) in self.retries.held() {
                    if !drain.leftovers.iter().any(|left| &left.path == path) {
                        drain.leftovers.push(Leftover {
                            path: path.clone(),
                            reason: NotReady::Retrying { at }.into(),
                        });
                    }
                }
                drain.complete = drain.leftovers.is_empty();
            }
            Err(error) => {
                drain.last_error = Some(ErrorChain(&error).to_string());
                // Complete only if the directory could be listed and holds nothing uncommitted
                // (the failure was in a snapshot or a cleanup, after every commit).
                let listed = self.uncommitted().await;
                drain.complete = listed.as_ref().is_some_and(Vec::is_empty);
                drain.leftovers = listed.unwrap_or_default();
            }
        }
        Ok(drain)
    }

    /// Every file of the watched directory that no committed batch holds, by what the state
    /// in memory knows (after a commit whose answer was lost, a file may be named that was
    /// committed: named twice is better than lost): ready files as
    /// [`LeftoverReason::Uncommitted`], the others by why they are not ready; `None` when the
    /// directory cannot be listed.
    async fn uncommitted(&mut self) -> Option<Vec<Leftover>> {
        let survey = match self.survey(None).await {
            Ok(survey) => survey,
            Err(error) => {
                self.observer.emit(LeftoversUnlisted { error: &error });
                return None;
            }
        };
        let mut leftovers = survey.report.waiting;
        leftovers.extend(survey.batches.into_iter().flatten().map(|file| Leftover {
            path: file.path,
            reason: LeftoverReason::Uncommitted,
        }));
        for (path, at) in self.retries.held() {
            if !leftovers.iter().any(|left| &left.path == path) {
                leftovers.push(Leftover {
                    path: path.clone(),
                    reason: NotReady::Retrying { at }.into(),
                });
            }
        }
        leftovers.sort_by(|a, b| a.path.cmp(&b.path));
        Some(leftovers)
    }

    /// Copies the raw bytes of `leftovers` to the output store; returns how many were copied.
    /// A file that cannot be copied is logged and stays a plain leftover.
    async fn ship_leftovers(&self, leftovers: &[Leftover]) -> usize {
        let generation = self.state.generation();
        let mut shipped = 0;
        for leftover in leftovers {
            let object = self.output.leftover_object(generation, &leftover.path);
            let source = crate::listing::absolute(&self.config.watch_dir, &leftover.path);
            let result = self.output.ship_file(source, &object).await;
            shipped += usize::from(result.is_ok());
            self.observer.emit(LeftoverShipped {
                path: &leftover.path,
                object: &self.output.location().describe(&object),
                result: result.as_ref().map(|bytes| *bytes),
            });
        }
        shipped
    }
}
