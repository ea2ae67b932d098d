//! The fan-out of a batch's files to a bounded pool of blocking threads.
//!
//! Reading files and reducing them is blocking IO and CPU work: it never runs on the async
//! runtime. `workers` blocking tasks each take the next unit from a shared counter; a large
//! file of a splittable processor is several units, so that one big file keeps every worker
//! busy.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
/// blocking pool, not one per file (which cost more than reading a small file).
///
/// Every chunk read and every unit finished is progress of `heartbeat`: a batch that advances is
/// never taken for a stalled loop, however long it takes.
///
/// Results are held until the batch is flushed, so they are bounded: once the results of the
/// files finished reach `max_output_bytes`, no further unit is started, and the outcomes of the
/// files finished by then come back (a prefix of `files`, at least one file); the caller leaves
/// the others for the next batch. A file split across workers counts once merged.
pub(super) async fn process_files(
    root: PathBuf,
    files: Arc<[PlannedFile]>,
    processor: &DynProcessor,
    workers: usize,
    limits: ReadLimits,
    max_output_bytes: u64,
    heartbeat: Heartbeat,
) -> Result<Vec<FileOutcome>, ScanError> {
    let root = Arc::new(root);
    let units: Arc<[WorkUnit]> = {
        let (root, files, processor) = (Arc::clone(&root), Arc::clone(&files), processor.clone());
        blocking("planning work units", move || {
            Ok(plan_units(&root, &files, &processor, workers))
        })
        .await?
        .into()
    };
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let output_bytes = Arc::new(AtomicU64::new(0));
    let threads = workers.clamp(1, units.len().max(1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (root, files, units, processor) = (
                Arc::clone(&root),
                Arc::clone(&files),
                Arc::clone(&units),
                processor.clone(),
            );
            let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
            let output_bytes = Arc::clone(&output_bytes);
            let heartbeat = heartbeat.clone();
            tokio::task::spawn_blocking(move || {
                let _reading = ReadingFor::heartbeat(&heartbeat);
                let mut done = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = units.get(index) else { break };
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(
                        || -> Result<Finished, ResourceError> {
                            let outcome = process_unit(
                                &root,
                                &files[unit.file],
                                unit.range.clone(),
                                &processor,
                                limits,
                            )?;
                            // A file read as one unit is finished here, on this worker, rather than
                            // in the serial step after the batch's last unit.
                            Ok(if whole_file(&units, index) {
                                Finished::File(combine(&processor, vec![outcome]))
                            } else {
                                Finished::Unit(outcome)
                            })
                        },
                    ))
                    .unwrap_or_else(|panic| {
                        Ok(Finished::Unit(UnitOutcome::Failed {
                            kind: FailureKind::Processor,
                            reason: format!("processor panicked: {}", panic_text(&*panic)),
                        }))
                    });
                    match &outcome {
                        // The process lacks resources: the batch fails as a whole.
                        Err(_) => stop.store(true, Ordering::Relaxed),
                        Ok(Finished::File(FileOutcome::Done { result, .. })) => {
                            let size = result.get().len() as u64 + LINE_OVERHEAD;
                            let held = output_bytes.fetch_add(size, Ordering::Relaxed) + size;
                            if held >= max_output_bytes {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                    }
                    heartbeat.progress();
                    done.push((index, outcome));
                }
                crate::process::close_directory();
                done
            })
        })
        .collect();
    let mut outcomes: Vec<Option<Finished>> = (0..units.len()).map(|_| None).collect();
    let mut shortage = None;
    for handle in handles {
        let done = handle.await.map_err(|source| ScanError::Worker {
            task: "processing files",
            source,
        })?;
        for (index, outcome) in done {
            match outcome {
                Ok(outcome) => outcomes[index] = Some(outcome),
                Err(error) => shortage = shortage.or(Some(error)),
            }
        }
    }
    if let Some(error) = shortage {
        return Err(error.into());
    }
    // Every unit taken was processed, and units are taken in order: the files whose units all
    // come before the first unit not taken are complete (at least the one that reached the
    // bound).
    let taken = next.load(Ordering::Relaxed).min(units.len());
    let complete = units.get(taken).map_or(files.len(), |unit| unit.file);
    let (units, outcomes): (Arc<[WorkUnit]>, Vec<Option<Finished>>) = if taken < units.len() {
        let kept = units.iter().take_while(|unit| unit.file < complete).count();
        (
            units[..kept].to_vec().into(),
            outcomes.into_iter().take(kept).collect(),
        )
    } else {
        (units, outcomes)
    };
    if units.len() == complete {
        // Every file was one unit, finished on its worker: nothing is left to merge.
        return Ok(outcomes
            .into_iter()
            .map(
                |outcome| match outcome.expect("every unit has an outcome") {
                    Finished::File(outcome) => outcome,
                    Finished::Unit(outcome) => combine(processor, vec![outcome]),
                },
            )
            .collect());
    }
    // Merging and finishing the results of split files is CPU work too.
    let processor = processor.clone();
    let count = complete;
    blocking("merging results", move || {
        let mut per_file: Vec<Vec<Finished>> = (0..count).map(|_| Vec::new()).collect();
        for (unit, outcome) in units.iter().zip(outcomes) {
            per_file[unit.file].push(outcome.expect("every unit has an outcome"));
        }
        Ok(per_file
            .into_iter()
            .map(|mut finished| match finished.pop() {
                Some(Finished::File(outcome)) if finished.is_empty() => outcome,
                last => {
                    let units = finished
                        .into_iter()
                        .chain(last)
                        .map(|finished| match finished {
                            Finished::Unit(unit) => unit,
                            Finished::File(_) => unreachable!("a split file is finished here"),
                        })
                        .collect();
                    combine(&processor, units)
                }
            })
            .collect())
    })
    .await
}

/// What an output line takes besides its result (path, size, times, names), for the bound on a
/// batch's results: roughly, since paths vary.
const LINE_OVERHEAD: u64 = 200;

/// What a worker made of one unit: a file read whole is finished on the worker.
enum Finished {
    /// The outcome of a file that was a single unit.
    File(FileOutcome),
    /// One unit of a split file, to be merged with the file's others.
    Unit(UnitOutcome),
}

/// Whether `units[index]` is the only unit of its file (units are in file order).
fn whole_file(units: &[WorkUnit], index: usize) -> bool {
    let file = units[index].file;
    let before = index.checked_sub(1).map(|i| units[i].file);
    let after = units.get(index + 1).map(|unit| unit.file);
    before != Some(file) && after != Some(file)
}

/// The message a panic carried.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
