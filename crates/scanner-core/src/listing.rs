//! Walking the watch root: every regular file with its size, mtime and inode, sorted by path.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

use state_store::{RelPath, RelPathRef};

use crate::ScanError;

/// One regular file found by a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedFile {
    /// Path relative to the watch root.
    pub path: RelPath,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Birth time, nanoseconds since the Unix epoch; 0 where the file system does not record it.
    pub btime_ns: i64,
}

/// Something the walk could not look at; it is reported, counted, and never fatal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingProblem {
    /// The file or directory, relative to the watch root (empty: the root itself).
    pub path: RelPath,
    /// What went wrong.
    pub reason: String,
}

/// Files a scan found too young, which a walk of a few directories ([`walk_dirs_knowing`]) takes
/// as they were listed instead of examining each again, until the age they were listed at
/// makes them old enough: under a steady emitter every file was examined at each scan of the
/// `--min-age` it waits (five times at one scan a second), a tenth of the sidecar's CPU. A file
/// is taken as known only while its directory entry names the same inode and the walk started
/// before its `ready_at`; then it is examined, so what a plan records always comes from an
/// examination. A file whose modification time went back while it waited is seen ready at most
/// `--min-age` later.
#[derive(Debug, Default)]
pub(crate) struct YoungFiles {
    /// By directory prefix (with its `/`; empty: the root).
    dirs: HashMap<Vec<u8>, YoungInDir>,
}

/// The files of one directory known too young, by name: as listed, and until when.
type YoungInDir = HashMap<Box<[u8]>, (ListedFile, SystemTime)>;

impl YoungFiles {
    /// Records `file` as too young until `ready_at`.
    pub(crate) fn insert(&mut self, file: &ListedFile, ready_at: SystemTime) {
        let path = file.path.as_bytes();
        let name_at = memchr::memrchr(b'/', path).map_or(0, |slash| slash + 1);
        self.dirs
            .entry(path[..name_at].to_vec())
            .or_default()
            .insert(path[name_at..].into(), (file.clone(), ready_at));
    }

    /// How many files it records.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.dirs.values().map(HashMap::len).sum()
    }

    /// What the last examination found of `name` in the directory at `prefix`, if that still
    /// holds at `now` for the entry's inode `inode`.
    fn known(&self, prefix: &[u8], name: &[u8], inode: u64, now: SystemTime) -> Option<ListedFile> {
        let (file, ready_at) = self.dirs.get(prefix)?.get(name)?;
        (file.inode == inode && now < *ready_at).then(|| ListedFile {
            path: RelPath::new(Vec::new()),
            ..file.clone()
        })
    }
}

/// The result of walking the watch root once.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Regular files, sorted by path bytes (the order the state is kept in). Filled by
    /// [`list`]; a scan merges the files with the state as [`walk`] meets them and keeps none.
    pub files: Vec<ListedFile>,
    /// How many regular files the walk met.
    pub listed: usize,
    /// Paths whose contents are unknown this time (unreadable directories, files that could not
    /// be examined), sorted. State entries under them are not treated as gone.
    pub unknown: Vec<RelPath>,
    /// What could not be examined, and why.
    pub problems: Vec<ListingProblem>,
    /// Entries that are not regular files (symbolic links, FIFOs, sockets, devices): skipped.
    pub skipped_special: u64,
    /// When the walk started; readiness is judged against this instant.
    pub started_at: Option<SystemTime>,
    /// Disk space the walked directories take, in bytes: the blocks allocated to their files
    /// and subdirectories, hidden directories (which the walk does not enter for files)
    /// included, counted as `du` and the kubelet count an `emptyDir` against its
    /// `sizeLimit`. Files in progress, not ready, excluded or already committed count alike:
    /// this is what the volume holds, not what waits.
    pub disk_bytes: u64,
}

impl Listing {
    /// Records that `path`'s contents are unknown, keeping [`Listing::unknown`] sorted: the
    /// walk meets `a-b` before the directory `a` (it sorts as `a/`), but `a` < `a-b`.
    fn add_unknown(&mut self, path: RelPath) {
        let at = self.unknown.partition_point(|u| *u < path);
        self.unknown.insert(at, path);
    }

    /// True if the listing holds a regular file at `path` (relative to the watch root).
    pub fn contains(&self, path: &[u8]) -> bool {
        self.files
            .binary_search_by(|f| f.path.as_bytes().cmp(path))
            .is_ok()
    }
}

/// Walks `root` recursively and lists its regular files, all of them in memory.
///
/// * Symbolic links are not followed (a link out of the watch root must not pull in foreign
///   files, and a link loop must not hang the walk); links, FIFOs, sockets and devices are
///   skipped and counted. A FIFO is never opened, so it cannot block the walk.
/// * Directories whose name starts with `.` are not entered: their files would never be ready
///   anyway (emitters stage files in hidden directories).
/// * An unreadable subdirectory, or a file that vanishes or cannot be examined, is reported in
///   [`Listing::problems`] and [`Listing::unknown`] and the walk goes on.
///
/// Only a root that cannot be read at all is an error. This is blocking IO: call it from a
/// worker thread. A scan uses [`walk`] instead, which holds one directory at a time.
pub fn list(root: &Path) -> Result<Listing, ScanError> {
    let (files, mut listing) = walk(root, 1, |walk| walk.collect::<Vec<_>>())?;
    listing.files = files;
    Ok(listing)
}

/// Walks `root` as [`list`] does, handing its regular files to `consume` one at a time, in
/// path byte order, without holding them; returns what `consume` returned and the listing's
/// summary ([`Listing::files`] empty).
///
/// Directories are read ahead by `threads - 1` helper threads (each reads a whole directory and
/// examines its files), at most a few directories ahead of `consume`, so memory stays bounded
/// by the largest directories, not by the tree. Blocking: call it from a worker thread.
pub fn walk<R>(
    root: &Path,
    threads: usize,
    consume: impl FnOnce(&mut Walk<'_>) -> R,
) -> Result<(R, Listing), ScanError> {
    let started_at = SystemTime::now();
    check_root(root)?;
    let nothing_known = YoungFiles::default();
    let top = read_directory(root, &[], &nothing_known, started_at);
    if let Some(reason) = &top.unreadable {
        return Err(ScanError::WatchDir {
            path: root.to_path_buf(),
            reason: reason.clone(),
        });
    }
    let seeds = vec![(Vec::new(), top, true)];
    let (result, mut listing) =
        walk_from(root, threads, (started_at, &nothing_known), seeds, consume)?;
    // The root directory's own blocks, as `du` counts them.
    let root_bytes = std::fs::metadata(root).map_or(0, |meta| allocated(&meta));
    listing.disk_bytes = listing.disk_bytes.saturating_add(root_bytes);
    Ok((result, listing))
}

/// Directories to look at, relative to the watch root: each one's own files, and for those
/// named recursive everything under them. What a scan triggered by file-system events walks
/// instead of the whole tree ([`walk_dirs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirScope {
    /// Directory (empty: the root) → recursive.
    dirs: std::collections::BTreeMap<Vec<u8>, bool>,
}

impl DirScope {
    /// Adds the directory `dir` (relative to the watch root, no trailing `/`; empty for the
    /// root), with everything under it if `recursive`. Hidden directories (and what is under
    /// them) are left out, as the full walk leaves them.
    pub fn add(&mut self, dir: &[u8], recursive: bool) {
        if dir.split(|&b| b == b'/').any(|part| part.starts_with(b".")) {
            return;
        }
        let entry = self.dirs.entry(dir.to_vec()).or_insert(false);
        *entry |= recursive;
    }

    /// How many directories it names.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// True if it names no directory.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Adds every directory of `other`.
    pub fn extend(&mut self, other: &DirScope) {
        for (dir, &recursive) in &other.dirs {
            self.add(dir, recursive);
        }
    }

    /// True if a walk of this scope examines `path` (a file's path): its directory is named,
    /// or lies under a directory named recursive.
    pub fn covers(&self, path: &[u8]) -> bool {
        let parent = memchr::memrchr(b'/', path).map_or(&path[..0], |slash| &path[..slash]);
        self.dirs.contains_key(parent) || self.under_recursive(parent)
    }

    /// True if `dir` is a recursive directory of the scope, or lies under one.
    fn under_recursive(&self, dir: &[u8]) -> bool {
        let named = |candidate: &[u8]| self.dirs.get(candidate) == Some(&true);
        named(dir) || named(&[]) || memchr::memchr_iter(b'/', dir).any(|slash| named(&dir[..slash]))
    }

    /// The directories to walk: none under a recursive one (its walk meets them).
    fn roots(&self) -> impl Iterator<Item = (&[u8], bool)> {
        self.dirs.iter().filter_map(|(dir, &recursive)| {
            let parent = memchr::memrchr(b'/', dir).map_or(&dir[..0], |slash| &dir[..slash]);
            let covered = !dir.is_empty() && self.under_recursive(parent);
            (!covered).then_some((dir.as_slice(), recursive))
        })
    }
}

/// Walks only the directories of `scope` under `root`, as [`walk`] walks the whole tree: each
/// directory's files, and everything under those named recursive. Files come in path byte
/// order within each directory named, not across them; the walk's [`Listing::unknown`] and
/// problems are those of what it looked at. A directory that is gone is empty.
pub fn walk_dirs<R>(
    root: &Path,
    scope: &DirScope,
    threads: usize,
    consume: impl FnOnce(&mut Walk<'_>) -> R,
) -> Result<(R, Listing), ScanError> {
    walk_dirs_knowing(root, scope, threads, &YoungFiles::default(), consume)
}

/// [`walk_dirs`], taking the files of `young` as they were listed while they are still too
/// young (their examination skipped; see [`YoungFiles`]).
pub(crate) fn walk_dirs_knowing<R>(
    root: &Path,
    scope: &DirScope,
    threads: usize,
    young: &YoungFiles,
    consume: impl FnOnce(&mut Walk<'_>) -> R,
) -> Result<(R, Listing), ScanError> {
    let started_at = SystemTime::now();
    check_root(root)?;
    let mut seeds = Vec::new();
    for (dir, recursive) in scope.roots() {
        // Only real directories: the full walk never follows a link, so a scan must not look
        // through one (at files outside the watch directory, or at the same files twice).
        if !is_real_directory(root, dir) {
            continue;
        }
        let mut prefix = dir.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let mut contents = read_directory(root, &prefix, young, started_at);
        if !recursive {
            contents.subdirs.clear();
        }
        seeds.push((prefix, contents, recursive));
    }
    walk_from(root, threads, (started_at, young), seeds, consume)
}

/// True if `dir` (relative to `root`; empty: the root) and each directory on the way to it
/// are directories, not links to one.
fn is_real_directory(root: &Path, dir: &[u8]) -> bool {
    let is_dir = |rel: &[u8]| {
        std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(rel)))
            .is_ok_and(|meta| meta.file_type().is_dir())
    };
    dir.is_empty()
        || (memchr::memchr_iter(b'/', dir).all(|slash| is_dir(&dir[..slash])) && is_dir(dir))
}

/// Walks from `seeds` (directory prefix, its contents, whether to go below it), in order.
fn walk_from<R>(
    root: &Path,
    threads: usize,
    (started_at, young): (SystemTime, &YoungFiles),
    seeds: Vec<(Vec<u8>, Contents, bool)>,
    consume: impl FnOnce(&mut Walk<'_>) -> R,
) -> Result<(R, Listing), ScanError> {
    let helpers = threads.max(1) - 1;
    let ahead = Ahead {
        root: root.to_path_buf(),
        young,
        started_at,
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
        limit: 4 * (helpers + 1),
    };
    std::thread::scope(|scope| {
        // Stops the helpers however the walk ends, a panic included (of `consume`, or of a
        // thread that cannot be started), or the scope would wait for them forever.
        let _stop = StopOnDrop(&ahead);
        for _ in 0..helpers {
            scope.spawn(|| ahead.help());
        }
        let mut walk = Walk {
            ahead: &ahead,
            frames: Vec::new(),
            summary: Listing {
                started_at: Some(started_at),
                ..Listing::default()
            },
        };
        // The walk takes frames from the end: the first seed goes last.
        for (prefix, contents, recursive) in seeds.into_iter().rev() {
            if recursive {
                ahead.lock().push_subdirs(&prefix, &contents);
            }
            walk.enter(prefix, contents);
        }
        let result = consume(&mut walk);
        Ok((result, walk.summary))
    })
}

/// A walk in progress: an iterator over regular files in path byte order. Subdirectories are
/// visited where their path (with its `/`) sorts among their siblings, so a depth-first walk
/// meets every path in byte order: `a-c.log` before `a/b.log`, and `a/b.log` before `a/b/c`.
pub struct Walk<'a> {
    ahead: &'a Ahead<'a>,
    /// The directories being walked, outermost first.
    frames: Vec<Frame>,
    summary: Listing,
}

impl Walk<'_> {
    /// True if `path` is, or lies under, a path whose contents this walk could not know (so far:
    /// the walk finds them in path order, before any path under them).
    pub fn is_unknown(&self, path: RelPathRef<'_>) -> bool {
        is_unknown(&self.summary.unknown, path)
    }

    /// Starts walking the directory at `prefix` (relative, with its trailing `/`; empty for
    /// the root), whose contents were read.
    fn enter(&mut self, prefix: Vec<u8>, contents: Contents) {
        self.summary.skipped_special += contents.special;
        self.summary.disk_bytes = self.summary.disk_bytes.saturating_add(contents.disk_bytes);
        if let Some(reason) = contents.unreadable {
            let path = RelPath::new(prefix.strip_suffix(b"/").unwrap_or(&prefix));
            self.summary.problems.push(ListingProblem {
                path: path.clone(),
                reason,
            });
            self.summary.add_unknown(path);
        }
        self.frames.push(Frame {
            prefix,
            files: contents.files.into_iter().peekable(),
            subdirs: contents.subdirs.into_iter().peekable(),
        });
    }
}

impl Iterator for Walk<'_> {
    type Item = ListedFile;

    fn next(&mut self) -> Option<ListedFile> {
        loop {
            let frame = self.frames.last_mut()?;
            let file_first = match (frame.files.peek(), frame.subdirs.peek()) {
                (None, None) => {
                    self.frames.pop();
                    continue;
                }
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(file), Some(dir)) => file.name[..] < dir[..],
            };
            if file_first {
                let file = frame.files.next()?;
                let mut path = Vec::with_capacity(frame.prefix.len() + file.name.len());
                path.extend_from_slice(&frame.prefix);
                path.extend_from_slice(&file.name);
                let path = RelPath::new(path);
                match file.examined {
                    Ok(mut listed) => {
                        self.summary.listed += 1;
                        listed.path = path;
                        return Some(listed);
                    }
                    Err(reason) => {
                        self.summary.problems.push(ListingProblem {
                            path: path.clone(),
                            reason,
                        });
                        self.summary.add_unknown(path);
                    }
                }
            } else {
                let dir = frame.subdirs.next()?;
                let mut prefix = frame.prefix.clone();
                prefix.extend_from_slice(&dir);
                if let Some(contents) = self.ahead.take(&prefix) {
                    self.enter(prefix, contents);
                }
            }
        }
    }
}

/// One directory being walked: what is left of it.
struct Frame {
    /// Its path relative to the root, with a trailing `/` (empty for the root).
    prefix: Vec<u8>,
    files: std::iter::Peekable<std::vec::IntoIter<DirFile>>,
    /// Subdirectory names with a trailing `/`, which is how they sort among the files.
    subdirs: std::iter::Peekable<std::vec::IntoIter<Box<[u8]>>>,
}

/// A file of a directory: its name, and its metadata or why it could not be examined.
struct DirFile {
    name: Box<[u8]>,
    /// `path` is left empty: the walk sets it.
    examined: Result<ListedFile, String>,
}

/// What reading one directory found.
#[derive(Default)]
struct Contents {
    /// Regular files, sorted by name.
    files: Vec<DirFile>,
    /// Subdirectories not hidden, each name with a trailing `/`, sorted.
    subdirs: Vec<Box<[u8]>>,
    /// Links, FIFOs, sockets and devices.
    special: u64,
    /// Why the directory could not be read (or not to its end).
    unreadable: Option<String>,
    /// Blocks allocated to its files and subdirectories (hidden ones with everything in them),
    /// in bytes.
    disk_bytes: u64,
}

/// Reads the directory at `rel` (relative to `root`, trailing `/`) and examines its files.
/// A directory that vanished reads as empty.
fn read_directory(root: &Path, rel: &[u8], young: &YoungFiles, now: SystemTime) -> Contents {
    let dir = root.join(std::ffi::OsStr::from_bytes(rel));
    let mut contents = Contents::default();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return contents,
        Err(e) => {
            contents.unreadable = Some(io_reason(Some(&e)));
            return contents;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                contents.unreadable = Some(io_reason(Some(&e)));
                break;
            }
        };
        let name = entry.file_name();
        let name = name.as_bytes();
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                contents.files.push(DirFile {
                    name: name.into(),
                    examined: Err(io_reason(Some(&e))),
                });
                continue;
            }
        };
        if file_type.is_dir() {
            if name.starts_with(b".") {
                // Not walked for files, but what it holds is on the volume all the same
                // (an emitter's staging directory).
                contents.disk_bytes = contents
                    .disk_bytes
                    .saturating_add(disk_usage(&entry.path()));
            } else {
                contents.disk_bytes = contents
                    .disk_bytes
                    .saturating_add(entry.metadata().map_or(0, |meta| allocated(&meta)));
                let mut key = Vec::with_capacity(name.len() + 1);
                key.extend_from_slice(name);
                key.push(b'/');
                contents.subdirs.push(key.into());
            }
        } else if !file_type.is_file() {
            contents.special += 1;
        } else if let Some(file) = young.known(rel, name, entry.ino(), now) {
            contents.files.push(DirFile {
                name: name.into(),
                examined: Ok(file),
            });
        } else {
            let examined = match entry.metadata() {
                Ok(meta) => {
                    contents.disk_bytes = contents.disk_bytes.saturating_add(allocated(&meta));
                    Ok(ListedFile {
                        path: RelPath::new(Vec::new()),
                        size: meta.len(),
                        mtime_ns: mtime_ns(&meta),
                        inode: meta.ino(),
                        btime_ns: btime_ns(&meta),
                    })
                }
                // Vanished between reading the directory and examining the file: it is gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(io_reason(Some(&e))),
            };
            contents.files.push(DirFile {
                name: name.into(),
                examined,
            });
        }
    }
    contents.files.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    contents.subdirs.sort_unstable();
    contents
}

/// The bytes allocated to a file or directory on its volume (its blocks; a sparse file counts
/// what it really takes).
fn allocated(meta: &std::fs::Metadata) -> u64 {
    meta.blocks().saturating_mul(512)
}

/// The bytes allocated below `dir` and to `dir` itself, as `du` counts them; links are not
/// followed, and what cannot be read counts as nothing.
fn disk_usage(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = allocated(&meta);
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            total = total.saturating_add(disk_usage(&entry.path()));
        }
    }
    total
}

/// Directories read ahead of the walk by helper threads, in the order the walk needs them.
///
/// Pending directories are kept on a stack, a directory's subdirectories pushed in reverse as
/// soon as it is read: popping the stack then follows the walk's own depth-first order. At most
/// `limit` directories are read and not yet taken; the walk reads a directory itself when no
/// helper has started it, so it never waits on the limit.
struct Ahead<'a> {
    root: PathBuf,
    young: &'a YoungFiles,
    started_at: SystemTime,
    queue: Mutex<Queue>,
    changed: Condvar,
    limit: usize,
}

#[derive(Default)]
struct Queue {
    /// Directories to read, the next one last.
    pending: Vec<Vec<u8>>,
    /// Directories being read by a helper.
    reading: usize,
    /// Directories read and not taken yet.
    read: HashMap<Vec<u8>, Contents>,
    stop: bool,
}

impl Queue {
    /// Queues the subdirectories of `contents`, read at `prefix`.
    fn push_subdirs(&mut self, prefix: &[u8], contents: &Contents) {
        for dir in contents.subdirs.iter().rev() {
            let mut path = Vec::with_capacity(prefix.len() + dir.len());
            path.extend_from_slice(prefix);
            path.extend_from_slice(dir);
            self.pending.push(path);
        }
    }
}

impl Ahead<'_> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A helper cannot panic while holding the lock (only reads happen outside it), but a
        // poisoned queue is still a consistent one.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A helper thread: reads pending directories until the walk ends.
    fn help(&self) {
        let mut queue = self.lock();
        loop {
            if queue.stop {
                return;
            }
            if !queue.pending.is_empty() && queue.read.len() + queue.reading < self.limit {
                queue = self.read_next(queue);
                continue;
            }
            queue = self.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Reads the next pending directory, the lock released meanwhile.
    fn read_next<'q>(
        &'q self,
        mut queue: std::sync::MutexGuard<'q, Queue>,
    ) -> std::sync::MutexGuard<'q, Queue> {
        let Some(rel) = queue.pending.pop() else {
            return queue;
        };
        queue.reading += 1;
        drop(queue);
        let contents = read_directory(&self.root, &rel, self.young, self.started_at);
        let mut queue = self.lock();
        queue.reading -= 1;
        queue.push_subdirs(&rel, &contents);
        queue.read.insert(rel, contents);
        self.changed.notify_all();
        queue
    }

    /// The contents of the pending directory at `rel`: read ahead, or read now. `None` only if
    /// it was never queued (which the walk never asks).
    fn take(&self, rel: &[u8]) -> Option<Contents> {
        let mut queue = self.lock();
        loop {
            if let Some(contents) = queue.read.remove(rel) {
                // A slot is free for the helpers.
                self.changed.notify_all();
                return Some(contents);
            }
            if let Some(at) = queue.pending.iter().rposition(|p| p == rel) {
                queue.pending.remove(at);
                drop(queue);
                let contents = read_directory(&self.root, rel, self.young, self.started_at);
                self.lock().push_subdirs(rel, &contents);
                self.changed.notify_all();
                return Some(contents);
            }
            if queue.reading == 0 {
                return None;
            }
            // A helper is reading it: read the next one meanwhile rather than wait idle.
            if !queue.pending.is_empty() && queue.read.len() + queue.reading < self.limit {
                queue = self.read_next(queue);
                continue;
            }
            queue = self.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Ends the helpers when the walk ends.
struct StopOnDrop<'a>(&'a Ahead<'a>);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lock().stop = true;
        self.0.changed.notify_all();
    }
}

/// True if `path` is, or lies under, one of the sorted `unknown` paths.
pub(crate) fn is_unknown(unknown: &[RelPath], path: RelPathRef<'_>) -> bool {
    // Any ancestor of `path` sorts before it, but other paths may sit between the two (for
    // "a" and "a/x": "a-b" < "a/x"), so check every ancestor directly.
    let bytes = path.as_bytes();
    let found = |candidate: &[u8]| {
        unknown
            .binary_search_by(|u| u.as_bytes().cmp(candidate))
            .is_ok()
    };
    if found(bytes) {
        return true;
    }
    memchr::memchr_iter(b'/', bytes).any(|slash| found(&bytes[..slash]))
}

/// A file's modification time in nanoseconds since the Unix epoch, saturated to the `i64` range
/// (years 1677 to 2262): a file stamped in the year 3000 must not crash the walk.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    let ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// A file's status change time (ctime) in nanoseconds since the Unix epoch. Every write,
/// rename, link, `chmod` or `touch` sets it to the current time, and nothing can set it back:
/// the same ctime means nothing happened to the file since.
pub fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    let ns = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
    ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// A file's birth time in nanoseconds since the Unix epoch, or 0 where the file system (or an
/// old kernel) does not record it.
pub fn btime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Checks that the watch root exists, is a directory, and can be read.
pub fn check_root(root: &Path) -> Result<(), ScanError> {
    let watch_error = |reason: String| ScanError::WatchDir {
        path: root.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(root).map_err(|e| watch_error(io_reason(Some(&e))))?;
    if !meta.is_dir() {
        return Err(watch_error("is not a directory".into()));
    }
    std::fs::read_dir(root).map_err(|e| watch_error(io_reason(Some(&e))))?;
    Ok(())
}

/// A short, stable description of an IO error for messages and state.
pub(crate) fn io_reason(err: Option<&std::io::Error>) -> String {
    match err {
        None => "symbolic link loop".into(),
        Some(e) => match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".into(),
            std::io::ErrorKind::PermissionDenied => "permission denied".into(),
            _ => e.to_string(),
        },
    }
}

/// Joins a relative path to the watch root.
pub(crate) fn absolute(root: &Path, rel: &RelPath) -> PathBuf {
    root.join(std::ffi::OsStr::from_bytes(rel.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(listing: &Listing) -> Vec<String> {
        listing.files.iter().map(|f| f.path.to_string()).collect()
    }

    #[test]
    fn lists_regular_files_sorted_by_path_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join(".staging")).unwrap();
        fs::write(root.join("a/b/x.log"), b"12345").unwrap();
        fs::write(root.join("a-c.log"), b"1").unwrap();
        fs::write(root.join("a/.hidden"), b"1").unwrap();
        fs::write(root.join(".staging/y.log"), b"1").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        std::os::unix::fs::symlink(root, root.join("a/loop")).unwrap();

        let listing = list(root).unwrap();
        // '-' sorts before '/', so "a-c.log" comes first although a depth-first walk meets
        // "a/b/x.log" first.
        assert_eq!(paths(&listing), ["a-c.log", "a/.hidden", "a/b/x.log"]);
        assert_eq!(listing.files[2].size, 5);
        assert_eq!(listing.skipped_special, 2);
        assert!(listing.problems.is_empty());
    }

    #[test]
    fn disk_bytes_count_every_block_of_the_tree_hidden_directories_included() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join(".staging/deep")).unwrap();
        fs::write(root.join("a/b/x.log"), vec![b'x'; 100_000]).unwrap();
        fs::write(root.join("in-progress.tmp"), vec![b'y'; 20_000]).unwrap();
        fs::write(root.join(".staging/deep/z.part"), vec![b'z'; 50_000]).unwrap();
        // Sparse: 1 GiB long, a few blocks on disk.
        fs::File::create(root.join("sparse.log"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        std::os::unix::fs::symlink("/usr", root.join("link")).unwrap();
        // What `du -B1` adds up: every file's and directory's blocks, links' own included.
        fn du(path: &Path) -> u64 {
            let meta = fs::symlink_metadata(path).unwrap();
            let below: u64 = if meta.is_dir() {
                fs::read_dir(path)
                    .unwrap()
                    .map(|entry| du(&entry.unwrap().path()))
                    .sum()
            } else {
                0
            };
            meta.blocks() * 512 + below
        }
        let link_blocks = fs::symlink_metadata(root.join("link")).unwrap().blocks() * 512;
        let listing = list(root).unwrap();
        assert_eq!(listing.disk_bytes, du(root) - link_blocks);
        assert!(listing.disk_bytes >= 170_000, "{}", listing.disk_bytes);
        assert!(
            listing.disk_bytes < 1 << 20,
            "a sparse file counts its blocks"
        );
    }

    #[test]
    fn absurd_modification_times_saturate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.log");
        fs::write(&path, b"x").unwrap();
        let far = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(11_000_000_000);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(far)
            .unwrap();
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.files[0].mtime_ns, i64::MAX);
    }

    #[test]
    fn odd_names_are_listed_as_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9 with\nnewline.log");
        fs::write(dir.path().join(name), b"x").unwrap();
        let listing = list(dir.path()).unwrap();
        assert_eq!(listing.files[0].path.as_bytes(), name.as_bytes());
    }

    #[test]
    fn a_missing_or_non_directory_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = list(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        fs::write(dir.path().join("f"), b"").unwrap();
        let err = list(&dir.path().join("f")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    /// Every regular file under `dir`, found without the walk, sorted by path bytes.
    fn reference(root: &Path, dir: &Path, out: &mut Vec<Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let file_type = entry.file_type().unwrap();
            if file_type.is_dir() && !entry.file_name().as_bytes().starts_with(b".") {
                reference(root, &entry.path(), out);
            } else if file_type.is_file() {
                let path = entry.path();
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                );
            }
        }
    }

    #[test]
    fn a_walk_with_helpers_meets_every_file_once_in_path_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut rng = fastrand::Rng::with_seed(7);
        // Names that sort around '/': '-' and '.' sort before it, '0' and '_' after.
        let parts = ["a", "a-b", "a.b", "a0", "a_", "b", ".h", "z"];
        for _ in 0..2000 {
            let depth = rng.usize(1..5);
            let rel: Vec<&str> = (0..depth)
                .map(|_| parts[rng.usize(..parts.len())])
                .collect();
            let path = root.join(rel.join("/"));
            if path.is_dir() {
                continue;
            }
            if fs::create_dir_all(path.parent().unwrap()).is_ok() {
                let _ = fs::write(&path, b"x");
            }
        }
        let mut expected = Vec::new();
        reference(root, root, &mut expected);
        expected.sort();
        assert!(expected.len() > 150, "{}", expected.len());
        for threads in [1, 2, 4] {
            let (files, listing) = walk(root, threads, |walk| {
                walk.map(|f| f.path.as_bytes().to_vec()).collect::<Vec<_>>()
            })
            .unwrap();
            assert_eq!(files, expected, "{threads} threads");
            assert_eq!(listing.listed, expected.len());
            assert!(listing.files.is_empty(), "a walk holds no files");
        }
    }

    #[test]
    fn unknown_paths_stay_sorted_in_the_order_a_walk_meets_them() {
        // The walk meets the file "a-b" before the directory "a" (which sorts as "a/").
        let mut listing = Listing::default();
        for path in ["a-b", "a", "a/x/y", "b"] {
            listing.add_unknown(RelPath::from(path));
        }
        let unknown: Vec<String> = listing.unknown.iter().map(|u| u.to_string()).collect();
        assert_eq!(unknown, ["a", "a-b", "a/x/y", "b"]);
        assert!(is_unknown(
            &listing.unknown,
            RelPath::from("a/z").as_ref_path()
        ));
        assert!(!is_unknown(
            &listing.unknown,
            RelPath::from("a0").as_ref_path()
        ));
    }

    #[test]
    fn a_scope_covers_its_directories_files_and_what_is_under_recursive_ones() {
        let mut scope = DirScope::default();
        scope.add(b"a", false);
        scope.add(b"b", true);
        scope.add(b"b/c", false);
        scope.add(b".staging", true);
        scope.add(b"d/.hidden", false);
        assert_eq!(scope.len(), 3, "hidden directories are left out");
        assert!(scope.covers(b"a/x.log"));
        assert!(!scope.covers(b"a/sub/x.log"), "a is not recursive");
        assert!(!scope.covers(b"x.log"), "the root is not named");
        assert!(scope.covers(b"b/x.log") && scope.covers(b"b/c/d/x.log"));
        let roots: Vec<(&[u8], bool)> = scope.roots().collect();
        assert_eq!(
            roots,
            [(&b"a"[..], false), (&b"b"[..], true)],
            "b/c is under b"
        );
        scope.add(b"", false);
        assert!(scope.covers(b"x.log") && !scope.covers(b"z/x.log"));
    }

    #[test]
    fn a_walk_of_some_directories_lists_their_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "top.log",
            "a/1.log",
            "a/sub/2.log",
            "b/3.log",
            "b/new/4.log",
            "c/5.log",
        ] {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"x").unwrap();
        }
        let mut scope = DirScope::default();
        scope.add(b"a", false);
        scope.add(b"b/new", true);
        scope.add(b"gone", false);
        for threads in [1, 2] {
            let (mut files, listing) = walk_dirs(root, &scope, threads, |walk| {
                walk.map(|f| f.path.to_string()).collect::<Vec<_>>()
            })
            .unwrap();
            files.sort();
            assert_eq!(files, ["a/1.log", "b/new/4.log"], "{threads} threads");
            assert_eq!(listing.listed, 2);
            assert!(
                listing.problems.is_empty(),
                "a directory that is gone is empty"
            );
        }
        // A link to a directory, named by an event, is not looked through.
        std::os::unix::fs::symlink(root.join("c"), root.join("link")).unwrap();
        let mut through_link = DirScope::default();
        through_link.add(b"link", true);
        through_link.add(b"link/deeper", false);
        let (files, _) = walk_dirs(root, &through_link, 2, |walk| walk.count()).unwrap();
        assert_eq!(files, 0);
        let mut root_only = DirScope::default();
        root_only.add(b"", false);
        let (files, _) = walk_dirs(root, &root_only, 2, |walk| {
            walk.map(|f| f.path.to_string()).collect::<Vec<_>>()
        })
        .unwrap();
        assert_eq!(files, ["top.log"]);
    }

    /// A file known too young is taken as last examined (its size then, not now) until its
    /// `ready_at`, and only while its entry names the same inode; then it is examined again.
    #[test]
    fn a_walk_takes_files_known_too_young_as_they_were_until_they_may_be_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("d")).unwrap();
        for name in ["young.log", "replaced.log", "due.log"] {
            fs::write(root.join("d").join(name), b"12345").unwrap();
        }
        let mut scope = DirScope::default();
        scope.add(b"d", false);
        let list = |young: &YoungFiles| {
            let (files, _) = walk_dirs_knowing(root, &scope, 2, young, |walk| {
                walk.map(|f| (f.path.to_string(), f.size))
                    .collect::<Vec<_>>()
            })
            .unwrap();
            files
        };
        let (first, _) = walk_dirs(root, &scope, 1, |walk| walk.collect::<Vec<_>>()).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        let mut young = YoungFiles::default();
        for file in &first {
            let ready_at = if file.path.as_bytes().ends_with(b"due.log") {
                SystemTime::now()
            } else {
                later
            };
            young.insert(file, ready_at);
        }
        // Each grows; one is replaced by a new file under its name (another inode).
        for name in ["young.log", "due.log"] {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(root.join("d").join(name))
                .unwrap();
            std::io::Write::write_all(&mut f, b"678").unwrap();
        }
        fs::write(root.join("new.tmp"), b"a new file").unwrap();
        fs::rename(root.join("new.tmp"), root.join("d/replaced.log")).unwrap();
        assert_eq!(
            list(&young),
            [
                ("d/due.log".to_string(), 8),
                ("d/replaced.log".to_string(), 10),
                ("d/young.log".to_string(), 5),
            ]
        );
        assert_eq!(
            list(&YoungFiles::default()),
            [
                ("d/due.log".to_string(), 8),
                ("d/replaced.log".to_string(), 10),
                ("d/young.log".to_string(), 8),
            ]
        );
    }
}
