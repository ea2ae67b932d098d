//! Baselining: a source's first generation records the files already in the directory as seen
//! but not processed, so that a first start over months of files does not process them all.

use std::time::{Duration, SystemTime};

use state_store::{FileEntry, Outcome, PlannedFile, RelPath};

use super::Scanner;
use super::workers::blocking;
use crate::ScanError;
use crate::diff::OnChange;
use crate::identity::{Identity, fingerprint_file};
use crate::telemetry::BaselineCommitted;

/// What [`Scanner::baseline`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Baseline {
    /// The generation was committed with this many files marked baselined.
    Committed {
        /// The generation that records the baseline.
        generation: u64,
        /// Files recorded as baselined.
        files: usize,
        /// Their total size in bytes.
        bytes: u64,
        /// Ready files left to be processed, since they are younger than the age given.
        younger: usize,
    },
    /// Nothing was done: the source already has committed state (or an interrupted batch), so
    /// it is past its first start. A baseline is taken once, before anything is processed.
    Skipped {
        /// The generation of the state.
        generation: u64,
    },
}

impl Scanner {
    /// Takes the source's baseline, once, at its first start: commits generation 1 recording
    /// every file that is ready now ([`Readiness`](crate::Readiness), the name filters) and,
    /// with `older_than`, last modified longer ago than that, as
    /// [`Outcome::Baselined`] at its current size. Later scans process only what comes after:
    /// new files, and bytes appended to a baselined file or a rewrite of it as `on_change`
    /// says. Files still being written are not baselined: they are processed once complete.
    ///
    /// The generation is committed like a batch, through the state log's conditional create
    /// (a second writer is fenced off), even when no file qualifies: the baseline is then
    /// recorded as taken, and files that arrive later are processed. A source with committed
    /// state is left alone ([`Baseline::Skipped`]), so the flag may stay in a Pod's arguments
    /// across restarts. An empty source that another writer holds (its lease was live when this
    /// one started) is refused: [`ScanError::LiveWriter`].
    pub async fn baseline(&mut self, older_than: Option<Duration>) -> Result<Baseline, ScanError> {
        if self.state.generation() > 0 || self.pending.is_some() {
            let generation = self.state.generation().max(self.pending_generation());
            return Ok(Baseline::Skipped { generation });
        }
        if let Some(lease) = &self.live_writer_at_open {
            return Err(ScanError::LiveWriter {
                source_id: self.config.source_id.to_string(),
                lease: lease.to_string(),
            });
        }
        let survey = self.survey(None).await?;
        let cutoff_ns = older_than.map(|age| mtime_ns(SystemTime::now() - age));
        let (files, younger): (Vec<PlannedFile>, Vec<PlannedFile>) = survey
            .batches
            .into_iter()
            .flatten()
            .partition(|f| cutoff_ns.is_none_or(|cutoff| f.mtime_ns <= cutoff));
        let generation = 1;
        let upserts = self.baseline_entries(files, generation).await?;
        let bytes = upserts.iter().map(|(_, e)| e.size).sum();
        let delta = self.log.delta(generation, None, upserts);
        if let Err(e) = self.log.commit(&delta).await {
            self.needs_reload = true;
            return Err(e.into());
        }
        self.apply(&delta)?;
        let report = Baseline::Committed {
            generation,
            files: delta.upserts.len(),
            bytes,
            younger: younger.len(),
        };
        self.observer.emit(BaselineCommitted { report: &report });
        Ok(report)
    }

    fn pending_generation(&self) -> u64 {
        self.pending.as_ref().map_or(0, |plan| plan.generation)
    }

    /// The entries recording `files` as baselined by `generation`, sorted by path, with the
    /// fingerprints of their first bytes where a batch would take them (to recognise a
    /// renamed file, or an appended one).
    async fn baseline_entries(
        &self,
        mut files: Vec<PlannedFile>,
        generation: u64,
    ) -> Result<Vec<(RelPath, FileEntry)>, ScanError> {
        files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let fingerprinting =
            self.config.identity == Identity::Content || self.config.on_change == OnChange::Append;
        let root = self.config.watch_dir.clone();
        blocking("fingerprinting baselined files", move || {
            Ok(files
                .into_iter()
                .map(|file| {
                    let fingerprint = if fingerprinting {
                        fingerprint_file(&root, &file.path, file.size, Some(file.inode))
                            .unwrap_or(0)
                    } else {
                        0
                    };
                    let entry = FileEntry {
                        size: file.size,
                        mtime_ns: file.mtime_ns,
                        inode: file.inode,
                        btime_ns: file.btime_ns,
                        offset: file.size,
                        generation,
                        outcome: Outcome::Baselined,
                        fingerprint,
                    };
                    (file.path, entry)
                })
                .collect())
        })
        .await
    }
}

/// Now, in milliseconds since the Unix epoch, as leases give times.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `at` in nanoseconds since the Unix epoch, as listings give modification times.
fn mtime_ns(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}
