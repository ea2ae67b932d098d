//! Before the first scan: the checks that need the file system or the stores, loading the
//! state, and the guard against a silent rescan.

use std::path::{Path, PathBuf};

use state_store::{DeltasRead, LEASE_RENEW, Location, Origin, SourceId, StateError};

use super::Scanner;
use super::workers::blocking;
use crate::cleanup::CleanupRules;
use crate::listing;
use crate::telemetry::{
    LeaseNotRenewed, RescanAllowed, SourceAdopted, SourceOpened, StaleObjectsRemoved, StateLoaded,
    TemporariesRemoved,
};
use crate::{ConfigError, ScanError};

/// The watch directory, checked to be a readable directory, made absolute and free of links.
pub(super) async fn resolve_watch_dir(root: &Path) -> Result<PathBuf, ScanError> {
    let root = root.to_path_buf();
    blocking("checking the watch directory", move || {
        listing::check_root(&root)?;
        std::fs::canonicalize(&root).map_err(|e| ScanError::WatchDir {
            path: root.clone(),
            reason: e.to_string(),
        })
    })
    .await
}

/// Refuses state and output locations whose objects would be collected as input: every folder
/// objects are written into, whatever the output layout (flat `<source-id>/`, hive
/// `source=<source-id>/date=<day>/`) and shipped leftovers included (`.leftovers/<source-id>/`,
/// with `config.ship_leftovers`), must neither lie inside the watched directory nor hold it
/// where objects land. Pure: nothing is written before it.
pub(super) fn check_locations(
    config: &super::ScannerConfig,
    watch_dir: &Path,
    [state, output]: [&Location; 2],
) -> Result<(), ConfigError> {
    use crate::output::{OutputSink, Overlap, WrittenFolder};
    let source_id: &SourceId = &config.source_id;
    let sink = OutputSink::new(output.clone(), source_id, config.compression)
        .with_layout(config.output_layout)
        .with_partitions(config.partitions()?);
    // The state log: its objects directly in `<source-id>/`.
    let state_log = WrittenFolder {
        what: "the state location",
        folder: state.child(source_id.as_str()),
        depth: Some(1),
    };
    let consequence = "its objects would be collected as input";
    for written in std::iter::once(state_log).chain(sink.written_folders(config.ship_leftovers)) {
        let what = format!("{} {}", written.what, written.folder);
        match written.collected_by(watch_dir) {
            None => {}
            Some(Overlap::FolderInsideWatch) => {
                return Err(ConfigError::InsideWatchDir {
                    what,
                    watch: watch_dir.to_path_buf(),
                    consequence,
                });
            }
            Some(Overlap::WatchInsideFolder) => {
                return Err(ConfigError::WatchDirInside {
                    what,
                    watch: watch_dir.to_path_buf(),
                    consequence,
                });
            }
        }
    }
    Ok(())
}

/// Creates the directories files are moved to, and refuses one inside the watched directory
/// (moved files would be collected again) unless it is hidden (never listed). The check comes
/// first, on the path the directory would have: a refused directory is not created.
pub(super) async fn prepare_cleanup_dirs(
    rules: &CleanupRules,
    watch_dir: &Path,
) -> Result<(), ScanError> {
    let destinations: Vec<PathBuf> = rules
        .destinations()
        .into_iter()
        .map(Path::to_path_buf)
        .collect();
    let watched = watch_dir.to_path_buf();
    blocking("creating cleanup directories", move || {
        for dir in destinations {
            let unusable = |source| ScanError::CleanupDir {
                dir: dir.clone(),
                source,
            };
            let absolute = resolve_dir(&dir).map_err(unusable)?;
            let hidden = absolute.strip_prefix(&watched).is_ok_and(|rel| {
                rel.components()
                    .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."))
            });
            if absolute.starts_with(&watched) && !hidden {
                return Err(ConfigError::InsideWatchDir {
                    what: format!("cleanup directory {}", dir.display()),
                    watch: watched.clone(),
                    consequence: "moved files would be collected again",
                }
                .into());
            }
            // The resolved path: `a/missing/../b` creates `a/b`, never `a/missing`.
            std::fs::create_dir_all(&absolute).map_err(unusable)?;
        }
        Ok(())
    })
    .await
}

/// The absolute path `dir` names, links resolved in the part of it that exists and `..` taken
/// lexically in the part that does not (nothing there can be a link yet), without creating
/// anything.
fn resolve_dir(dir: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let absolute = std::path::absolute(dir)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    let canonical = loop {
        match std::fs::canonicalize(existing) {
            Ok(canonical) => break canonical,
            Err(e) => match (existing.components().next_back(), existing.parent()) {
                (Some(last), Some(parent)) => {
                    missing.push(last);
                    existing = parent;
                }
                // The root itself cannot be resolved.
                _ => return Err(e),
            },
        }
    };
    let mut out = canonical;
    for component in missing.into_iter().rev() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The name of the file in the watched directory that keeps its root id: hidden, so never
/// processed.
pub(crate) const ROOT_ID_FILE: &str = ".gleaner-root";

/// This writer's watch root: its root id (kept in [`ROOT_ID_FILE`], created when missing with
/// `source_id` recorded in it, and worked out from the volume where the directory cannot be
/// written), the host name and the directory.
pub(super) async fn origin(watch_dir: &Path, source_id: &SourceId) -> Result<Origin, ScanError> {
    let (dir, source_id) = (watch_dir.to_path_buf(), source_id.to_string());
    blocking("reading the root id", move || {
        Ok(Origin {
            root_id: root_id(&dir, &source_id),
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            watch_dir: dir.display().to_string(),
        })
    })
    .await
}

/// What [`ROOT_ID_FILE`] holds: the root id (16 hex digits) on its first line, then the source
/// ids that collect the root, a line each: `source <id>` adds one, `adopt <id>` replaces all
/// before it (`--adopt-source`). Lines are only ever appended, each in one write, so that a
/// process killed while recording leaves the file as it was or with the whole line.
#[derive(Debug, PartialEq, Eq)]
struct RootRecord {
    id: u64,
    sources: Vec<String>,
}

impl RootRecord {
    fn read(path: &Path) -> Option<RootRecord> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        let id = u64::from_str_radix(lines.next()?.trim(), 16).ok()?;
        let mut sources: Vec<String> = Vec::new();
        for line in lines {
            match line.trim().split_once(' ') {
                Some(("source", id)) if !sources.iter().any(|s| s == id) => {
                    sources.push(id.to_string());
                }
                Some(("adopt", id)) => sources = vec![id.to_string()],
                _ => {}
            }
        }
        Some(RootRecord { id, sources })
    }
}

/// The root id kept in `dir`, created when there is none, with `source_id` recorded as the one
/// collecting it (written where no other process can see it, then linked in, so that two
/// processes agree). A new id is the volume's id for the directory ([`volume_root_id`]), so
/// that where it cannot be written (a read-only or full volume) every process that mounts it
/// finds the same id again.
fn root_id(dir: &Path, source_id: &str) -> u64 {
    let path = dir.join(ROOT_ID_FILE);
    if let Some(record) = RootRecord::read(&path) {
        return record.id;
    }
    let id = volume_root_id(dir);
    let contents = format!("{id:016x}\nsource {source_id}\n");
    match link_new_file(dir, &path, contents.as_bytes()) {
        Ok(()) => id,
        // Another process linked its own first: that one counts.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            RootRecord::read(&path).map_or(id, |record| record.id)
        }
        Err(_) => id,
    }
}

/// An id for the directory `dir` from what its volume says of it, the same for every process
/// that mounts it, on any node: its file system's id (for ext4 and xfs, from the file system's
/// UUID; for NFS, from the server's), and the directory's inode and birth time (a directory
/// deleted and made again is another root). Not 0. Where the volume tells nothing, a random
/// id: the directory is then a new root at every start.
fn volume_root_id(dir: &Path) -> u64 {
    let (Ok(meta), Ok(fs)) = (std::fs::metadata(dir), rustix::fs::statvfs(dir)) else {
        return fastrand::u64(1..);
    };
    let mut identity = Vec::with_capacity(40);
    identity.extend_from_slice(b"gleaner-root\0");
    identity.extend_from_slice(&fs.f_fsid.to_le_bytes());
    identity.extend_from_slice(&std::os::unix::fs::MetadataExt::ino(&meta).to_le_bytes());
    identity.extend_from_slice(&listing::btime_ns(&meta).to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&identity).max(1)
}

/// Whether this source id may collect the watch root, by the source ids recorded in it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RootClaim {
    /// Recorded for it (or nothing can be recorded: a read-only or full root).
    Ours,
    /// Recorded for other source ids: collecting it under this one would process every file
    /// again.
    Theirs(Vec<String>),
}

/// Claims the watch root `dir` for `config`'s source ([`claim_root`], with `config`'s
/// `--adopt-source` and `--share-root`), or refuses to collect it when other source ids are
/// recorded there.
pub(super) async fn claim_root_for(
    config: &super::ScannerConfig,
    dir: &Path,
) -> Result<(), ScanError> {
    let claim = claim_root(
        dir,
        &config.source_id,
        config.adopt_source,
        config.share_root,
    )
    .await?;
    match claim {
        RootClaim::Theirs(recorded) => Err(ScanError::RootCollected {
            file: dir.join(ROOT_ID_FILE),
            dir: dir.to_path_buf(),
            recorded: recorded.join(", "),
            ours: config.source_id.to_string(),
        }),
        RootClaim::Ours => Ok(()),
    }
}

/// Records `source_id` as collecting the watch root `dir` (in [`ROOT_ID_FILE`]), unless other
/// source ids are recorded: then `adopt` replaces them with it, `share` adds it to them, and
/// neither refuses.
pub(super) async fn claim_root(
    dir: &Path,
    source_id: &SourceId,
    adopt: bool,
    share: bool,
) -> Result<RootClaim, ScanError> {
    let (path, ours) = (dir.join(ROOT_ID_FILE), source_id.to_string());
    blocking("recording the source id in the watch root", move || {
        // Unreadable (read-only and never written): nothing is recorded, nothing can be.
        let Some(record) = RootRecord::read(&path) else {
            return Ok(RootClaim::Ours);
        };
        if record.sources.contains(&ours) {
            return Ok(RootClaim::Ours);
        }
        let line = if record.sources.is_empty() || share {
            format!("source {ours}\n")
        } else if adopt {
            format!("adopt {ours}\n")
        } else {
            return Ok(RootClaim::Theirs(record.sources));
        };
        // Where it cannot be written, nothing is recorded; the claim stands all the same.
        let _ = append_line(&path, &line);
        Ok(RootClaim::Ours)
    })
    .await
}

/// Appends `line` to the file at `path` in one write.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// Creates `path` in `dir` with `contents`, all at once: fails with `AlreadyExists` if it
/// exists. The file is written unnamed (`O_TMPFILE`) and then linked in, so a process killed
/// half-way leaves nothing behind; where the file system or a missing `/proc` does not allow
/// that, it is written under a temporary name, removed again after the link.
fn link_new_file(dir: &Path, path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Mode, OFlags};
    use std::io::Write;
    let unnamed = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    );
    if let Ok(fd) = unnamed {
        let mut file = std::fs::File::from(fd);
        file.write_all(contents)?;
        let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        match rustix::fs::linkat(CWD, proc_path.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::EXIST => return Err(e.into()),
            // No `/proc` (a chroot): the named way below.
            Err(_) => {}
        }
    }
    let temporary = dir.join(format!(
        "{}.{:016x}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        fastrand::u64(..)
    ));
    let linked =
        std::fs::write(&temporary, contents).and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    linked
}

/// Renews a writer's lease while it lives ([`Scanner::keep_lease`]).
pub(super) struct LeaseKeeper(tokio::task::JoinHandle<()>);

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a reload of the state log found; told once the caller knows the start succeeded.
pub(super) struct LoadSummary {
    generation: u64,
    tracked_files: usize,
    last_commit_ms: Option<u64>,
    objects: usize,
    bytes: u64,
    interrupted: Option<u64>,
    pub(super) deltas: DeltasRead,
    pub(super) spool_refused: Option<String>,
}

impl LoadSummary {
    pub(super) fn event<'a>(&'a self, location: &'a Location) -> StateLoaded<'a> {
        StateLoaded {
            location,
            generation: self.generation,
            tracked_files: self.tracked_files,
            last_commit_ms: self.last_commit_ms,
            objects: self.objects,
            bytes: self.bytes,
            interrupted: self.interrupted,
            deltas: self.deltas,
            spool_refused: self.spool_refused.as_deref(),
        }
    }
}

impl Scanner {
    /// Loads and checks what a new scanner starts from, then takes the source: the state, the
    /// watch root, the storage, the writer's lease and the commit records.
    pub(super) async fn start(&mut self) -> Result<(), ScanError> {
        // Read and verify the state before writing anything: damaged state must stop the process
        // with nothing written, not even a probe.
        let loaded = self.reload().await?;
        self.check_root(true).await?;
        self.refuse_silent_rescan().await?;
        self.prepare_storage().await?;
        self.take_lease().await?;
        self.record_commits().await?;
        self.observer.emit(loaded.event(self.log.location()));
        self.observer.emit(SourceOpened {
            source_id: self.config.source_id.as_str(),
        });
        Ok(())
    }

    /// Re-reads the state log: the committed state and an interrupted plan, if any.
    pub(super) async fn reload(&mut self) -> Result<LoadSummary, ScanError> {
        let loaded = self.log.load().await?;
        let count = loaded.stale.len();
        let removed = self.log.remove(loaded.stale).await;
        self.observer.emit(StaleObjectsRemoved {
            count,
            result: removed.as_ref().map(|_| ()),
        });
        self.snapshots
            .loaded(loaded.snapshot_generation.unwrap_or(0));
        let summary = LoadSummary {
            generation: loaded.state.generation(),
            tracked_files: loaded.state.len(),
            last_commit_ms: loaded.state.last_commit_ms(),
            objects: loaded.objects_read,
            bytes: loaded.bytes_read,
            interrupted: loaded.pending.as_ref().map(|p| p.generation),
            deltas: loaded.deltas,
            spool_refused: loaded.spool_refused,
        };
        self.state = loaded.state;
        self.pending = loaded.pending;
        self.pending_redos = loaded.pending_redos;
        self.unrecorded = self
            .output
            .manifest()
            .unrecorded(loaded.committed_outputs)
            .await?;
        self.needs_reload = false;
        Ok(summary)
    }

    /// Writes the commit records of committed generations that have none yet, in generation
    /// order ([`crate::manifest`]).
    pub(super) async fn record_commits(&mut self) -> Result<(), ScanError> {
        while let Some(commit) = self.unrecorded.first() {
            self.output.manifest().write(commit).await?;
            self.unrecorded.remove(0);
        }
        Ok(())
    }

    /// Refuses to go on when this source id belongs to another watch root:
    ///
    /// * this root was taken over by another and retired: it is a second live root under the
    ///   source id (two Pods of one name in two clusters), unless `adopt_source` takes the
    ///   source id back;
    /// * another root wrote the last generation: at start, a root in its place (the same
    ///   directory on the same host, a new root id: a Pod recreated with a fresh `emptyDir`)
    ///   takes over and retires it, and `adopt_source` takes over from any root; otherwise,
    ///   and always once running (`at_start` false), the source id is another root's.
    pub(super) async fn check_root(&mut self, at_start: bool) -> Result<(), ScanError> {
        let Some(ours) = self.log.origin() else {
            return Ok(());
        };
        if ours.root_id != 0 {
            if let Some(successor) = self.log.root_retired(ours.root_id).await? {
                if !(at_start && self.config.adopt_source) {
                    return Err(ScanError::RootRetired {
                        source_id: self.config.source_id.to_string(),
                        ours: ours.to_string(),
                        successor,
                    });
                }
                self.log.unretire_root(ours.root_id).await?;
            }
        }
        let Some(theirs) = self.state.last_origin() else {
            return Ok(());
        };
        // The root this process took over at its start, until its first commit.
        if theirs.same_root(ours) || self.taken_over.as_ref() == Some(theirs) {
            return Ok(());
        }
        let taking_over = at_start && (self.config.adopt_source || theirs.replaced_by(ours));
        if !taking_over {
            return Err(ScanError::AnotherRoot {
                source_id: self.config.source_id.to_string(),
                generation: self.state.generation(),
                theirs: theirs.to_string(),
                ours: ours.to_string(),
            });
        }
        if theirs.root_id != 0 {
            self.log.retire_root(theirs.root_id, ours).await?;
        }
        self.observer.emit(SourceAdopted {
            theirs,
            ours,
            deliberate: self.config.adopt_source,
        });
        self.taken_over = Some(theirs.clone());
        Ok(())
    }

    /// Refuses to start when the output location holds batches of this source beyond the
    /// committed state (state deleted, or restored from an old copy): starting would process
    /// those files again and duplicate their results. With `allow_rescan`, it records a base
    /// snapshot after the newest existing batch instead, so new batches never reuse its keys.
    pub(super) async fn refuse_silent_rescan(&mut self) -> Result<(), ScanError> {
        let committed = self.state.generation();
        let pending = self.pending.as_ref().map(|p| p.generation);
        let ahead: Vec<u64> = self
            .output
            .outputs_after(committed)
            .await?
            .into_iter()
            .map(|(generation, _)| generation)
            .filter(|g| Some(*g) != pending)
            .collect();
        let Some(&newest) = ahead.iter().max() else {
            return Ok(());
        };
        // A live writer that moved on since the log was loaded also explains outputs ahead of
        // it; such a writer always leaves a plan, delta or snapshot beyond our generation.
        if let Some(object) = self.log.first_after(committed, pending).await? {
            return Err(StateError::Fenced {
                location: self.log.location().to_string(),
                object: self.log.location().describe(&object.path),
                generation: object.generation,
            }
            .into());
        }
        let what = if committed == 0 {
            format!(
                "the state at {} is empty, but the output location already holds {} batch(es) \
                 of source id {:?} (up to generation {newest})",
                self.log.location(),
                ahead.len(),
                self.config.source_id.as_str()
            )
        } else {
            format!(
                "the state at {} is at generation {committed}, but the output location holds \
                 {} later batch(es) of source id {:?} (up to generation {newest}); was the state \
                 restored from an older copy?",
                self.log.location(),
                ahead.len(),
                self.config.source_id.as_str()
            )
        };
        if !self.config.allow_rescan {
            return Err(ScanError::RescanRefused { what });
        }
        self.observer.emit(RescanAllowed {
            what: &what,
            from_generation: newest + 1,
        });
        // The interrupted batch, if any, is dropped with the rest: its files are processed anew.
        self.record_commits().await?;
        self.state.rebase(newest);
        self.log.store_snapshot(&self.state).await?;
        self.pending = None;
        self.snapshots.loaded(newest);
        Ok(())
    }

    /// Notes another writer's live lease, if there is one; otherwise writes this writer's: the
    /// lease says to `gleaner state gc` (and a baseline, a replay) that the source has a live
    /// writer. Another writer's live lease is left as it is: a baseline or a replay refused for
    /// it must not leave its own in its place (which would outlive it by 5 minutes, and refuse
    /// the next attempt after the other writer stopped); a run writes its own at its first
    /// renewal.
    pub(super) async fn take_lease(&mut self) -> Result<(), ScanError> {
        let now_ms = super::baseline::now_ms();
        self.live_writer_at_open = self
            .log
            .lease()
            .await?
            .filter(|lease| lease.is_live(now_ms) && lease.writer_id != self.log.writer_id());
        if self.live_writer_at_open.is_none() {
            self.log.renew_lease().await?;
        }
        Ok(())
    }

    /// Renews the lease every [`LEASE_RENEW`] until the returned guard is dropped. A renewal
    /// that fails is told and tried again at the next one: the lease is advice, the fence of
    /// the commits is what keeps one writer.
    pub(super) fn keep_lease(&self) -> LeaseKeeper {
        let log = self.log.clone();
        LeaseKeeper(tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                if let Err(error) = log.renew_lease().await {
                    crate::telemetry::emit(LeaseNotRenewed { error: &error });
                }
            }
        }))
    }

    /// Removes this writer's lease (if it is still its own), at a clean exit: the source is
    /// then known to have no writer, without waiting for the lease to age
    /// ([`LEASE_TTL`](state_store::LEASE_TTL)).
    pub async fn release_lease(&self) -> Result<(), ScanError> {
        Ok(self.log.release_lease().await?)
    }

    /// Removes what a process killed during a local write left behind, then checks that both
    /// locations can be written, and fence: all before the first scan.
    pub(super) async fn prepare_storage(&self) -> Result<(), ScanError> {
        self.observer.emit(TemporariesRemoved {
            count: self.log.remove_orphaned_temporaries()
                + self.output.remove_orphaned_temporaries()
                + self.output.manifest().remove_orphaned_temporaries(),
        });
        let probe_id = self.log.writer_id();
        self.log.location().check_writable(probe_id).await?;
        self.output.check_writable(probe_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_root_id_is_created_once_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let first = root_id(dir.path(), "pod-a");
        assert_ne!(first, 0);
        assert_eq!(
            root_id(dir.path(), "pod-b"),
            first,
            "a second start reads the same id"
        );
        assert_eq!(names(dir.path()), [ROOT_ID_FILE]);
        let text = std::fs::read_to_string(dir.path().join(ROOT_ID_FILE)).unwrap();
        assert_eq!(text, format!("{first:016x}\nsource pod-a\n"));
        // The same as the volume says of the directory: what a process that cannot write
        // finds too.
        assert_eq!(first, volume_root_id(dir.path()));
    }

    #[tokio::test]
    async fn the_source_ids_of_a_root_are_recorded_in_it_and_another_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = |s: &str| -> SourceId { s.parse().unwrap() };
        root_id(dir.path(), "pod-a");
        let claim = |source: &str, adopt: bool, share: bool| {
            let (dir, source) = (dir.path().to_path_buf(), id(source));
            async move { claim_root(&dir, &source, adopt, share).await.unwrap() }
        };
        assert_eq!(claim("pod-a", false, false).await, RootClaim::Ours);
        assert_eq!(
            claim("pod-b", false, false).await,
            RootClaim::Theirs(vec!["pod-a".into()])
        );
        assert_eq!(claim("pod-b", false, true).await, RootClaim::Ours, "shared");
        assert_eq!(claim("pod-b", false, false).await, RootClaim::Ours);
        assert_eq!(claim("pod-a", false, false).await, RootClaim::Ours);
        assert_eq!(
            claim("pod-c", true, false).await,
            RootClaim::Ours,
            "adopted"
        );
        assert_eq!(
            claim("pod-a", false, false).await,
            RootClaim::Theirs(vec!["pod-c".into()])
        );
        // A root of an older build (the id alone) is claimed by its first collector.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join(ROOT_ID_FILE), "00000000000000ab\n").unwrap();
        let source = id("pod-x");
        assert_eq!(
            claim_root(old.path(), &source, false, false).await.unwrap(),
            RootClaim::Ours
        );
        assert_eq!(root_id(old.path(), "pod-y"), 0xab);
        assert_eq!(
            RootRecord::read(&old.path().join(ROOT_ID_FILE))
                .unwrap()
                .sources,
            ["pod-x"]
        );
    }

    #[test]
    fn linking_a_new_file_never_replaces_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "theirs").unwrap();
        let error = link_new_file(dir.path(), &path, b"ours").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs");
        assert_eq!(names(dir.path()), ["f"], "no temporary file is left");
    }

    #[test]
    fn cleanup_directories_resolve_without_being_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        for (given, resolved) in [
            ("link/new/deeper", "real/new/deeper"),
            ("real/missing/../done", "real/done"),
            ("link/./a/../../b", "b"),
        ] {
            assert_eq!(
                resolve_dir(&root.join(given)).unwrap(),
                root.join(resolved),
                "{given}"
            );
        }
        assert_eq!(names(&root), ["link", "real"], "nothing created");
        assert_eq!(names(&root.join("real")), Vec::<String>::new());
    }

    #[test]
    fn a_directory_without_a_volume_to_ask_gets_a_random_id() {
        let missing = Path::new("/nonexistent/gleaner/watch");
        assert_ne!(root_id(missing, "pod-a"), 0);
    }
}
