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
//! A redo that fails in the process (a storage error) is not an abnormal end: its marker is
//! taken back, and a plan this process created or redid is not recorded again when it is redone
//! here.

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
        // A plan of this process's own (it failed here, and the log was read again) was not
        // ended by a death of the process: it is not recorded, and counts what earlier
        // processes recorded only.
        let ended = if self.own_plan == Some(generation) {
            self.pending_redos
        } else {
            let attempt = self.pending_redos + 1;
            self.log.record_redo(generation, attempt).await?;
            self.own_plan = Some(generation);
            self.redo_marker = Some((generation, attempt));
            self.pending_redos = attempt;
            attempt
        };
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

    /// After a redo failed in the process (a storage error, not a death of the process), takes
    /// its marker back, so that a process that then exits normally (`--once` with an error, a
    /// drain at its deadline) is not counted as having died in the batch. If the marker cannot
    /// be removed now it stays, and counts one abnormal end too many: nothing worse than a
    /// smaller batch, unless it happens again and again.
    pub(super) async fn unrecord_redo(&mut self) {
        if let Some((generation, attempt)) = self.redo_marker.take() {
            if self.log.remove_redo(generation, attempt).await.is_ok() {
                self.pending_redos = self.pending_redos.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use futures::TryStreamExt;
    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use state_store::{Location, SourceId};

    use super::*;
    use crate::{DynProcessor, ScannerConfig, Stats};

    /// An in-memory store whose writes fail while `failing` is set.
    #[derive(Debug)]
    struct FailingWrites {
        inner: InMemory,
        failing: Arc<AtomicBool>,
    }

    impl std::fmt::Display for FailingWrites {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failing writes")
        }
    }

    impl FailingWrites {
        fn check(&self) -> object_store::Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(object_store::Error::Generic {
                    store: "test",
                    source: "writes fail".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectStore for FailingWrites {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.check()?;
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.check()?;
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.check()?;
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A batch that fails in the process (its output cannot be written) run after run, each run
    /// ending normally (as `--once` exits 1): no run died in it, so nothing is recorded, the
    /// batch is never cut or given up, and it commits whole once the store takes writes.
    #[tokio::test]
    async fn redos_that_fail_in_the_process_are_not_counted_as_deaths() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.log", "b.log", "c.log"] {
            std::fs::write(dir.path().join(name), b"one line\n").unwrap();
        }
        let state = Location::parse("memory://").unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let output = Location::from_store(
            Arc::new(FailingWrites {
                inner: InMemory::new(),
                failing: Arc::clone(&failing),
            }),
            Path::from("out"),
            "memory://out",
        );
        let source: SourceId = "s".parse().unwrap();
        let markers = || async {
            let objects: Vec<_> = state.store().list(None).try_collect().await.unwrap();
            objects
                .iter()
                .filter(|meta| meta.location.as_ref().contains(".redo-"))
                .count()
        };
        for run in 0..12 {
            let mut config = ScannerConfig::new(dir.path(), source.clone());
            config.readiness.min_age = std::time::Duration::ZERO;
            failing.store(false, Ordering::SeqCst); // the start-up probe
            let mut scanner = Scanner::open(config, DynProcessor::new(Stats), &state, &output)
                .await
                .unwrap();
            failing.store(true, Ordering::SeqCst);
            for _ in 0..2 {
                let error = scanner.scan(None).await.unwrap_err();
                assert!(error.to_string().contains("out"), "run {run}: {error}");
            }
            assert_eq!(
                markers().await,
                0,
                "run {run}: a redo that failed here is taken back"
            );
        }
        failing.store(false, Ordering::SeqCst);
        let mut config = ScannerConfig::new(dir.path(), source.clone());
        config.readiness.min_age = std::time::Duration::ZERO;
        let mut scanner = Scanner::open(config, DynProcessor::new(Stats), &state, &output)
            .await
            .unwrap();
        let report = scanner.scan(None).await.unwrap();
        assert_eq!(report.committed_files(), 3);
        assert_eq!(report.failed_files(), 0, "nothing given up");
        assert_eq!(markers().await, 0);
    }

    #[test]
    fn a_plan_is_redone_whole_once_then_halved_down_to_one_file_then_given_up() {
        use RedoPolicy::{Cut, GiveUp, Whole};
        assert_eq!(RedoPolicy::after(100, 1), Whole);
        assert_eq!(RedoPolicy::after(100, 2), Cut(50));
        assert_eq!(RedoPolicy::after(100, 3), Cut(25));
        // 100 files: six halvings reach one file (at 7 ends), then eight ends alone.
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
