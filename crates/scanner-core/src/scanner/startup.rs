//! Before the first scan: the checks that need the file system or the stores, loading the
//! state, and the guard against a silent rescan.

use std::path::{Path, PathBuf};

use state_store::{Location, Origin, SourceId, StateError};

use super::Scanner;
use super::workers::blocking;
use crate::cleanup::CleanupRules;
use crate::listing;
use crate::telemetry::{
    RescanAllowed, SourceAdopted, StaleObjectsRemoved, StateLoaded, TemporariesRemoved,
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
        .with_layout(config.output_layout);
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

/// This writer's watch root: its root id (kept in [`ROOT_ID_FILE`], created when missing; 0
/// where the directory cannot be written), the host name and the directory.
pub(super) async fn origin(watch_dir: &Path) -> Result<Origin, ScanError> {
    let dir = watch_dir.to_path_buf();
    blocking("reading the root id", move || {
        Ok(Origin {
            root_id: root_id(&dir),
            host: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            watch_dir: dir.display().to_string(),
        })
    })
    .await
}

/// The root id kept in `dir`, created when there is none (written where no other process can
/// see it, then linked in, so that two processes agree); 0 if it cannot be read or written.
fn root_id(dir: &Path) -> u64 {
    let path = dir.join(ROOT_ID_FILE);
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| u64::from_str_radix(text.trim(), 16).ok())
    };
    if let Some(id) = read(&path) {
        return id;
    }
    let id = fastrand::u64(1..);
    match link_new_file(dir, &path, format!("{id:016x}\n").as_bytes()) {
        Ok(()) => id,
        // Another process linked its own first: that one counts.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path).unwrap_or(0),
        Err(_) => 0,
    }
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

/// What a reload of the state log found; told once the caller knows the start succeeded.
pub(super) struct LoadSummary {
    generation: u64,
    tracked_files: usize,
    last_commit_ms: Option<u64>,
    objects: usize,
    bytes: u64,
    interrupted: Option<u64>,
}

impl LoadSummary {
    pub(super) fn event<'a>(&self, location: &'a Location) -> StateLoaded<'a> {
        StateLoaded {
            location,
            generation: self.generation,
            tracked_files: self.tracked_files,
            last_commit_ms: self.last_commit_ms,
            objects: self.objects,
            bytes: self.bytes,
            interrupted: self.interrupted,
        }
    }
}

impl Scanner {
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
        };
        self.state = loaded.state;
        self.pending = loaded.pending;
        self.pending_redos = loaded.pending_redos;
        self.needs_reload = false;
        Ok(summary)
    }

    /// Refuses to start when another watch root wrote the last generation (that recorded
    /// one), unless `adopt_source` takes the source id over.
    pub(super) fn refuse_another_root(&self) -> Result<(), ScanError> {
        let (Some(theirs), Some(ours)) = (self.state.last_origin(), self.log.origin()) else {
            return Ok(());
        };
        if theirs.same_root(ours) {
            return Ok(());
        }
        if self.config.adopt_source {
            self.observer.emit(SourceAdopted { theirs, ours });
            return Ok(());
        }
        Err(ScanError::AnotherRoot {
            source_id: self.config.source_id.to_string(),
            generation: self.state.generation(),
            theirs: theirs.to_string(),
            ours: ours.to_string(),
        })
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
        self.state.rebase(newest);
        self.log.store_snapshot(&self.state).await?;
        self.pending = None;
        self.snapshots.loaded(newest);
        Ok(())
    }

    /// Removes what a process killed during a local write left behind, then checks that both
    /// locations can be written, and fence: all before the first scan.
    pub(super) async fn prepare_storage(&self) -> Result<(), ScanError> {
        self.observer.emit(TemporariesRemoved {
            count: self.log.remove_orphaned_temporaries()
                + self.output.remove_orphaned_temporaries(),
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
        let first = root_id(dir.path());
        assert_ne!(first, 0);
        assert_eq!(
            root_id(dir.path()),
            first,
            "a second start reads the same id"
        );
        assert_eq!(names(dir.path()), [ROOT_ID_FILE]);
        let text = std::fs::read_to_string(dir.path().join(ROOT_ID_FILE)).unwrap();
        assert_eq!(text, format!("{first:016x}\n"));
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
    fn an_unwritable_directory_gives_root_id_zero() {
        let missing = Path::new("/nonexistent/gleaner/watch");
        assert_eq!(root_id(missing), 0);
    }
}
