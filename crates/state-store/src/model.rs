//! What the state remembers of one file: its path and its [`FileEntry`].

use std::borrow::Cow;
use std::fmt;

use bincode::{Decode, Encode};

/// A file's path relative to the watch root: raw bytes, `/`-separated, never starting with `/`.
///
/// Kept as bytes because file names on Unix need not be UTF-8 and every file must still be
/// tracked exactly once. Ordering is bytewise, the order listings and state are merged in.
/// [`RelPathRef`] is the borrowed form, which the [`State`](crate::State) hands out.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct RelPath(Box<[u8]>);

impl RelPath {
    /// Wraps the bytes of a relative path.
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        RelPath(bytes.into())
    }

    /// The borrowed form.
    pub fn as_ref_path(&self) -> RelPathRef<'_> {
        RelPathRef(&self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as UTF-8, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_ref_path().as_str()
    }

    /// True if the path shows as itself: valid UTF-8 without a backslash. Otherwise its
    /// [`Display`](fmt::Display) form is escaped, and only [`RelPath::as_bytes`] is exact.
    pub fn displays_as_is(&self) -> bool {
        self.as_ref_path().displays_as_is()
    }

    /// The path as text with invalid UTF-8 replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        self.as_ref_path().to_string_lossy()
    }

    /// True if this path lies inside directory `dir` (itself relative; empty means the root).
    pub fn is_inside(&self, dir: &[u8]) -> bool {
        self.as_ref_path().is_inside(dir)
    }
}

impl From<&str> for RelPath {
    fn from(s: &str) -> Self {
        RelPath::new(s.as_bytes())
    }
}

impl From<RelPathRef<'_>> for RelPath {
    fn from(path: RelPathRef<'_>) -> Self {
        RelPath::new(path.0)
    }
}

impl PartialEq<RelPathRef<'_>> for RelPath {
    fn eq(&self, other: &RelPathRef<'_>) -> bool {
        *self.0 == *other.0
    }
}

impl PartialOrd<RelPathRef<'_>> for RelPath {
    fn partial_cmp(&self, other: &RelPathRef<'_>) -> Option<std::cmp::Ordering> {
        Some(self.0.as_ref().cmp(other.0))
    }
}

/// Shows the path as text, one-to-one: see [`RelPathRef`'s](RelPathRef) `Display`.
impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref_path().fmt(f)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A borrowed [`RelPath`]: the state keeps its paths back to back in one buffer (no allocation
/// per tracked file) and lends them out in this form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPathRef<'a>(&'a [u8]);

impl<'a> RelPathRef<'a> {
    /// Wraps the bytes of a relative path.
    pub fn new(bytes: &'a [u8]) -> Self {
        RelPathRef(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    /// The path as UTF-8, if it is valid UTF-8.
    pub fn as_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.0).ok()
    }

    /// True if the path shows as itself: valid UTF-8 without a backslash. Otherwise its
    /// [`Display`](fmt::Display) form is escaped, and only [`RelPathRef::as_bytes`] is exact.
    pub fn displays_as_is(self) -> bool {
        self.as_str().is_some_and(|s| !s.contains('\\'))
    }

    /// The path as text with invalid UTF-8 replaced by U+FFFD.
    pub fn to_string_lossy(self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }

    /// True if this path lies inside directory `dir` (itself relative; empty means the root).
    pub fn is_inside(self, dir: &[u8]) -> bool {
        dir.is_empty()
            || (self.0.len() > dir.len() && self.0.starts_with(dir) && self.0[dir.len()] == b'/')
    }

    /// An owned copy.
    pub fn to_rel_path(self) -> RelPath {
        RelPath::from(self)
    }
}

impl PartialEq<RelPath> for RelPathRef<'_> {
    fn eq(&self, other: &RelPath) -> bool {
        *self.0 == *other.0
    }
}

impl PartialOrd<RelPath> for RelPathRef<'_> {
    fn partial_cmp(&self, other: &RelPath) -> Option<std::cmp::Ordering> {
        Some(self.0.cmp(other.0.as_ref()))
    }
}

/// Encoded exactly as a [`RelPath`] (a length, then the bytes), so either decodes as the other.
impl Encode for RelPathRef<'_> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(encoder)
    }
}

/// Shows the path as text, one-to-one: a backslash is written `\\`, a byte that is not UTF-8
/// `\xNN`, everything else as it is. So no byte is hidden, and two paths never show the same
/// (`caf\xe9` typed as text shows as `caf\\xe9`, the byte 0xE9 as `caf\xe9`).
impl fmt::Display for RelPathRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let mut valid = chunk.valid();
            while let Some(at) = valid.find('\\') {
                f.write_str(&valid[..at])?;
                f.write_str("\\\\")?;
                valid = &valid[at + 1..];
            }
            f.write_str(valid)?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RelPathRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// How processing a file ended.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Outcome {
    /// The file's result is in the output of the entry's generation.
    Done,
    /// The file could not be processed; its output line carries this reason instead of a result.
    Failed {
        /// Why, in words an operator can act on.
        reason: Box<str>,
    },
    /// Never processed, on purpose: the file was already in the directory when the source was
    /// baselined (`gleaner run --baseline`), and counts as seen up to its committed size. No
    /// output holds a line for it, and no cleanup touches it (it was never shipped). Appended
    /// bytes, or a rewrite, are handled as for a processed file. Format version 4 on.
    Baselined,
}

impl Outcome {
    /// True for [`Outcome::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }

    /// True for [`Outcome::Baselined`].
    pub fn is_baselined(&self) -> bool {
        matches!(self, Outcome::Baselined)
    }
}

/// What is remembered of one file once a batch that included it is committed.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct FileEntry {
    /// Size in bytes when it was listed for the batch.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch, when it was listed.
    pub mtime_ns: i64,
    /// Inode number when it was listed (0 where the platform has none).
    pub inode: u64,
    /// Birth time, nanoseconds since the Unix epoch (0 where the file system has none). With
    /// the inode it tells a new file from an old one: file systems reuse inode numbers at once.
    pub btime_ns: i64,
    /// How many bytes of the file have been processed.
    pub offset: u64,
    /// The generation whose batch processed it.
    pub generation: u64,
    /// How processing ended.
    pub outcome: Outcome,
    /// A fingerprint of the file's first [`FINGERPRINT_BYTES`] bytes (or all of them, if it is
    /// shorter), as committed: the xxh3-64 hash of those bytes, plus one (0: not computed).
    /// It recognises a renamed file, and a file rewritten in place.
    pub fingerprint: u64,
}

/// Which watch root wrote a generation, recorded with it: one source id must have one root,
/// or two roots would take turns and forget each other's files.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Origin {
    /// The root's id, kept in the watched directory in `.gleaner-root`: taken from the volume
    /// and the directory (its file system's id, its inode and birth time) when the file is
    /// first written, and worked out the same way where it cannot be written (a read-only or
    /// full volume), so that it stays with the directory whoever mounts it (a CronJob's Pods
    /// over one volume). Older builds wrote a random id, kept as it is; 0 in what builds before
    /// that wrote over a directory that could not keep one.
    pub root_id: u64,
    /// The writer's host name (in Kubernetes, the Pod's name).
    pub host: String,
    /// The watched directory, as an absolute path.
    pub watch_dir: String,
}

impl Origin {
    /// True if `other` is the same watch root: the same root id; where either id is unknown
    /// (0), the same directory on the same host. Two different root ids are never one root,
    /// whatever their host names and directories: two Pods of one name in two clusters have
    /// their own directories at the same path.
    pub fn same_root(&self, other: &Origin) -> bool {
        if self.root_id != 0 && other.root_id != 0 {
            return self.root_id == other.root_id;
        }
        self.host == other.host && self.watch_dir == other.watch_dir
    }

    /// True if `other` is a new root in this one's place: another root id, the same directory
    /// on the same host. A Pod recreated under its name with a fresh `emptyDir` looks so; so
    /// does a Pod of the same name in another cluster, which is why the root taken over is
    /// retired ([`StateLog::retire_root`](crate::StateLog::retire_root)).
    pub fn replaced_by(&self, other: &Origin) -> bool {
        !self.same_root(other) && self.host == other.host && self.watch_dir == other.watch_dir
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (root id {:016x})",
            self.host, self.watch_dir, self.root_id
        )
    }
}

/// How many leading bytes of a file its [`FileEntry::fingerprint`] covers.
pub const FINGERPRINT_BYTES: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_invalid_utf8_escaped() {
        let p = RelPath::new(&b"dir/caf\xe9.log"[..]);
        assert_eq!(p.to_string(), "dir/caf\\xe9.log");
        assert!(p.as_str().is_none());
    }

    #[test]
    fn every_path_shows_differently() {
        let typed = RelPath::from("caf\\xe9.log");
        let byte = RelPath::new(&b"caf\xe9.log"[..]);
        assert_eq!(typed.to_string(), "caf\\\\xe9.log");
        assert_eq!(byte.to_string(), "caf\\xe9.log");
        assert_ne!(typed.to_string(), byte.to_string());
        assert!(!typed.displays_as_is() && !byte.displays_as_is());
        assert!(RelPath::from("a/b c.log").displays_as_is());
        assert_eq!(RelPath::from("a/b c.log").to_string(), "a/b c.log");
    }

    #[test]
    fn a_root_is_its_root_id_or_its_directory_on_its_host() {
        let root = |root_id: u64, host: &str, dir: &str| Origin {
            root_id,
            host: host.into(),
            watch_dir: dir.into(),
        };
        let first = root(7, "pod-a", "/data");
        // A CronJob's next Pod over the same volume: another host, the same root id.
        assert!(first.same_root(&root(7, "job-2-xk", "/data")));
        // The same Pod recreated with a fresh emptyDir, or a Pod of the same name elsewhere: a
        // new root id, same host and path. Not the same root, but one in its place.
        assert!(!first.same_root(&root(9, "pod-a", "/data")));
        assert!(first.replaced_by(&root(9, "pod-a", "/data")));
        assert!(!first.replaced_by(&root(9, "pod-b", "/data")));
        // An id unknown (0, from older builds): the directory on its host decides.
        assert!(root(0, "pod-a", "/data").same_root(&first));
        assert!(first.same_root(&root(0, "pod-a", "/data")));
        assert!(!first.same_root(&root(0, "pod-b", "/data")));
        // Another replica: another host, another emptyDir.
        assert!(!first.same_root(&root(9, "pod-b", "/data")));
        // Another directory of the same host.
        assert!(!first.same_root(&root(9, "pod-a", "/other")));
        // An unknown root id (0) never matches by itself.
        assert!(!root(0, "a", "/x").same_root(&root(0, "b", "/x")));
        assert_eq!(first.to_string(), "pod-a:/data (root id 0000000000000007)");
    }

    #[test]
    fn inside_means_below_a_directory_boundary() {
        let p = RelPath::from("logs/a.log");
        assert!(p.is_inside(b"logs"));
        assert!(p.is_inside(b""));
        assert!(!p.is_inside(b"log"));
        assert!(!RelPath::from("logs").is_inside(b"logs"));
    }
}
