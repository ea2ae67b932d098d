//! Folding the state log into a snapshot every so many generations, so that loading and
//! commits stay cheap however long the source lives.

use std::time::Instant;

use super::Scanner;
use crate::ScanError;
use crate::telemetry::{SnapshotFailed, SnapshotStarted, SnapshotStored};

/// When the next snapshot is due.
#[derive(Debug, Default)]
pub(super) struct SnapshotSchedule {
    /// Generation of the newest snapshot (0: none yet).
    last: u64,
    /// No snapshot before this generation (pushed back after a failed attempt).
    not_before: u64,
}

impl SnapshotSchedule {
    /// The log was loaded from (or based on) the snapshot of `generation`.
    pub(super) fn loaded(&mut self, generation: u64) {
        self.last = generation;
    }

    fn is_due(&self, generation: u64, every: u64) -> bool {
        generation.saturating_sub(self.last) >= every && generation >= self.not_before
    }
}

impl Scanner {
    /// Stores a snapshot if `snapshot_every` generations were committed since the last one.
    /// The commit records come first: once folded, the deltas no longer say which are due.
    pub(super) async fn snapshot_if_due(&mut self) -> Result<(), ScanError> {
        if self
            .snapshots
            .is_due(self.state.generation(), self.config.snapshot_every)
        {
            self.record_commits().await?;
            self.snapshot().await?;
        }
        Ok(())
    }

    /// Folds the state's recent changes into its compact form, on a worker (linear in the
    /// state), and forgets the entries of files known to be gone (found gone by the last walk
    /// of the whole tree, or removed by cleanup): the snapshot would drop them anyway, and
    /// until then they only take memory (a minute of a steady writer's files, for good, as the
    /// allocator keeps its peak). Forgotten in memory only: a state loaded again has them
    /// until a snapshot, and the next walk finds them gone again. A worker failure loses the
    /// state in memory: it is reloaded by the next scan.
    pub(super) async fn compact_state(&mut self) -> Result<(), ScanError> {
        let mut state = std::mem::take(&mut self.state);
        let gone = std::mem::take(&mut self.gone);
        let joined = tokio::task::spawn_blocking(move || {
            state.forget(&gone);
            state.compact();
            state
        })
        .await;
        match joined {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(e) => {
                self.needs_reload = true;
                Err(ScanError::Worker {
                    task: "compacting the state (it will be reloaded)",
                    source: e,
                })
            }
        }
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
        self.observer.emit(SnapshotStarted {
            generation,
            entries: self.state.len(),
        });
        let mut state = std::mem::take(&mut self.state);
        let gone = std::mem::take(&mut self.gone);
        // Dropping entries and compacting are linear in the state: a worker's job.
        let joined = tokio::task::spawn_blocking(move || {
            let dropped = state.forget(&gone);
            state.compact();
            (state, dropped)
        })
        .await;
        let (state, dropped) = match joined {
            Ok(done) => done,
            Err(e) => {
                self.needs_reload = true;
                self.observer.emit(SnapshotFailed {
                    generation,
                    error: &e,
                    retry_at: None,
                });
                return Err(ScanError::Worker {
                    task: "the snapshot (the state will be reloaded)",
                    source: e,
                });
            }
        };
        self.state = state;
        match self.log.store_snapshot(&self.state).await {
            Ok(stored) => {
                self.snapshots.last = generation;
                self.observer.emit(SnapshotStored {
                    generation,
                    entries: self.state.len(),
                    bytes: stored.bytes,
                    dropped,
                    removed: stored.removed,
                    elapsed: started.elapsed(),
                });
            }
            Err(e) => {
                // Memory no longer holds the dropped entries the log still has: re-read it.
                self.needs_reload = true;
                self.snapshots.not_before = generation + self.config.snapshot_every;
                self.observer.emit(SnapshotFailed {
                    generation,
                    error: &e,
                    retry_at: Some(self.snapshots.not_before),
                });
            }
        }
        Ok(())
    }
}
