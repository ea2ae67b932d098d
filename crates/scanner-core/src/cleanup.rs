//! After the commit: deleting or moving processed files, and moving failed ones out of the way.
//!
//! Cleanup frees the shared volume (an `emptyDir` that fills up stops the emitter), and is
//! safe because of when and how it runs:
//!
//! * **Only committed files.** Cleanup runs after a batch's delta is committed, and at every
//!   scan for files the state records as committed and that the listing shows unchanged. A file
//!   that is planned, being processed, or not yet committed is never touched.
//! * **Only the committed file, without a race.** The file is first renamed to a private name
//!   beside it (`.gleaner-cleanup.<name>`: hidden, so never processed), then examined under
//!   that name: only if its inode, birth time, size and modification time are those
//!   committed is it deleted or moved. Another file that took the name meanwhile (it grew, or
//!   the emitter renamed a new file over it) is put back under its name, never removed.
//! * **Idempotent, and retried from state.** A file that is already gone counts as cleaned; a
//!   crash or an error between the commit and the cleanup leaves the file in place (or under its
//!   private name, which the next listing recognises), committed and unchanged, so the next
//!   scan finishes it. A move across file systems copies to a temporary name, syncs it, renames
//!   it into place and syncs the destination directory before the source goes; a file already
//!   at the destination counts as that copy only if it is the same file or has the same bytes,
//!   never by its size and modification time alone.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use state_store::{FileEntry, RelPath, State};

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
        // A baselined file was never processed: deleting or moving it would lose what was never
        // shipped.
        if entry.outcome.is_baselined() {
            return None;
        }
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
            taken: false,
        })
    }

    /// What to do with `listed`, a file under the private name of a cleanup that a crash cut
    /// short, given the state: finish the cleanup of the committed file it is, or put it back
    /// under its name if it is another file.
    pub(crate) fn resume(&self, listed: &ListedFile, state: &State) -> Option<CleanupTask> {
        let original = untaken(&listed.path)?;
        let committed = committed_entry(listed, &original, state);
        let mut task = match committed {
            Some(entry) => self.task(&original, &entry)?,
            None => CleanupTask {
                file: ListedFile {
                    path: original,
                    ..listed.clone()
                },
                generation: 0,
                action: Action::PutBack,
                taken: true,
            },
        };
        task.taken = true;
        Some(task)
    }
}

/// The entry of `original` in `state` if `listed` (under the private name of its cleanup) is
/// that very committed file: same inode (and birth time where known), size and mtime.
fn committed_entry(listed: &ListedFile, original: &RelPath, state: &State) -> Option<FileEntry> {
    state.get(original).filter(|entry| {
        listed.inode == entry.inode
            && (listed.btime_ns == 0 || entry.btime_ns == 0 || listed.btime_ns == entry.btime_ns)
            && listed.size == entry.size
            && listed.mtime_ns == entry.mtime_ns
    })
}

/// The path a committed file is known by, if `listed` is that file under the private name of a
/// cleanup still under way (one that failed, and is retried at every scan): the file is still
/// in the watched directory, so its entry must not be dropped as gone. Once the state forgot
/// it, the file would be taken for another one and put back under its name, to be processed a
/// second time.
pub(crate) fn held_for_cleanup(listed: &ListedFile, state: &State) -> Option<RelPath> {
    let original = untaken(&listed.path)?;
    committed_entry(listed, &original, state).map(|_| original)
}

/// The start of the private name a file takes while it is being cleaned up: hidden, so that
/// it is never processed, and recognised by the listing after a crash.
const TAKEN_PREFIX: &[u8] = b".gleaner-cleanup.";

/// The private name of `rel` while it is being cleaned up: beside it, in the same directory.
fn taken_path(rel: &RelPath) -> RelPath {
    let bytes = rel.as_bytes();
    let name_at = memchr::memrchr(b'/', bytes).map_or(0, |slash| slash + 1);
    RelPath::new([&bytes[..name_at], TAKEN_PREFIX, &bytes[name_at..]].concat())
}

/// Whether `path`'s file name is a private name of cleanup: its own renames are no news to
/// the scanner's file-system events.
pub(crate) fn is_private_name(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    path.file_name()
        .is_some_and(|name| name.as_bytes().starts_with(TAKEN_PREFIX))
}

/// The path a private name stands for, if `rel` is one.
pub(crate) fn untaken(rel: &RelPath) -> Option<RelPath> {
    let bytes = rel.as_bytes();
    let name_at = memchr::memrchr(b'/', bytes).map_or(0, |slash| slash + 1);
    let name = bytes[name_at..].strip_prefix(TAKEN_PREFIX)?;
    (!name.is_empty()).then(|| RelPath::new([&bytes[..name_at], name].concat()))
}

/// One committed file to delete or move.
#[derive(Clone, Debug)]
pub(crate) struct CleanupTask {
    /// The file as committed: it is touched only if it is still exactly this.
    pub(crate) file: ListedFile,
    /// The generation that committed it (names a moved file when its name is taken).
    pub(crate) generation: u64,
    action: Action,
    /// The file is already under its private name (a cleanup a crash cut short).
    taken: bool,
}

#[derive(Clone, Debug)]
enum Action {
    Delete,
    Move {
        dir: PathBuf,
        kind: &'static str,
    },
    /// Not a committed file: put it back under its name.
    PutBack,
}

impl Action {
    fn label(&self) -> &'static str {
        match self {
            Action::Delete => "delete",
            Action::Move { kind, .. } => kind,
            Action::PutBack => "put_back",
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

/// Carries out `tasks` below the watch root, and says which paths no longer hold their
/// committed file (deleted, moved, or already gone). Blocking: run it on a worker thread.
pub(crate) fn clean(root: &Path, tasks: &[CleanupTask]) -> (CleanupReport, Vec<RelPath>) {
    let mut report = CleanupReport::default();
    let mut removed = Vec::new();
    for task in tasks {
        let result = clean_one(root, task).map_err(|e| explain_denied(root, &task.file.path, e));
        match &result {
            Ok(Cleaned::Done) => {
                report.done += 1;
                removed.push(task.file.path.clone());
            }
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
    (report, removed)
}

enum Cleaned {
    Done,
    Changed,
}

/// A cleanup refused for lack of permission, said in full: the directory, Gleaner's uid and
/// groups, the directory's owner and mode, and what makes it work (the uid contract: the
/// emitter's directories writable by the Pod's `fsGroup`). Other errors are returned as they are.
fn explain_denied(root: &Path, path: &RelPath, error: std::io::Error) -> std::io::Error {
    use std::os::unix::fs::PermissionsExt;
    if error.kind() != ErrorKind::PermissionDenied {
        return error;
    }
    let file = absolute(root, path);
    let dir = file.parent().unwrap_or(root);
    let owner = std::fs::metadata(dir).map_or_else(
        |_| "unknown".to_string(),
        |meta| {
            format!(
                "{}:{}, mode {:o}",
                meta.uid(),
                meta.gid(),
                meta.permissions().mode() & 0o7777
            )
        },
    );
    let groups: Vec<String> = rustix::process::getgroups()
        .unwrap_or_default()
        .iter()
        .map(|gid| gid.as_raw().to_string())
        .collect();
    std::io::Error::new(
        ErrorKind::PermissionDenied,
        format!(
            "permission denied: uid {} (gid {}, groups [{}]) cannot rename or remove files in {} \
             (owner {owner}): the emitter must create its directories group-writable for the \
             Pod's fsGroup (umask 002), or Gleaner run as their owner ({error})",
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
            groups.join(","),
            dir.display(),
        ),
    )
}

fn clean_one(root: &Path, task: &CleanupTask) -> std::io::Result<Cleaned> {
    let source = absolute(root, &task.file.path);
    let private = absolute(root, &taken_path(&task.file.path));
    if let Action::PutBack = task.action {
        put_back(&private, &source)?;
        return Ok(Cleaned::Changed);
    }
    let meta = if task.taken {
        match std::fs::symlink_metadata(&private) {
            Ok(meta) if is_same_file(&meta, &task.file) => meta,
            Ok(_) => {
                put_back(&private, &source)?;
                return Ok(Cleaned::Changed);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Cleaned::Done),
            Err(e) => return Err(e),
        }
    } else {
        // A first look, to leave a changed file alone without renaming it.
        match std::fs::symlink_metadata(&source) {
            Ok(meta) if !is_same_file(&meta, &task.file) => return Ok(Cleaned::Changed),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Cleaned::Done),
            Err(e) => return Err(e),
        }
        match take(&source, &private, &task.file)? {
            Taken::Mine(meta) => meta,
            Taken::Another => return Ok(Cleaned::Changed),
            Taken::Gone => return Ok(Cleaned::Done),
        }
    };
    match &task.action {
        Action::Delete => remove_source(&private).map(|()| Cleaned::Done),
        Action::Move { dir, .. } => {
            move_file(&private, &meta, dir, &task.file.path, task.generation)?;
            Ok(Cleaned::Done)
        }
        Action::PutBack => unreachable!("handled above"),
    }
}

/// What [`take`] took.
enum Taken {
    /// The committed file, now under its private name; as examined there.
    Mine(std::fs::Metadata),
    /// Another file had the name: it was put back.
    Another,
    /// Nothing had the name any more.
    Gone,
}

/// Renames `source` to its private name `private`, then examines what was renamed: the
/// committed `file`, or another file, which is put back. Whatever happens to
/// the name meanwhile, only the file that is checked is ever removed or moved.
fn take(source: &Path, private: &Path, file: &ListedFile) -> std::io::Result<Taken> {
    match std::fs::rename(source, private) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Taken::Gone),
        Err(e) => return Err(e),
    }
    // One `statx` of the private name: a handle would tell no more (what is removed is what
    // has the private name then, with or without one) and costs an open and a close.
    let examined = std::fs::symlink_metadata(private);
    match examined {
        Ok(meta) if is_same_file(&meta, file) => Ok(Taken::Mine(meta)),
        // Another file, a link, a FIFO: not the committed file.
        _ => {
            put_back(private, source)?;
            Ok(Taken::Another)
        }
    }
}

/// Puts the file at `private` back under `source`, never over a file that took that name
/// meanwhile (which would lose it): then under `source.gleaner-restored`, a name that is
/// collected as a new file.
fn put_back(private: &Path, source: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let restore = |to: &Path| match renameat_with(CWD, private, CWD, to, RenameFlags::NOREPLACE) {
        // A file system without RENAME_NOREPLACE: a hard link fails the same way on a taken
        // name.
        Err(Errno::INVAL | Errno::NOSYS) => {
            std::fs::hard_link(private, to).and_then(|()| std::fs::remove_file(private))
        }
        result => result.map_err(std::io::Error::from),
    };
    match restore(source) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let mut elsewhere = source.as_os_str().to_owned();
            elsewhere.push(".gleaner-restored");
            restore(Path::new(&elsewhere))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        result => result,
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
            // This very file, or a copy of it from an interrupted move: finish it.
            Ok(existing) if is_copy_of(&destination, &existing, source, meta)? => {
                return remove_source(source);
            }
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

/// True if the file at `existing` is the file at `source` (a hard link), or a regular file with
/// exactly its bytes: only then may the source go. Never judged by size and modification time
/// alone: another file with the same size and mtime would be lost.
fn is_copy_of(
    existing: &Path,
    existing_meta: &std::fs::Metadata,
    source: &Path,
    source_meta: &std::fs::Metadata,
) -> std::io::Result<bool> {
    if !existing_meta.file_type().is_file() || existing_meta.len() != source_meta.len() {
        return Ok(false);
    }
    if (existing_meta.dev(), existing_meta.ino()) == (source_meta.dev(), source_meta.ino()) {
        return Ok(true);
    }
    same_bytes(existing, source)
}

/// True if the two files hold the same bytes.
fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    use crate::process::read_full;
    let (mut a, mut b) = (crate::process::open(a)?, crate::process::open(b)?);
    let (mut left, mut right) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let (n, m) = (
            read_full(&mut a, &mut left)?,
            read_full(&mut b, &mut right)?,
        );
        if left[..n] != right[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
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
    // The copy's name must be durable before the source goes.
    if let Some(dir) = destination.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
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

        let (report, removed) = clean(&root, &tasks);
        // The paths no longer holding their files: not the one that grew.
        assert_eq!(removed.len(), 3);
        assert!(!removed.iter().any(|p| p.as_bytes() == b"grown.log"));
        assert_eq!((report.done, report.skipped, report.failed), (3, 1, 0));
        assert_eq!(std::fs::read(done.join("sub/a.log")).unwrap(), b"data\n");
        assert_eq!(std::fs::read(done.join("b.log.7")).unwrap(), b"data\n");
        assert_eq!(std::fs::read(done.join("b.log")).unwrap(), b"an older b\n");
        assert_eq!(std::fs::read(bad.join("failed.log")).unwrap(), b"data\n");
        assert!(root.join("grown.log").exists());
        assert!(!root.join("sub/a.log").exists() && !root.join("b.log").exists());

        // Again: everything is already gone, nothing else moves.
        let (again, _) = clean(&root, &tasks);
        assert_eq!((again.done, again.skipped, again.failed), (3, 1, 0));
        assert!(!done.join("b.log.7.7").exists());

        let delete = CleanupRules {
            after: AfterCommit::Delete,
            quarantine: None,
        };
        std::fs::write(root.join("c.log"), b"c\n").unwrap();
        let (p, e) = committed(&root, "c.log", Outcome::Done);
        let (report, _) = clean(&root, &[delete.task(&p, &e).unwrap()]);
        assert_eq!(report.done, 1);
        assert!(!root.join("c.log").exists());
        // Keep, and failed files without a quarantine, are left alone.
        assert!(CleanupRules::default().task(&p, &e).is_none());
        let failed_entry = FileEntry {
            outcome: Outcome::Failed { reason: "x".into() },
            ..e.clone()
        };
        assert!(delete.task(&p, &failed_entry).is_none());
        // Baselined files were never shipped: no rule deletes, moves or quarantines them.
        let baselined = FileEntry {
            outcome: Outcome::Baselined,
            ..e
        };
        let every_rule = CleanupRules {
            after: AfterCommit::Move(root.join("done")),
            quarantine: Some(root.join("q")),
        };
        assert!(delete.task(&p, &baselined).is_none());
        assert!(every_rule.task(&p, &baselined).is_none());
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

    /// Gives `path` the modification time of `like`.
    fn same_mtime(path: &Path, like: &Path) {
        let mtime = std::fs::metadata(like).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    #[test]
    fn another_file_with_the_same_size_and_mtime_is_not_taken_for_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (root, done) = (dir.path().join("watch"), dir.path().join("done"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&done).unwrap();
        std::fs::write(root.join("a.log"), b"AAAA\n").unwrap();
        // At the destination: another file, same size, same modification time.
        std::fs::write(done.join("a.log"), b"BBBB\n").unwrap();
        same_mtime(&done.join("a.log"), &root.join("a.log"));
        let rules = CleanupRules {
            after: AfterCommit::Move(done.clone()),
            quarantine: None,
        };
        let (p, e) = committed(&root, "a.log", Outcome::Done);
        let (report, _) = clean(&root, &[rules.task(&p, &e).unwrap()]);
        assert_eq!(report.done, 1);
        assert_eq!(std::fs::read(done.join("a.log")).unwrap(), b"BBBB\n");
        assert_eq!(std::fs::read(done.join("a.log.7")).unwrap(), b"AAAA\n");
        assert!(!root.join("a.log").exists());
    }

    #[test]
    fn a_file_that_took_the_name_is_put_back_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.log"), b"committed\n").unwrap();
        let (p, e) = committed(root, "a.log", Outcome::Done);
        let task = CleanupRules {
            after: AfterCommit::Delete,
            quarantine: None,
        }
        .task(&p, &e)
        .unwrap();
        // The emitter renames a new file over the name, after the first look: `take` finds
        // another file under the private name, and puts it back.
        std::fs::write(root.join("new.log"), b"not processed yet\n").unwrap();
        std::fs::rename(root.join("new.log"), root.join("a.log")).unwrap();
        let private = root.join(".gleaner-cleanup.a.log");
        assert!(matches!(
            take(&root.join("a.log"), &private, &task.file).unwrap(),
            Taken::Another
        ));
        assert_eq!(
            std::fs::read(root.join("a.log")).unwrap(),
            b"not processed yet\n"
        );
        assert!(!private.exists());

        // Put back while a third file took the name meanwhile: neither is lost.
        std::fs::write(&private, b"taken\n").unwrap();
        std::fs::write(root.join("b.log"), b"third\n").unwrap();
        put_back(&private, &root.join("b.log")).unwrap();
        assert_eq!(std::fs::read(root.join("b.log")).unwrap(), b"third\n");
        assert_eq!(
            std::fs::read(root.join("b.log.gleaner-restored")).unwrap(),
            b"taken\n"
        );
    }

    #[test]
    fn a_cleanup_cut_short_under_the_private_name_is_finished_or_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let (root, done) = (dir.path().join("watch"), dir.path().join("done"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.log"), b"committed\n").unwrap();
        let (p, e) = committed(&root, "sub/a.log", Outcome::Done);
        let mut state = State::new();
        state
            .apply(&state_store::Delta {
                generation: 1,
                upserts: vec![(p.clone(), e)],
                ..state_store::Delta::default()
            })
            .unwrap();
        // A crash right after the committed file took its private name.
        std::fs::rename(
            root.join("sub/a.log"),
            root.join("sub/.gleaner-cleanup.a.log"),
        )
        .unwrap();
        // And another file under a private name that no commit knows.
        std::fs::write(root.join(".gleaner-cleanup.stray.log"), b"stray\n").unwrap();
        let rules = CleanupRules {
            after: AfterCommit::Move(done.clone()),
            quarantine: None,
        };
        let listing = crate::listing::list(&root).unwrap();
        let tasks: Vec<CleanupTask> = listing
            .files
            .iter()
            .filter_map(|f| rules.resume(f, &state))
            .collect();
        assert_eq!(tasks.len(), 2);
        clean(&root, &tasks);
        assert_eq!(
            std::fs::read(done.join("sub/a.log")).unwrap(),
            b"committed\n"
        );
        assert!(!root.join("sub/.gleaner-cleanup.a.log").exists());
        assert_eq!(std::fs::read(root.join("stray.log")).unwrap(), b"stray\n");
        assert_eq!(untaken(&"x/.gleaner-cleanup.".into()), None);
        assert_eq!(
            taken_path(&"x/y.log".into()),
            RelPath::from("x/.gleaner-cleanup.y.log")
        );
    }
}
