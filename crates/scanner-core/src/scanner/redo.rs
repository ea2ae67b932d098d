//! Redoing an interrupted batch, and what keeps a batch from killing the process forever.
//!
//! A plan without a delta at start-up means the process ended before the batch's commit: a
//! kill, a rollout, a node going away — or the batch itself, when reading it runs the process
//! out of memory. Redone as it is, such a batch would kill every attempt, and the source would
//! never commit again. So each redo is recorded before it reads anything (a marker next to the
//! plan, [`StateLog::record_redo`](state_store::StateLog::record_redo)), and the count decides:
//!
//! * after one abnormal end the plan is redone whole (one kill says nothing about the batch);
//! * after more, only the first half of its files, then a quarter, … down to one file; the
//!   files left out are new to the state again and go into later batches;
//! * a file that ended the process [`ALONE_BEFORE_GIVING_UP`] times on its own is committed
//!   as failed (`abandoned`), with a line in the output and a reason that says so, instead of
//!   being redone forever. Like any failed file, it is processed again if it changes.
//!
//! A redo that fails in the process (a storage error) is not an abnormal end: one marker per
//! plan and process.

use state_store::Plan;

use super::{BatchReport, Scanner};
use crate::ScanError;
use crate::output::WriteMode;
use crate::telemetry::{BatchRedone, RedoCut};

/// How many times one file alone may end the process before it is given up.
pub(super) const ALONE_BEFORE_GIVING_UP: u32 = 8;

/// What a redo of a plan of `files` files does after `ended` abnormal ends (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RedoPolicy {
    /// All of it.
    Whole,
    /// Its first files only.
    Cut(usize),
    /// Commit its only file as failed.
    GiveUp,
}

impl RedoPolicy {
    pub(super) fn after(files: usize, ended: u32) -> RedoPolicy {
        if ended <= 1 {
            return RedoPolicy::Whole;
        }
        let halvings = ended - 1;
        let kept = files.checked_shr(halvings).unwrap_or(0).max(1);
        // The attempts so far that ran one file alone: a plan of one file, every one; a larger
        // plan, those after `ilog2(files)` halvings (attempt k ran after k - 1 ends).
        let alone = if files <= 1 {
            ended
        } else {
            ended.saturating_sub(1 + files.ilog2())
        };
        if kept == 1 && alone >= ALONE_BEFORE_GIVING_UP {
            RedoPolicy::GiveUp
        } else if kept < files {
            RedoPolicy::Cut(kept)
        } else {
            RedoPolicy::Whole
        }
    }
}

impl Scanner {
    /// Redoes the interrupted batch of `plan`, as [`RedoPolicy`] says after the abnormal ends
    /// recorded so far (this one included).
    pub(super) async fn redo(&mut self, mut plan: Plan) -> Result<Option<BatchReport>, ScanError> {
        let generation = plan.generation;
        if self.redo_recorded != Some(generation) {
            let attempt = self.pending_redos + 1;
            self.log.record_redo(generation, attempt).await?;
            self.pending_redos = attempt;
            self.redo_recorded = Some(generation);
        }
        let ended = self.pending_redos;
        let planned = plan.files.len();
        self.observer.emit(BatchRedone {
            generation,
            files: planned,
            ended,
        });
        match RedoPolicy::after(planned, ended) {
            RedoPolicy::Whole => {}
            RedoPolicy::Cut(kept) => {
                self.observer.emit(RedoCut {
                    generation,
                    kept,
                    planned,
                    ended,
                });
                plan.files.truncate(kept);
            }
            RedoPolicy::GiveUp => {
                // Its first file, which ended the process alone; the others go to later
                // batches.
                plan.files.truncate(1);
                let reason = format!(
                    "abandoned: the process ended abnormally {ended} times before this batch \
                     was committed, the last {ALONE_BEFORE_GIVING_UP} times with this file \
                     alone (out of memory? see the container's last state); it is processed \
                     again if it changes"
                );
                return self.give_up(plan, reason).await;
            }
        }
        self.run_batch(plan, WriteMode::Replace).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_redone_whole_once_then_halved_down_to_one_file_then_given_up() {
        use RedoPolicy::{Cut, GiveUp, Whole};
        assert_eq!(RedoPolicy::after(100, 1), Whole);
        assert_eq!(RedoPolicy::after(100, 2), Cut(50));
        assert_eq!(RedoPolicy::after(100, 3), Cut(25));
        // 100 files: seven halvings reach one file (at 8 ends), then eight ends alone.
        assert_eq!(RedoPolicy::after(100, 8), Cut(1));
        assert_eq!(RedoPolicy::after(100, 14), Cut(1));
        assert_eq!(RedoPolicy::after(100, 15), GiveUp);
        // One file from the start: every end was alone.
        assert_eq!(RedoPolicy::after(1, 1), Whole);
        assert_eq!(RedoPolicy::after(1, 7), Whole);
        assert_eq!(RedoPolicy::after(1, 8), GiveUp);
        assert_eq!(RedoPolicy::after(2, 2), Cut(1));
        assert_eq!(RedoPolicy::after(2, 9), Cut(1));
        assert_eq!(RedoPolicy::after(2, 10), GiveUp);
        assert_eq!(RedoPolicy::after(3, 2), Cut(1));
        assert_eq!(RedoPolicy::after(3, 9), Cut(1));
        assert_eq!(RedoPolicy::after(3, 10), GiveUp);
        assert_eq!(RedoPolicy::after(usize::MAX, 64), Cut(1));
        assert_eq!(RedoPolicy::after(usize::MAX, 72), GiveUp);
    }

    #[test]
    fn a_file_is_given_up_only_after_it_ended_the_process_alone_that_many_times() {
        for files in [1usize, 2, 3, 7, 64, 1000, 10_000] {
            let mut alone = 0;
            let mut ended = 1;
            loop {
                let policy = RedoPolicy::after(files, ended);
                if policy == RedoPolicy::GiveUp {
                    break;
                }
                // This attempt, with what it kept, ends abnormally too.
                let kept = match policy {
                    RedoPolicy::Whole => files,
                    RedoPolicy::Cut(kept) => kept,
                    RedoPolicy::GiveUp => unreachable!(),
                };
                assert!(kept >= 1 && kept <= files);
                ended += 1;
                if kept == 1 {
                    alone += 1;
                }
                assert!(ended < 64, "{files} files: never given up");
            }
            // The first attempt of a one-file plan ran alone too.
            let alone = if files == 1 { alone + 1 } else { alone };
            assert!(
                alone >= ALONE_BEFORE_GIVING_UP,
                "{files} files: given up after {alone} ends alone"
            );
        }
    }
}
