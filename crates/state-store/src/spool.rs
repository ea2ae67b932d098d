//! Copies of an object store's deltas on local disk while a load merges them
//! ([`StateLog::with_spool_dir`](crate::StateLog::with_spool_dir)).
//!
//! A merge reads every delta after the snapshot at once, entry by entry, as the snapshot
//! streams in. From an object store, a delta cannot be left half downloaded until the merge
//! reaches its paths (the store's timeouts), so it is fetched whole first. Held in memory, the
//! deltas of a long log would cost all their bytes beside the state at its peak: 15.5 MiB for
//! the 36 deltas of a 1,000,000-file state. On disk, they cost the merge's read buffers, as
//! local deltas do, and the page cache, which the kernel can take back.
//!
//! The copies are unnamed (`O_TMPFILE` where the file system has it): an emitter or a listing
//! of the directory never sees them, and they are gone when the load drops them, or with the
//! process.

use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;

/// How many times the bytes of the copies a directory must have free: they are few and brief,
/// but the directory may be the emitter's, and its files need the room more.
const FREE_SHARE: u64 = 4;

/// Checks that `dir` can take copies of `bytes` in all: an unnamed file can be created there,
/// the directory is not on a file system in memory, and it has [`FREE_SHARE`] times that much
/// free. `Err` says why not.
pub(crate) fn usable(dir: &Path, bytes: u64) -> Result<(), String> {
    let probe = create(dir)?;
    if let Some(kind) = in_memory(&probe) {
        return Err(format!(
            "{} is on {kind}: copies there would take the memory they save",
            dir.display()
        ));
    }
    let free = rustix::fs::fstatvfs(&probe)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|e| format!("reading the free space of {}: {e}", dir.display()))?;
    if free < bytes.saturating_mul(FREE_SHARE) {
        return Err(format!(
            "{} has {free} bytes free, under {FREE_SHARE} times the {bytes} bytes of the copies",
            dir.display()
        ));
    }
    Ok(())
}

/// Writes `bytes` to a new unnamed file in `dir`, ready to be read from its start: the file and
/// its size.
pub(crate) fn copy(dir: &Path, bytes: &[u8]) -> Result<(File, u64), String> {
    let mut file = create(dir)?;
    let written = file.write_all(bytes).and_then(|()| file.rewind());
    written.map_err(|e| format!("writing a copy in {}: {e}", dir.display()))?;
    Ok((file, bytes.len() as u64))
}

fn create(dir: &Path) -> Result<File, String> {
    tempfile::tempfile_in(dir).map_err(|e| format!("creating a file in {}: {e}", dir.display()))
}

/// The kind of file system in memory `file` is on, if it is on one (its pages count in the
/// memory of the process's cgroup, as a Pod's `emptyDir` with `medium: Memory` does).
#[cfg(target_os = "linux")]
fn in_memory(file: &File) -> Option<&'static str> {
    const TMPFS_MAGIC: i128 = 0x0102_1994;
    const RAMFS_MAGIC: i128 = 0x8584_58f6;
    let kind = i128::from(rustix::fs::fstatfs(file).ok()?.f_type);
    match kind {
        TMPFS_MAGIC => Some("tmpfs"),
        RAMFS_MAGIC => Some("ramfs"),
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn in_memory(_file: &File) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_copy_reads_back_from_its_start_and_leaves_no_name() {
        let dir = tempfile::tempdir().unwrap();
        usable(dir.path(), 11).unwrap();
        let (mut file, size) = copy(dir.path(), b"delta bytes").unwrap();
        assert_eq!(size, 11);
        let mut back = String::new();
        file.read_to_string(&mut back).unwrap();
        assert_eq!(back, "delta bytes");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_one_in_memory_or_one_too_full_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let refused = usable(&missing, 1).unwrap_err();
        assert!(refused.contains("missing"), "{refused}");
        let refused = usable(dir.path(), u64::MAX / 8).unwrap_err();
        assert!(refused.contains("bytes free"), "{refused}");
        // /dev/shm, where /proc/mounts says it is a tmpfs (as on Linux machines and in Pods).
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let shm = mounts
            .lines()
            .any(|line| line.split(' ').skip(1).take(2).eq(["/dev/shm", "tmpfs"]));
        if shm {
            let tmpfs = "/dev/shm";
            let refused = usable(Path::new(tmpfs), 1).unwrap_err();
            assert!(refused.contains("on tmpfs"), "{tmpfs}: {refused}");
        }
    }
}
