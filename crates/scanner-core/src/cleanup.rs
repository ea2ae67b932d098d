//! After the commit: deleting or moving processed files, and moving failed ones out of the way.
//!
//! Cleanup frees the shared volume (an `emptyDir` that fills up stops the emitter), and is
//! safe because of when and how it runs:
//!
//! * **Only committed files.** Cleanup runs after a batch's delta is committed, and at every
//!   scan for files the state records as committed and that the listing shows unchanged. A file
//!   that is planned, being processed, or not yet committed is never touched.
//! * **Only the committed file.** Just before acting, the file is examined again: if its inode,
//!   birth time, size or modification time differ from what was committed (it grew, or another
//!   file took its name), it is left alone.
//! * **Idempotent, and retried from state.** A file that is already gone counts as cleaned; a
//!   crash or an error between the commit and the cleanup leaves the file in place, committed
//!   and unchanged, so the next scan does it. A move that had to copy across file systems and
//!   was interrupted is recognised at the destination (same size and modification time) and not
//!   duplicated.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use state_store::{FileEntry, RelPath};

use crate::ConfigError;
use crate::listing::{ListedFile, absolute};
use crate::telemetry::{self, FileCleanedUp};

/// What happens to a file once its result is committed (`--after`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AfterCommit {
    /// Leave it where it is.
    #[default]
    Keep,
    /// Delete it.
    Delete,
    /// Move it below this directory, keeping its path relative to the watch root.
    Move(PathBuf),
}

impl std::str::FromStr for AfterCommit {
    type Err = ConfigError;

    /// Parses `keep`, `delete` or `move:DIR`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.strip_prefix("move:") {
            Some("") => Err(ConfigError::InvalidValue {
                value: s.to_string(),
                expected: "a directory after move:, like move:/data/done",
            }),
            Some(dir) => Ok(Self::Move(PathBuf::from(dir))),
            None => {
                let choices = [("keep", Self::Keep), ("delete", Self::Delete)];
                ConfigError::choose(s, &choices, "keep, delete or move:DIR")
            }
        }
    }
}

/// What to do with committed files: [`AfterCommit`] for processed ones, an optional
/// quarantine directory for failed ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupRules {
    /// For files processed successfully.
    pub after: AfterCommit,
    /// Failed files are moved below this directory (keeping their relative path).
    pub quarantine: Option<PathBuf>,
}

impl CleanupRules {
    /// True if no file is ever touched.
    pub fn is_noop(&self) -> bool {
        self.after == AfterCommit::Keep && self.quarantine.is_none()
    }

    /// The directories files are moved to.
    pub fn destinations(&self) -> Vec<&Path> {
        let mut dirs = Vec::new();
        if let AfterCommit::Move(dir) = &self.after {
            dirs.push(dir.as_path());
        }
        dirs.extend(self.quarantine.as_deref());
        dirs
    }

    /// The cleanup of one committed file, if these rules do anything to it.
    pub(crate) fn task(&self, path: &RelPath, entry: &FileEntry) -> Option<CleanupTask> {
        let action = if entry.outcome.is_failed() {
            Action::Move {
                dir: self.quarantine.clone()?,
                kind: "quarantine",
            }
        } else {
            match &self.after {
                AfterCommit::Keep => return None,
                AfterCommit::Delete => Action::Delete,
                AfterCommit::Move(dir) => Action::Move {
                    dir: dir.clone(),
                    kind: "move",
                },
            }
        };
        Some(CleanupTask {
            file: ListedFile {
                path: path.clone(),
                size: entry.size,
                mtime_ns: entry.mtime_ns,
                inode: entry.inode,
                btime_ns: entry.btime_ns,
            },
            generation: entry.generation,
            action,
        })
    }
}

/// One committed file to delete or move.
#[derive(Clone, Debug)]
pub(crate) struct CleanupTask {
    /// The file as committed: it is touched only if it is still exactly this.
    pub(crate) file: ListedFile,
    /// The generation that committed it (names a moved file when its name is taken).
    pub(crate) generation: u64,
    action: Action,
}

#[derive(Clone, Debug)]
enum Action {
    Delete,
    Move { dir: PathBuf, kind: &'static str },
}

impl Action {
    fn label(&self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Move { kind, .. } => kind,
        }
    }
}

/// How a round of cleanup went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Files deleted or moved (or found already gone).
    pub done: usize,
    /// Files left because they changed since their commit.
    pub skipped: usize,
    /// Files whose cleanup failed (retried at the next scan).
    pub failed: usize,
}

/// Carries out `tasks` below the watch root. Blocking: run it on a worker thread.
pub(crate) fn clean(root: &Path, tasks: &[CleanupTask]) -> CleanupReport {
    let mut report = CleanupReport::default();
    for task in tasks {
        let result = clean_one(root, task);
        match &result {
            Ok(Cleaned::Done) => report.done += 1,
            Ok(Cleaned::Changed) => report.skipped += 1,
            Err(_) => report.failed += 1,
        }
        telemetry::emit(FileCleanedUp {
            path: &task.file.path,
            action: task.action.label(),
            result: result
                .as_ref()
                .map(|cleaned| matches!(cleaned, Cleaned::Done)),
        });
    }
    report
}

enum Cleaned {
    Done,
    Changed,
}

fn clean_one(root: &Path, task: &CleanupTask) -> std::io::Result<Cleaned> {
    let source = absolute(root, &task.file.path);
    let meta = match std::fs::symlink_metadata(&source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Cleaned::Done),
        Err(e) => return Err(e),
    };
    if !is_same_file(&meta, &task.file) {
        return Ok(Cleaned::Changed);
    }
    match &task.action {
        Action::Delete => match std::fs::remove_file(&source) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(Cleaned::Done),
        },
        Action::Move { dir, .. } => {
            move_file(&source, &meta, dir, &task.file.path, task.generation)?;
            Ok(Cleaned::Done)
        }
    }
}

fn is_same_file(meta: &std::fs::Metadata, file: &ListedFile) -> bool {
    let btime = crate::listing::btime_ns(meta);
    meta.file_type().is_file()
        && meta.ino() == file.inode
        && (btime == 0 || file.btime_ns == 0 || btime == file.btime_ns)
        && meta.len() == file.size
        && crate::listing::mtime_ns(meta) == file.mtime_ns
}

/// Moves `source` to `dir/<rel>`, or to `dir/<rel>.<generation>` if another file has that name.
fn move_file(
    source: &Path,
    meta: &std::fs::Metadata,
    dir: &Path,
    rel: &RelPath,
    generation: u64,
) -> std::io::Result<()> {
    let target = absolute(dir, rel);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut alternative = target.clone().into_os_string();
    alternative.push(format!(".{generation}"));
    for destination in [target, PathBuf::from(alternative)] {
        match std::fs::symlink_metadata(&destination) {
            // A copy of this very file from an interrupted move: finish it.
            Ok(existing) if is_copy_of(&existing, meta) => return remove_source(source),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        return match std::fs::rename(source, &destination) {
            Ok(()) => Ok(()),
            Err(e) if Errno::from_io_error(&e) == Some(Errno::XDEV) => {
                copy_then_remove(source, meta, &destination)
            }
            Err(e) => Err(e),
        };
    }
    Err(std::io::Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} and its .{generation} alternative are both taken by other files",
            absolute(dir, rel).display()
        ),
    ))
}

fn is_copy_of(existing: &std::fs::Metadata, source: &std::fs::Metadata) -> bool {
    existing.file_type().is_file()
        && existing.len() == source.len()
        && crate::listing::mtime_ns(existing) == crate::listing::mtime_ns(source)
}

/// Across file systems: copy to a temporary name, give it the source's modification time,
/// sync, rename into place, and only then remove the source.
fn copy_then_remove(
    source: &Path,
    meta: &std::fs::Metadata,
    destination: &Path,
) -> std::io::Result<()> {
    let mut temporary = destination.as_os_str().to_owned();
    temporary.push(".gleaner-partial");
    let temporary = PathBuf::from(temporary);
    std::fs::copy(source, &temporary)?;
    let copy = std::fs::OpenOptions::new().write(true).open(&temporary)?;
    copy.set_modified(meta.modified()?)?;
    copy.sync_all()?;
    std::fs::rename(&temporary, destination)?;
    remove_source(source)
}

fn remove_source(source: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(source) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_store::Outcome;

    fn committed(root: &Path, rel: &str, outcome: Outcome) -> (RelPath, FileEntry) {
        (
            rel.into(),
            crate::testing::committed_entry(&root.join(rel), 7, outcome),
        )
    }

    #[test]
    fn parse_after() {
        assert_eq!("keep".parse(), Ok(AfterCommit::Keep));
        assert_eq!("delete".parse(), Ok(AfterCommit::Delete));
        assert_eq!("move:/a/b".parse(), Ok(AfterCommit::Move("/a/b".into())));
        assert!("move:".parse::<AfterCommit>().is_err());
        assert!("remove".parse::<AfterCommit>().is_err());
    }

    #[test]
    fn deletes_and_moves_only_the_committed_file_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("watch");
        let done = dir.path().join("done");
        let bad = dir.path().join("bad");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for name in ["sub/a.log", "b.log", "grown.log", "failed.log"] {
            std::fs::write(root.join(name), b"data\n").unwrap();
        }
        let rules = CleanupRules {
            after: AfterCommit::Move(done.clone()),
            quarantine: Some(bad.clone()),
        };
        let failed = Outcome::Failed {
            reason: "corrupt".into(),
        };
        let tasks: Vec<CleanupTask> = [
            committed(&root, "sub/a.log", Outcome::Done),
            committed(&root, "b.log", Outcome::Done),
            committed(&root, "grown.log", Outcome::Done),
            committed(&root, "failed.log", failed),
        ]
        .iter()
        .filter_map(|(p, e)| rules.task(p, e))
        .collect();
        // Appended to after its commit: not the committed file any more.
        std::fs::write(root.join("grown.log"), b"data\nmore\n").unwrap();
        // Another file already has b.log's name at the destination.
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(done.join("b.log"), b"an older b\n").unwrap();

        let report = clean(&root, &tasks);
        assert_eq!((report.done, report.skipped, report.failed), (3, 1, 0));
        assert_eq!(std::fs::read(done.join("sub/a.log")).unwrap(), b"data\n");
        assert_eq!(std::fs::read(done.join("b.log.7")).unwrap(), b"data\n");
        assert_eq!(std::fs::read(done.join("b.log")).unwrap(), b"an older b\n");
        assert_eq!(std::fs::read(bad.join("failed.log")).unwrap(), b"data\n");
        assert!(root.join("grown.log").exists());
        assert!(!root.join("sub/a.log").exists() && !root.join("b.log").exists());

        // Again: everything is already gone, nothing else moves.
        let again = clean(&root, &tasks);
        assert_eq!((again.done, again.skipped, again.failed), (3, 1, 0));
        assert!(!done.join("b.log.7.7").exists());

        let delete = CleanupRules {
            after: AfterCommit::Delete,
            quarantine: None,
        };
        std::fs::write(root.join("c.log"), b"c\n").unwrap();
        let (p, e) = committed(&root, "c.log", Outcome::Done);
        let report = clean(&root, &[delete.task(&p, &e).unwrap()]);
        assert_eq!(report.done, 1);
        assert!(!root.join("c.log").exists());
        // Keep, and failed files without a quarantine, are left alone.
        assert!(CleanupRules::default().task(&p, &e).is_none());
        let failed_entry = FileEntry {
            outcome: Outcome::Failed { reason: "x".into() },
            ..e
        };
        assert!(delete.task(&p, &failed_entry).is_none());
    }

    #[test]
    fn an_interrupted_copy_is_finished_not_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("watch");
        let done = dir.path().join("done");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(root.join("a.log"), b"data\n").unwrap();
        let meta = std::fs::metadata(root.join("a.log")).unwrap();
        // A crash after the copy was renamed into place, before the source was removed.
        copy_then_remove(&root.join("a.log"), &meta, &done.join("a.log")).unwrap();
        std::fs::write(root.join("a.log"), b"data\n").unwrap();
        let copy = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("a.log"))
            .unwrap();
        copy.set_modified(meta.modified().unwrap()).unwrap();
        drop(copy);
        let meta = std::fs::metadata(root.join("a.log")).unwrap();
        move_file(&root.join("a.log"), &meta, &done, &"a.log".into(), 3).unwrap();
        assert!(!root.join("a.log").exists());
        assert!(!done.join("a.log.3").exists(), "not moved a second time");
        assert_eq!(std::fs::read(done.join("a.log")).unwrap(), b"data\n");
    }
}
