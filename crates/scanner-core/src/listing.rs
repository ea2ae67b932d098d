//! Walking the watch root: every regular file with its size, mtime and inode, sorted by path.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use state_store::RelPath;
use walkdir::WalkDir;

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

/// The result of walking the watch root once.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Regular files, sorted by path bytes (the order the state is kept in).
    pub files: Vec<ListedFile>,
    /// Paths whose contents are unknown this time (unreadable directories, files that could not
    /// be examined). State entries under them are not treated as gone.
    pub unknown: Vec<RelPath>,
    /// What could not be examined, and why.
    pub problems: Vec<ListingProblem>,
    /// Entries that are not regular files (symbolic links, FIFOs, sockets, devices): skipped.
    pub skipped_special: u64,
    /// When the walk started; readiness is judged against this instant.
    pub started_at: Option<SystemTime>,
}

impl Listing {
    /// True if the listing holds a regular file at `path` (relative to the watch root).
    pub fn contains(&self, path: &[u8]) -> bool {
        self.files
            .binary_search_by(|f| f.path.as_bytes().cmp(path))
            .is_ok()
    }
}

/// Walks `root` recursively and lists its regular files.
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
/// worker thread.
pub fn list(root: &Path) -> Result<Listing, ScanError> {
    let started_at = SystemTime::now();
    check_root(root)?;
    let mut listing = Listing {
        started_at: Some(started_at),
        ..Listing::default()
    };
    let walk = WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && e.file_name().as_bytes().starts_with(b".")));
    for item in walk {
        let entry = match item {
            Ok(entry) => entry,
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_default();
                if err.depth() == 0 && path == root {
                    return Err(ScanError::WatchDir {
                        path: root.to_path_buf(),
                        reason: io_reason(err.io_error()),
                    });
                }
                let rel = relative(root, &path);
                if err.io_error().map(|e| e.kind()) != Some(std::io::ErrorKind::NotFound) {
                    listing.problems.push(ListingProblem {
                        path: rel.clone(),
                        reason: io_reason(err.io_error()),
                    });
                    listing.unknown.push(rel);
                }
                continue;
            }
        };
        let file_type = entry.file_type();
        if file_type.is_dir() {
            continue;
        }
        if !file_type.is_file() {
            listing.skipped_special += 1;
            continue;
        }
        let rel = relative(root, entry.path());
        match entry.metadata() {
            Ok(meta) => listing.files.push(ListedFile {
                path: rel,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                inode: meta.ino(),
                btime_ns: btime_ns(&meta),
            }),
            // Vanished between reading the directory and examining the file: it is simply gone.
            Err(err) if err.io_error().map(|e| e.kind()) == Some(std::io::ErrorKind::NotFound) => {}
            Err(err) => {
                listing.problems.push(ListingProblem {
                    path: rel.clone(),
                    reason: io_reason(err.io_error()),
                });
                listing.unknown.push(rel);
            }
        }
    }
    listing.files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    listing.unknown.sort_unstable();
    Ok(listing)
}

/// A file's modification time in nanoseconds since the Unix epoch, saturated to the `i64` range
/// (years 1677 to 2262): a file stamped in the year 3000 must not crash the walk.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    let ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
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

fn relative(root: &Path, path: &Path) -> RelPath {
    let rel = path.strip_prefix(root).unwrap_or(path);
    RelPath::new(rel.as_os_str().as_bytes())
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
}
