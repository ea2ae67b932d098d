//! What makes a file the same file: its path (with inode and birth time), or its content.
//!
//! With [`Identity::Content`], a file renamed or moved inside the watch root is recognised by a
//! fingerprint of its first [`FINGERPRINT_BYTES`] bytes plus its size (the processed files that
//! left their paths are `diff`'s `MovedAway`), and is not processed again. The same fingerprint tells an appended file (`--on-change=append`) from one rewritten
//! in place.

use std::io::Read;
use std::path::Path;

use state_store::{FINGERPRINT_BYTES, RelPath};

use crate::ConfigError;

/// How a file is recognised across listings (`--identity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// By path, inode and birth time: a renamed file is a new file.
    #[default]
    Path,
    /// Also by content: a new path whose size and first bytes equal those of a processed file
    /// that is gone is that file, renamed.
    Content,
}

impl std::str::FromStr for Identity {
    type Err = ConfigError;

    /// Parses `path` or `content`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let choices = [("path", Self::Path), ("content", Self::Content)];
        ConfigError::choose(s, &choices, "path or content")
    }
}

/// The fingerprint of a file's leading bytes (never 0, which means "not computed").
pub fn fingerprint(leading: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(leading).wrapping_add(1).max(1)
}

/// The fingerprint of the first `min(FINGERPRINT_BYTES, size)` bytes of `rel` under `root`;
/// `None` if they cannot be read (the file is gone, shorter, unreadable), or if `inode` is
/// given and the file has another one (another file took the name). Blocking.
pub fn fingerprint_file(root: &Path, rel: &RelPath, size: u64, inode: Option<u64>) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let len = size.min(FINGERPRINT_BYTES) as usize;
    let mut leading = vec![0u8; len];
    // Like processing: no link followed, and a FIFO swapped in cannot block.
    let file = crate::process::open(&crate::listing::absolute(root, rel)).ok()?;
    if let Some(inode) = inode.filter(|&inode| inode != 0) {
        if file.metadata().ok()?.ino() != inode {
            return None;
        }
    }
    file.take(len as u64).read_exact(&mut leading).ok()?;
    Some(fingerprint(&leading))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_the_leading_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut long = vec![b'a'; 3000];
        std::fs::write(dir.path().join("x"), &long).unwrap();
        long[2999] = b'b';
        std::fs::write(dir.path().join("y"), &long).unwrap();
        long[0] = b'b';
        std::fs::write(dir.path().join("z"), &long).unwrap();
        let of = |name: &str| fingerprint_file(dir.path(), &name.into(), 3000, None).unwrap();
        assert_eq!(of("x"), of("y"), "beyond the first KiB");
        assert_ne!(of("x"), of("z"));
        assert_ne!(fingerprint(b""), 0);
        assert_eq!(
            fingerprint_file(dir.path(), &"x".into(), 5, None),
            Some(fingerprint(b"aaaaa"))
        );
        assert_eq!(
            fingerprint_file(dir.path(), &"missing".into(), 5, None),
            None
        );
        assert_eq!(
            fingerprint_file(dir.path(), &"x".into(), 5, Some(1)),
            None,
            "another inode"
        );
        assert_eq!("content".parse(), Ok(Identity::Content));
        assert!("inode".parse::<Identity>().is_err());
    }
}
