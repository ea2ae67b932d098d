//! Shutdown: the request a running scanner watches (in the manner of mini-redis's
//! `shutdown`), and the drain that follows it.
//!
//! In a Pod the watched directory is an `emptyDir`, deleted with the Pod: a file still there
//! when Gleaner exits is gone for good. So the drain does not stop at one last scan:
//!
//! * [`DrainMode::Wait`] keeps scanning until every file that waits only for time (its minimum
//!   age, its stability window) has become ready and is committed, within the shutdown timeout;
//! * [`DrainMode::WriterGone`] is for when the writer is known to have exited (a native
//!   sidecar is stopped after the emitter; the last step of a Job): every file is complete now,
//!   except files under an in-progress name.
//!
//! Whatever is left is reported, by path and reason, in the [`DrainReport`].

use std::time::{Duration, Instant, SystemTime};

use state_store::RelPath;
use tokio::sync::watch;

use super::Scanner;
use crate::readiness::NotReady;
use crate::telemetry::{DrainProgress, DrainStarted, Drained, LeftoverShipped};
use crate::{ConfigError, ScanError};

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
    /// What it was still waiting for.
    pub reason: NotReady,
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
    /// Scans the drain ran.
    pub scans: usize,
    /// Files the drain committed.
    pub committed_files: usize,
    /// The last committed generation.
    pub generation: u64,
    /// Leftovers whose raw bytes were copied to the output store
    /// ([`ScannerConfig::ship_leftovers`](crate::ScannerConfig::ship_leftovers)).
    pub shipped: usize,
}

impl Scanner {
    /// Drains after a shutdown requested at `requested_at`: scans, and in
    /// [`DrainMode::Wait`] scans again as files waiting only for time become ready, until none
    /// waits for time or the next would be ready after the shutdown timeout. What is left is
    /// named in the report, the log and `gleaner_drain_leftover_files`.
    pub(super) async fn drain(&mut self, requested_at: Instant) -> Result<DrainReport, ScanError> {
        let mode = self.config.drain;
        let timeout = self.config.shutdown_timeout;
        // Stop waiting a little before the deadline, so that the leftovers are reported before
        // the process is cut short.
        let margin = (timeout / 10).min(Duration::from_secs(2));
        let deadline = requested_at + timeout.saturating_sub(margin);
        self.observer.emit(DrainStarted { mode, timeout });
        self.draining = Some(mode);
        let mut drain = DrainReport::default();
        let last = loop {
            let scanned = self.scan(None).await;
            let report = match scanned {
                Ok(report) => report,
                Err(e) => {
                    self.draining = None;
                    return Err(e);
                }
            };
            drain.scans += 1;
            drain.committed_files += report.committed_files();
            self.observer.emit(DrainProgress {
                waiting: &report.waiting,
            });
            // Only files waiting for time can become ready without the writer.
            let waiting_for_time = report.too_young + report.unstable + report.retrying > 0;
            let wait = report.next_ready_at.map(|at| {
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    + Duration::from_millis(10)
            });
            match wait {
                Some(wait) if waiting_for_time && Instant::now() + wait <= deadline => {
                    tokio::time::sleep(wait).await;
                }
                _ => break report,
            }
        };
        self.draining = None;
        drain.leftovers = last.waiting;
        // Files held back for another attempt in the last scan are left too.
        for (path, at) in self.retries.held() {
            if !drain.leftovers.iter().any(|left| &left.path == path) {
                drain.leftovers.push(Leftover {
                    path: path.clone(),
                    reason: NotReady::Retrying { at },
                });
            }
        }
        drain.complete = drain.leftovers.is_empty();
        drain.generation = self.state.generation();
        if self.config.ship_leftovers {
            drain.shipped = self.ship_leftovers(&drain.leftovers).await;
        }
        self.observer.emit(Drained { report: &drain });
        Ok(drain)
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
