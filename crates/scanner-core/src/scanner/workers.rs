//! The fan-out of a batch's files to a bounded pool of blocking threads.
//!
//! Reading files and reducing them is blocking IO and CPU work: it never runs on the async
//! runtime. `workers` blocking tasks each take the next unit from a shared counter; a large
//! file of a splittable processor is several units, so that one big file keeps every worker
//! busy.

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use state_store::PlannedFile;

use crate::ScanError;
use crate::process::{
    FailureKind, FileOutcome, ReadLimits, ResourceError, UnitOutcome, WorkUnit, combine,
    plan_units, process_unit,
};
use crate::processor::DynProcessor;
use crate::telemetry::{Heartbeat, ReadingFor};

/// Runs blocking work, named `task` in errors, on the runtime's blocking pool.
pub(super) async fn blocking<T, F>(task: &'static str, work: F) -> Result<T, ScanError>
where
    F: FnOnce() -> Result<T, ScanError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| ScanError::Worker { task, source })?
}

/// Processes `files` below `root` on at most `workers` threads; outcomes come back in the
/// order of `files`. A processor that panics fails its file; a resource shortage of the
/// process (descriptors, memory) fails the whole batch, which is retried later.
///
/// Each worker is one blocking task that takes the next unit from a shared counter until none
/// is left: a batch of many small files costs a few hand-offs between the runtime and the
/// blocking pool, not one per file (which cost more than reading a small file). A file read as
/// one unit is finished on its worker; the units of a file split across workers wait for its
/// last one, whose worker merges and finishes them.
///
/// Every chunk read and every unit finished is progress of `heartbeat`: a batch that advances is
/// never taken for a stalled loop, however long it takes.
///
/// Results are held until the batch is flushed, so they are bounded: once the results of the
/// files finished reach `max_output_bytes`, no further unit is started, and the outcomes of the
/// files finished by then come back (a prefix of `files`, at least one file); the caller leaves
/// the others for the next batch. `stop` ends the work early the same way (its owner has
/// abandoned the batch).
pub(super) async fn process_files(
    root: PathBuf,
    files: Arc<[PlannedFile]>,
    processor: &DynProcessor,
    settings: WorkSettings,
    heartbeat: Heartbeat,
    stop: Arc<AtomicBool>,
) -> Result<Vec<FileOutcome>, ScanError> {
    let root = Arc::new(root);
    let units: Arc<[WorkUnit]> = {
        let (root, files, processor) = (Arc::clone(&root), Arc::clone(&files), processor.clone());
        let workers = settings.workers;
        blocking("planning work units", move || {
            Ok(plan_units(&root, &files, &processor, workers))
        })
        .await?
        .into()
    };
    let threads = settings.workers.clamp(1, units.len().max(1));
    let batch = Arc::new(Shared::new(
        root,
        files,
        units,
        processor.clone(),
        settings,
        heartbeat,
        stop,
    ));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let batch = Arc::clone(&batch);
            tokio::task::spawn_blocking(move || batch.work())
        })
        .collect();
    let mut outcomes: Vec<Option<FileOutcome>> = (0..batch.files.len()).map(|_| None).collect();
    let mut shortage = None;
    for handle in handles {
        let done = handle.await.map_err(|source| ScanError::Worker {
            task: "processing files",
            source,
        })?;
        for finished in done {
            match finished {
                Ok((file, outcome)) => outcomes[file] = Some(outcome),
                Err(error) => shortage = shortage.or(Some(error)),
            }
        }
    }
    if let Some(error) = shortage {
        return Err(error.into());
    }
    outcomes.truncate(batch.finished_files());
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every unit of a finished file was processed"))
        .collect())
}

/// How a batch's files are processed: by how many workers, within which read limits, and
/// the bound on the results held.
#[derive(Clone, Copy, Debug)]
pub(super) struct WorkSettings {
    /// Workers (blocking threads) at most.
    pub(super) workers: usize,
    /// Limits on reading each file.
    pub(super) limits: ReadLimits,
    /// Once the results of the files finished reach this many bytes, no further unit starts.
    pub(super) max_output_bytes: u64,
}

/// What a batch's workers share.
struct Shared {
    root: Arc<PathBuf>,
    files: Arc<[PlannedFile]>,
    units: Arc<[WorkUnit]>,
    processor: DynProcessor,
    settings: WorkSettings,
    heartbeat: Heartbeat,
    /// Set to take no further unit: the results reached their bound, the process lacks
    /// resources, or the batch was abandoned.
    stop: Arc<AtomicBool>,
    /// Each file's units (units are in file order).
    spans: Box<[Range<usize>]>,
    /// Each file's units not processed yet.
    waiting: Box<[AtomicUsize]>,
    /// The outcomes of the units of split files, until the file's last one is processed.
    parked: Box<[Mutex<Option<UnitOutcome>>]>,
    /// The next unit to take.
    next: AtomicUsize,
    /// The results of the files finished so far, as rendered (roughly).
    output_bytes: AtomicU64,
}

impl Shared {
    fn new(
        root: Arc<PathBuf>,
        files: Arc<[PlannedFile]>,
        units: Arc<[WorkUnit]>,
        processor: DynProcessor,
        settings: WorkSettings,
        heartbeat: Heartbeat,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let spans = file_spans(&units, files.len());
        Self {
            waiting: spans
                .iter()
                .map(|span| AtomicUsize::new(span.len()))
                .collect(),
            parked: (0..units.len()).map(|_| Mutex::new(None)).collect(),
            spans,
            root,
            files,
            units,
            processor,
            settings,
            heartbeat,
            stop,
            next: AtomicUsize::new(0),
            output_bytes: AtomicU64::new(0),
        }
    }

    /// One worker: takes the next unit until none is left or `stop` is set; returns the files
    /// it finished, or the shortage that stopped the batch.
    fn work(&self) -> Vec<Result<(usize, FileOutcome), ResourceError>> {
        let _reading = ReadingFor::heartbeat(&self.heartbeat);
        let mut done = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(unit) = self.units.get(index) else {
                break;
            };
            let file = unit.file;
            let processed = guarded(|| {
                let planned = &self.files[file];
                let range = unit.range.clone();
                process_unit(
                    &self.root,
                    planned,
                    range,
                    &self.processor,
                    self.settings.limits,
                )
            });
            let finished = match processed {
                Err(error) => {
                    // The process lacks resources: the batch fails as a whole.
                    self.stop.store(true, Ordering::Relaxed);
                    done.push(Err(error));
                    break;
                }
                Ok(outcome) => self.finish(index, file, outcome),
            };
            self.heartbeat.progress();
            if let Some(outcome) = finished {
                self.count(&outcome);
                done.push(Ok((file, outcome)));
            }
        }
        crate::process::end_of_work();
        done
    }

    /// Adds a finished file's result to the results held; past the bound, stops the batch.
    fn count(&self, outcome: &FileOutcome) {
        if let FileOutcome::Done { result, .. } = outcome {
            let size = result.get().len() as u64 + LINE_OVERHEAD;
            let held = self.output_bytes.fetch_add(size, Ordering::Relaxed) + size;
            if held >= self.settings.max_output_bytes {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    /// How many of the batch's files (a prefix) were finished, once the workers are done:
    /// every unit taken was processed, and units are taken in order, so the files whose units
    /// all come before the first unit not taken are finished (at least the one that reached
    /// the bound); the worker of each one's last unit finished it.
    fn finished_files(&self) -> usize {
        let taken = self.next.load(Ordering::Relaxed).min(self.units.len());
        self.units
            .get(taken)
            .map_or(self.files.len(), |unit| unit.file)
    }

    /// Records `outcome` of unit `index` of `file`; returns the file's outcome if this was its
    /// last unit (its units merged and finished, in file order).
    fn finish(&self, index: usize, file: usize, outcome: UnitOutcome) -> Option<FileOutcome> {
        let processor = &self.processor;
        let span = self.spans[file].clone();
        if span.len() == 1 {
            return Some(finished(processor, vec![outcome]));
        }
        *self.parked[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
        if self.waiting[file].fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        let units = span
            .map(|unit| {
                self.parked[unit]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .expect("every unit of the file was parked")
            })
            .collect();
        Some(finished(processor, units))
    }
}

/// The range of `units` of each of `files` files (every file has at least one unit, and
/// units come in file order).
fn file_spans(units: &[WorkUnit], files: usize) -> Box<[Range<usize>]> {
    let mut spans = vec![0..0; files];
    for (index, unit) in units.iter().enumerate() {
        let span = &mut spans[unit.file];
        if span.start == span.end {
            *span = index..index + 1;
        } else {
            span.end = index + 1;
        }
    }
    spans.into()
}

/// Runs a processor's work, a panic of which fails the unit (or file) instead of the worker.
fn guarded(
    work: impl FnOnce() -> Result<UnitOutcome, ResourceError>,
) -> Result<UnitOutcome, ResourceError> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        Ok(UnitOutcome::Failed {
            kind: FailureKind::Processor,
            reason: format!("processor panicked: {}", panic_text(&*panic)),
        })
    })
}

/// A file's outcome from its units' (merging and finishing call the processor: a panic fails
/// the file).
fn finished(processor: &DynProcessor, units: Vec<UnitOutcome>) -> FileOutcome {
    std::panic::catch_unwind(AssertUnwindSafe(|| combine(processor, units))).unwrap_or_else(
        |panic| FileOutcome::Failed {
            kind: FailureKind::Processor,
            reason: format!("processor panicked: {}", panic_text(&*panic)),
        },
    )
}

/// What an output line takes besides its result (path, size, times, names, the file's
/// identity), for the bound on a batch's results: roughly, since paths vary.
const LINE_OVERHEAD: u64 = 320;

/// The message a panic carried.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{Merge, Processor, Reducer};

    /// Counts lines, and answers with a result of `RESULT_BYTES` bytes: larger than anything
    /// `max_output_bytes` allows below.
    struct Bulky;
    struct BulkyReducer(u64);
    const RESULT_BYTES: usize = 1 << 20;

    impl Processor for Bulky {
        type Reducer = BulkyReducer;
        fn name(&self) -> &str {
            "bulky"
        }
        fn reducer(&self) -> BulkyReducer {
            BulkyReducer(0)
        }
    }

    impl Reducer for BulkyReducer {
        type Output = (u64, String);
        fn update(&mut self, chunk: &[u8]) {
            self.0 += memchr::memchr_iter(b'\n', chunk).count() as u64;
        }
        fn finish(self) -> (u64, String) {
            (self.0, "x".repeat(RESULT_BYTES))
        }
    }

    impl Merge for BulkyReducer {
        fn merge(&mut self, later: Self) {
            self.0 += later.0;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_output_bound_holds_for_files_split_across_workers() {
        let dir = tempfile::tempdir().unwrap();
        let lines = (2 * crate::process::MIN_RANGE_BYTES / 2) as usize;
        let files: Vec<PlannedFile> = (0..4)
            .map(|i| {
                let name = format!("big{i}.log");
                std::fs::write(dir.path().join(&name), "x\n".repeat(lines)).unwrap();
                crate::testing::planned_file(dir.path(), &name)
            })
            .collect();
        let processor = DynProcessor::splittable(Bulky);
        let units = plan_units(dir.path(), &files, &processor, 2);
        assert_eq!(units.len(), 8, "each file is split in two");
        let run = |max_output_bytes| {
            let settings = WorkSettings {
                workers: 2,
                limits: ReadLimits::default(),
                max_output_bytes,
            };
            process_files(
                dir.path().to_path_buf(),
                files.clone().into(),
                &processor,
                settings,
                Heartbeat::new(std::time::Duration::from_secs(60)),
                Arc::new(AtomicBool::new(false)),
            )
        };
        // Unbounded: every file, each merged from its two units.
        let all = run(u64::MAX).await.unwrap();
        assert_eq!(all.len(), 4);
        for outcome in &all {
            let FileOutcome::Done { result, bytes, .. } = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(*bytes, files[0].size);
            assert!(result.get().starts_with(&format!("[{lines},")), "merged");
        }
        // Bounded below one result: the batch ends after the first file finished (one more may
        // be under way on the other worker), never with all of them.
        let bounded = run(1024).await.unwrap();
        assert!(
            (1..=2).contains(&bounded.len()),
            "{} files kept",
            bounded.len()
        );
        assert!(matches!(bounded[0], FileOutcome::Done { .. }));
    }

    /// The runtime's blocking pool keeps every thread it ever started while work keeps coming
    /// (it wakes its idle threads in turn, so none stays idle long enough to exit), and the
    /// threads that ran workers are only some of them. A thread that kept its buffers after
    /// its batch (about 400 KiB) made a sidecar's memory grow with the pool: under a steady
    /// emitter, 5 MiB in its first two minutes.
    #[test]
    fn a_worker_thread_keeps_no_buffers_once_its_batch_is_done() {
        const THREADS: usize = 3;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(THREADS)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PlannedFile> = (0..20)
            .map(|i| {
                let name = format!("f{i}.log");
                std::fs::write(dir.path().join(&name), "ERROR x\nok\n".repeat(100 * i)).unwrap();
                crate::testing::planned_file(dir.path(), &name)
            })
            .collect();
        let grep = crate::processor::Grep::new("ERROR", 2).unwrap();
        let processors = [
            DynProcessor::splittable(crate::processor::Stats),
            DynProcessor::splittable(grep),
        ];
        runtime.block_on(async {
            for processor in &processors {
                let settings = WorkSettings {
                    workers: 2,
                    limits: ReadLimits::default(),
                    max_output_bytes: u64::MAX,
                };
                let outcomes = process_files(
                    dir.path().to_path_buf(),
                    files.clone().into(),
                    processor,
                    settings,
                    Heartbeat::new(std::time::Duration::from_secs(60)),
                    Arc::new(AtomicBool::new(false)),
                )
                .await
                .unwrap();
                assert_eq!(outcomes.len(), files.len());
                assert!(
                    outcomes
                        .iter()
                        .all(|o| matches!(o, FileOutcome::Done { .. }))
                );
            }
            // THREADS tasks that wait for each other run on THREADS threads at once: every
            // thread the pool has, those that ran the workers among them.
            let barrier = Arc::new(std::sync::Barrier::new(THREADS));
            let reports: Vec<_> = (0..THREADS)
                .map(|_| {
                    let barrier = Arc::clone(&barrier);
                    tokio::task::spawn_blocking(move || {
                        barrier.wait();
                        crate::process::thread_scratch_bytes()
                    })
                })
                .collect();
            let mut held = Vec::new();
            for report in reports {
                held.push(report.await.unwrap());
            }
            assert_eq!(held, vec![0; THREADS], "bytes held by each blocking thread");
        });
    }
}
