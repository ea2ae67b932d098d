//! The fan-out of a batch's files to a bounded pool of blocking threads.
//!
//! Reading files and reducing them is blocking IO and CPU work: it never runs on the async
//! runtime. At most `workers` units run at once; a large file of a splittable processor is
//! several units, so that one big file keeps every worker busy.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use state_store::PlannedFile;

use crate::ScanError;
use crate::process::{
    FailureKind, FileOutcome, ReadLimits, UnitOutcome, combine, plan_units, process_unit,
};
use crate::processor::DynProcessor;

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
pub(super) async fn process_files(
    root: PathBuf,
    files: Arc<[PlannedFile]>,
    processor: &DynProcessor,
    workers: usize,
    limits: ReadLimits,
) -> Result<Vec<FileOutcome>, ScanError> {
    let root = Arc::new(root);
    let units = {
        let (root, files, processor) = (Arc::clone(&root), Arc::clone(&files), processor.clone());
        blocking("planning work units", move || {
            Ok(plan_units(&root, &files, &processor, workers))
        })
        .await?
    };
    let mut outcomes: Vec<Option<UnitOutcome>> = (0..units.len()).map(|_| None).collect();
    let mut work = futures::stream::iter(units.iter().cloned().enumerate())
        .map(|(index, unit)| {
            let (root, files, processor) =
                (Arc::clone(&root), Arc::clone(&files), processor.clone());
            async move {
                let outcome = tokio::task::spawn_blocking(move || {
                    process_unit(&root, &files[unit.file], unit.range, &processor, limits)
                })
                .await
                .unwrap_or_else(|join| {
                    Ok(UnitOutcome::Failed {
                        kind: FailureKind::Processor,
                        reason: format!("processor panicked: {}", panic_message(join)),
                    })
                });
                (index, outcome)
            }
        })
        .buffer_unordered(workers);
    while let Some((index, outcome)) = work.next().await {
        outcomes[index] = Some(outcome?);
    }
    drop(work);
    // Merging and finishing results is CPU work too.
    let processor = processor.clone();
    let count = files.len();
    blocking("merging results", move || {
        let mut per_file: Vec<Vec<UnitOutcome>> = (0..count).map(|_| Vec::new()).collect();
        for (unit, outcome) in units.iter().zip(outcomes) {
            per_file[unit.file].push(outcome.expect("every unit has an outcome"));
        }
        Ok(per_file
            .into_iter()
            .map(|units| combine(&processor, units))
            .collect())
    })
    .await
}

fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(join) => join.to_string(),
    }
}
