//! The survey: list the watch root, merge the listing with the state, and judge every listed
//! file that is not unchanged — one [`Verdict`] each — then cut the ready ones into batches.

use std::path::Path;
use std::time::{Instant, SystemTime};

use state_store::{FileEntry, PlannedFile, RelPath, State};

use super::{ScanReport, Scanner, ScannerConfig};
use crate::ScanError;
use crate::cleanup::CleanupTask;
use crate::diff::{Change, Diff, DiffEntry, MovedAway, OnChange, Seen, lookup, merge, start_for};
use crate::identity::Identity;
use crate::listing::{self, DirScope, ListedFile, YoungFiles};
use crate::plan::cut_batches;
use crate::process::{AppendRange, whole_lines};
use crate::readiness::{NotReady, Sightings};
use crate::scanner::retry::Retries;
use crate::scanner::{DrainMode, Leftover};
use crate::telemetry::{self, FileLeftAlone, FileRenamed, FutureMtime, PhaseTimed};

/// What one listing found, and the batches to run: the part of a scan that only reads.
pub(super) struct Survey {
    /// The scan's report so far (no batches yet).
    pub(super) report: ScanReport,
    /// Ready files, cut into batches.
    pub(super) batches: Vec<Vec<PlannedFile>>,
    /// Tracked paths the last walk of the whole tree did not find (and no later walk found
    /// again): dropped from the state at the next snapshot.
    pub(super) gone: Vec<RelPath>,
    /// Links, FIFOs, sockets and devices the listing skipped.
    pub(super) skipped_special: u64,
    /// Committed files left over by an unfinished cleanup.
    pub(super) cleanup: Vec<CleanupTask>,
    /// New paths of processed files recognised by content, with their entries.
    pub(super) renames: Vec<(RelPath, FileEntry)>,
    /// The directories of the new files that are not ready yet: where a scan woken for them
    /// looks.
    pub(super) waiting_dirs: DirScope,
    /// Free space of the watched volume, if it could be read.
    pub(super) free_bytes: Option<u64>,
    /// Disk space the watched directory takes ([`Listing::disk_bytes`](listing::Listing)),
    /// from a walk of the whole tree only.
    pub(super) disk_bytes: Option<u64>,
}

impl Scanner {
    /// Surveys the watch root on a worker thread: listing, diff, readiness and batching walk
    /// the directory and merge it with the whole state, blocking IO and CPU work. The state
    /// and the sightings tracker travel there and back by value.
    pub(super) async fn survey(&mut self, scope: Option<DirScope>) -> Result<Survey, ScanError> {
        let config = self.config.clone();
        let state = std::mem::take(&mut self.state);
        let mut sightings = std::mem::take(&mut self.sightings);
        let mut retries = std::mem::take(&mut self.retries);
        let drain = self.draining;
        // What the last walk of the whole tree found gone is kept through walks of a few
        // directories only while events are watched: a file that comes back elsewhere is then
        // looked at (and found again) before a snapshot can forget it.
        let gone = std::mem::take(&mut self.gone);
        let gone = if scope.is_none() || self.touched.watching() {
            gone
        } else {
            Vec::new()
        };
        let joined = tokio::task::spawn_blocking(move || {
            let scope = scope.map(|scope| (scope, gone));
            let survey = survey(
                &config,
                &state,
                &mut sightings,
                &mut retries,
                drain,
                scope.as_ref().map(|(scope, gone)| (scope, gone.as_slice())),
            );
            (state, sightings, retries, survey)
        })
        .await;
        match joined {
            Ok((state, sightings, retries, survey)) => {
                self.state = state;
                self.sightings = sightings;
                self.retries = retries;
                survey
            }
            Err(e) => {
                // The state went down with the worker: read it again.
                self.needs_reload = true;
                Err(ScanError::Worker {
                    task: "the survey (the state will be reloaded)",
                    source: e,
                })
            }
        }
    }
}

/// What to do with one listed file that is not unchanged.
#[derive(Debug)]
enum Verdict {
    /// One of Gleaner's own files in the watched directory (the root id, a file under the
    /// private name of its cleanup): never collected, never a leftover.
    Ours,
    /// Never collected: left out by the name globs, or a ready marker.
    Excluded,
    /// A processed file that changed: left alone, as `on_change` says.
    LeftAlone(&'static str),
    /// A processed file under a new name: recorded there, not processed again.
    Renamed {
        /// Its old path.
        was: RelPath,
        /// Its entry, to record under the new path.
        entry: FileEntry,
    },
    /// Complete: processed in this scan.
    Ready(PlannedFile),
    /// Not complete yet.
    Waiting(NotReady),
}

/// Lists `config.watch_dir`, merges the listing with `state`, judges every file and cuts the
/// ready ones into batches. During a drain (`drain` is given), the files still waiting are
/// named in the report, and a writer that is gone no longer makes files wait but for their
/// names. Blocking: run it on a worker thread.
fn survey(
    config: &ScannerConfig,
    state: &State,
    sightings: &mut Sightings,
    retries: &mut Retries,
    drain: Option<DrainMode>,
    partial: Option<(&DirScope, &[RelPath])>,
) -> Result<Survey, ScanError> {
    let scope = partial.map(|(scope, _)| scope);
    let listing_started = Instant::now();
    let young = takes_young(config, drain.is_some()).then_some(&sightings.young);
    let (diff, listing, mut cleanup) = list_and_diff(config, state, partial, young)?;
    phase_timed("list", listing_started);
    let diff_started = Instant::now();
    let listed_at = listing.started_at.unwrap_or_else(SystemTime::now);
    let seen = Seen::new(&diff, state, &listing.unknown);
    if scope.is_none() {
        retries.keep_listed(&seen);
    }
    cleanup.extend(resumed_cleanup(config, &diff, state));
    let mut report = ScanReport {
        listed: listing.listed,
        listed_at: Some(listed_at),
        gone: if scope.is_none() { diff.gone.len() } else { 0 },
        ..ScanReport::default()
    };
    let mut judge = Judge {
        config,
        root: config.watch_dir.as_path(),
        state,
        seen: &seen,
        listed_at,
        sightings,
        retries,
        writer_gone: drain == Some(DrainMode::WriterGone),
        moved_away: match config.identity {
            Identity::Content => MovedAway::of(&diff, state),
            Identity::Path => MovedAway::default(),
        },
    };
    let mut sorted = judge.sort(&diff, drain.is_some(), &mut report);
    judge.sightings.young = std::mem::take(&mut sorted.young);
    judge.end_listing(scope, &mut report);
    phase_timed("diff", diff_started);
    report.ready = sorted.ready.len();
    report.listing_problems = listing.problems;
    report.scope_dirs = scope.map_or(0, DirScope::len);
    Ok(Survey {
        waiting_dirs: sorted.waiting_dirs,
        report,
        batches: cut_batches(sorted.ready, config.limits),
        gone: diff.gone,
        skipped_special: listing.skipped_special,
        cleanup,
        renames: sorted.renames,
        free_bytes: free_bytes(&config.watch_dir),
        disk_bytes: scope.is_none().then_some(listing.disk_bytes),
    })
}

/// Reports how long a phase of the survey took, from `started`.
fn phase_timed(phase: &'static str, started: Instant) {
    telemetry::emit(PhaseTimed {
        phase,
        elapsed: started.elapsed(),
    });
}

/// Free space of the volume of `dir`, in bytes, if it could be read.
fn free_bytes(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}
/// Walks the whole root, or the directories of `partial`'s scope, and merges what it finds with
/// `state` in one pass: the files that are not unchanged, what the walk found, and the cleanup
/// tasks of committed files still here (an earlier cleanup did not finish).
fn list_and_diff(
    config: &ScannerConfig,
    state: &State,
    partial: Option<(&DirScope, &[RelPath])>,
    young: Option<&YoungFiles>,
) -> Result<(Diff, listing::Listing, Vec<CleanupTask>), ScanError> {
    let root = config.watch_dir.as_path();
    let nothing_known = YoungFiles::default();
    let young = young.unwrap_or(&nothing_known);
    let rules = &config.cleanup;
    let mut cleanup = Vec::new();
    // Committed files still here and unchanged, which the cleanup rules remove or move: an
    // earlier attempt did not finish (a crash, an error), so now.
    let mut leftover = |file: &ListedFile, entry: &FileEntry| {
        if !rules.is_noop() {
            cleanup.extend(rules.task(&file.path, entry));
        }
    };
    let (mut diff, listing) = match partial {
        None => listing::walk(root, config.workers, |walk| {
            merge(walk, state, &mut leftover)
        })?,
        // A few directories named by events: their files looked up in the state; the files
        // found again that the last walk of the whole tree reported gone are not gone.
        Some((scope, gone)) => {
            listing::walk_dirs_knowing(root, scope, config.workers, young, |walk| {
                let mut still_gone = gone.to_vec();
                let found = walk.inspect(|file| {
                    if gone.binary_search(&file.path).is_ok() {
                        still_gone.retain(|path| *path != file.path);
                    }
                });
                let mut diff = lookup(found, state, &mut leftover);
                diff.gone = still_gone;
                diff
            })?
        }
    };
    // Files waiting under the private name of a cleanup that keeps failing are still here:
    // their committed entries are not gone (a snapshot would forget them, and the file would
    // be processed again once put back).
    let mut held: Vec<RelPath> = diff
        .entries
        .iter()
        .filter_map(|entry| crate::cleanup::held_for_cleanup(&entry.file, state))
        .collect();
    if !held.is_empty() {
        held.sort_unstable();
        diff.gone.retain(|path| held.binary_search(path).is_err());
    }
    Ok((diff, listing, cleanup))
}

/// The files of one listing by what becomes of them.
#[derive(Default)]
struct Sorted {
    ready: Vec<PlannedFile>,
    renames: Vec<(RelPath, FileEntry)>,
    /// The directories of the files not ready yet.
    waiting_dirs: DirScope,
    /// The files too young, for the next scan's walk.
    young: YoungFiles,
}

/// True if the walk may take files known too young as they were: a drain judges files by more
/// than their age (a writer gone, its last modification), and stability needs each sighting,
/// so both examine every file (and need no record of the young ones).
fn takes_young(config: &ScannerConfig, draining: bool) -> bool {
    !draining && config.readiness.stable_for.is_none()
}

/// The directory of a file's path (empty: the root).
fn parent_of(path: &[u8]) -> &[u8] {
    memchr::memrchr(b'/', path).map_or(&path[..0], |slash| &path[..slash])
}

/// Files under the private name of a cleanup that a crash cut short: finished, or put back.
/// They are new to the state, so they are among the diff's entries.
fn resumed_cleanup(config: &ScannerConfig, diff: &Diff, state: &State) -> Vec<CleanupTask> {
    let rules = &config.cleanup;
    if rules.is_noop() {
        return Vec::new();
    }
    diff.entries
        .iter()
        .filter(|entry| entry.change == Change::New)
        .filter_map(|entry| rules.resume(&entry.file, state))
        .collect()
}

/// Judges the files of one listing.
struct Judge<'a> {
    config: &'a ScannerConfig,
    root: &'a Path,
    state: &'a State,
    seen: &'a Seen<'a>,
    /// When the listing started: ages and stability windows are measured against it.
    listed_at: SystemTime,
    sightings: &'a mut Sightings,
    /// Files held back for another attempt.
    retries: &'a Retries,
    /// The writer is gone (a drain in `DrainMode::WriterGone`): only in-progress names wait.
    writer_gone: bool,
    /// Processed files that left their paths, when files are recognised by content.
    moved_away: MovedAway,
}

impl Judge<'_> {
    /// Judges every file of `diff`, counting them in `report` (and, in a drain, naming those
    /// still waiting), and sorts them by what becomes of them.
    fn sort(&mut self, diff: &Diff, draining: bool, report: &mut ScanReport) -> Sorted {
        let mut sorted = Sorted::default();
        let records_young = takes_young(self.config, draining);
        for entry in &diff.entries {
            let path = &entry.file.path;
            // The writer's last sign of life: any file it may still be writing or finishing
            // (in-progress names and markers included; not files the globs leave out).
            let modified = crate::readiness::mtime(entry.file.mtime_ns);
            if modified <= self.listed_at
                && self.config.readiness.names.wants(path.as_bytes())
                && !is_ours(path)
            {
                report.last_modified =
                    Some(report.last_modified.map_or(modified, |t| t.max(modified)));
            }
            match self.classify(entry) {
                Verdict::Ours => {}
                Verdict::Excluded => report.excluded += 1,
                Verdict::LeftAlone(why) => {
                    report.changed += 1;
                    telemetry::emit(FileLeftAlone { path, why });
                }
                Verdict::Renamed { was, entry } => {
                    report.new_files += 1;
                    telemetry::emit(FileRenamed { path, was: &was });
                    sorted.renames.push((path.clone(), entry));
                }
                Verdict::Ready(file) => {
                    report.new_files += 1;
                    sorted.ready.push(file);
                }
                Verdict::Waiting(why) => {
                    if let NotReady::TooYoung { ready_at } = why
                        && records_young
                    {
                        sorted.young.insert(&entry.file, ready_at);
                    }
                    sorted.waiting_dirs.add(parent_of(path.as_bytes()), false);
                    report.new_files += 1;
                    report.count_waiting(why);
                    if draining {
                        report.waiting.push(Leftover {
                            path: path.clone(),
                            reason: why.into(),
                        });
                    }
                }
            }
        }
        sorted
    }

    /// Ends the listing for the stability and clock-skew trackers (a scoped listing only for
    /// the directories it covered), and reports files newly seen with a future mtime.
    fn end_listing(&mut self, scope: Option<&DirScope>, report: &mut ScanReport) {
        report.future_mtime = self.sightings.future_files();
        for path in self.sightings.take_newly_future() {
            telemetry::emit(FutureMtime {
                path: &path,
                tolerance: self.config.readiness.max_clock_skew,
            });
        }
        match scope {
            None => self.sightings.end_listing(),
            Some(scope) => self
                .sightings
                .end_partial_listing(|path| scope.covers(path)),
        }
    }

    /// The verdict on one listed file that is not unchanged.
    fn classify(&mut self, entry: &DiffEntry) -> Verdict {
        let readiness = &self.config.readiness;
        let appending = self.config.on_change == OnChange::Append;
        if is_ours(&entry.file.path) {
            return Verdict::Ours;
        }
        if !readiness.collects(entry.file.path.as_bytes()) {
            return Verdict::Excluded;
        }
        let tracked = self.state.get(&entry.file.path);
        let Some(start) = start_for(self.root, self.config.on_change, entry, tracked.as_ref())
        else {
            return Verdict::LeftAlone("changed since processed");
        };
        let ready = if self.writer_gone {
            readiness.judge_writer_gone(&entry.file)
        } else {
            readiness.judge(
                self.root,
                &entry.file,
                self.seen,
                self.listed_at,
                self.sightings,
            )
        };
        if let Err(why) = ready {
            return Verdict::Waiting(why);
        }
        if let Some(at) = self.retries.wait(&entry.file, self.listed_at) {
            return Verdict::Waiting(NotReady::Retrying { at });
        }
        // A complete file new at its path may be a processed one, renamed (checked only once
        // it is ready: a file still being written must not be taken for a finished one).
        if start == 0 && matches!(entry.change, Change::New | Change::Replaced) {
            if let Some((was, renamed)) =
                self.moved_away
                    .take_match(self.root, &entry.file, appending)
            {
                return Verdict::Renamed {
                    was,
                    entry: renamed,
                };
            }
        }
        let end = match self.planned_end(entry, start, appending) {
            Ok(end) => end,
            Err(verdict) => return verdict,
        };
        let file = &entry.file;
        Verdict::Ready(PlannedFile {
            path: file.path.clone(),
            size: end,
            mtime_ns: file.mtime_ns,
            inode: file.inode,
            btime_ns: file.btime_ns,
            start,
        })
    }

    /// Where the processing of a ready file that starts at `start` ends: its size, or when
    /// `appending`, the end of its last whole line. `Err` is the verdict when it cannot be
    /// processed yet, or at all.
    fn planned_end(&self, entry: &DiffEntry, start: u64, appending: bool) -> Result<u64, Verdict> {
        if !appending {
            return Ok(entry.file.size);
        }
        // Appending: whole lines only; the partial last line waits until it is complete.
        match whole_lines(self.root, &entry.file, start) {
            // Its stream cannot be resumed, and processing it whole again would count its
            // start twice.
            AppendRange::Compressed => Err(Verdict::LeftAlone("compressed file grew")),
            // A writer that is gone will not finish its last line: take it as it is.
            _ if self.writer_gone => Ok(entry.file.size),
            AppendRange::Lines(_, end) => Ok(end),
            AppendRange::Partial => Err(Verdict::Waiting(NotReady::PartialLine)),
        }
    }
}

/// True for Gleaner's own files in the watched directory: the root id (and its temporary
/// name while it is created), and files under the private name of a cleanup.
fn is_ours(path: &RelPath) -> bool {
    let bytes = path.as_bytes();
    let name = &bytes[memchr::memrchr(b'/', bytes).map_or(0, |slash| slash + 1)..];
    name.starts_with(super::startup::ROOT_ID_FILE.as_bytes())
        || crate::cleanup::untaken(path).is_some()
}

impl ScanReport {
    /// Counts a new file that is not ready, by why; remembers when the first waiting file can
    /// become ready.
    fn count_waiting(&mut self, why: NotReady) {
        match why {
            NotReady::PartialLine => self.partial_line += 1,
            NotReady::InProgressName => self.in_progress += 1,
            NotReady::NoMarker => self.no_marker += 1,
            NotReady::TooYoung { ready_at: at } => {
                self.too_young += 1;
                self.next_ready_at = Some(self.next_ready_at.map_or(at, |t| t.min(at)));
            }
            NotReady::Unstable { recheck_at: at } => {
                self.unstable += 1;
                self.next_ready_at = Some(self.next_ready_at.map_or(at, |t| t.min(at)));
            }
            NotReady::Retrying { at } => {
                self.retrying += 1;
                self.next_ready_at = Some(self.next_ready_at.map_or(at, |t| t.min(at)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files found too young are recorded for the next walk only where that walk may take them
    /// as they were: not in a drain, not with a stability window (both examine every file).
    #[test]
    fn files_found_too_young_are_recorded_only_where_a_walk_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fresh.log"), "a\n").unwrap();
        let source = state_store::SourceId::new("young").unwrap();
        let mut config = ScannerConfig::new(dir.path(), source);
        config.readiness.min_age = std::time::Duration::from_secs(3600);
        let recorded = |config: &ScannerConfig, drain| {
            let mut sightings = Sightings::default();
            let survey = survey(
                config,
                &State::new(),
                &mut sightings,
                &mut Retries::default(),
                drain,
                None,
            )
            .unwrap();
            assert_eq!(survey.report.too_young, 1);
            sightings.young.len()
        };
        assert_eq!(recorded(&config, None), 1, "an ordinary scan records it");
        assert_eq!(
            recorded(&config, Some(DrainMode::Wait)),
            0,
            "a drain does not"
        );
        config.readiness.stable_for = Some(std::time::Duration::from_secs(1));
        assert_eq!(recorded(&config, None), 0, "nor does a stability window");
    }
}
