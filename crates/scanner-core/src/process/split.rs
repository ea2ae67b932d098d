//! Line-aligned ranges of files: the work units of one large file (a newline searched forwards
//! from each split point), and the whole lines appended to a file (the last newline, searched
//! backwards from its end). Both run the same search, in opposite directions.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use state_store::PlannedFile;

use super::Encoding;
use super::open::open;
use crate::listing::{ListedFile, absolute};
use crate::processor::DynProcessor;

/// A file is split into ranges for parallel workers only if each range gets at least this many
/// bytes.
pub const MIN_RANGE_BYTES: u64 = 16 << 20;

/// How far past a nominal split point a newline is looked for before giving up on that point.
const MAX_BOUNDARY_SEARCH: u64 = 8 << 20;

/// How much of a file one read of the newline search takes.
const SEARCH_WINDOW: usize = 64 << 10;

/// One piece of work for a worker: a file, or one line-aligned range of a large file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkUnit {
    /// Index of the file in the batch.
    pub file: usize,
    /// Bytes of the file this unit reads.
    pub range: Range<u64>,
}

/// Cuts the batch's files into work units. Blocking (it looks for line boundaries in large
/// files).
///
/// A file is split only if the processor can merge ranges, there are several workers, the file
/// is plain text (compressed streams cannot be entered in the middle), and every range gets at
/// least [`MIN_RANGE_BYTES`]. Ranges end just after a newline; where none is found near a split
/// point, the neighbouring ranges stay together.
pub fn plan_units(
    root: &Path,
    files: &[PlannedFile],
    processor: &DynProcessor,
    workers: usize,
) -> Vec<WorkUnit> {
    let mut units = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        let whole = file.start..file.size.max(file.start);
        let length = whole.end - whole.start;
        let parts = (length / MIN_RANGE_BYTES).min(workers as u64);
        if processor.is_splittable() && parts > 1 {
            let ranges = split_at_lines(&absolute(root, &file.path), whole.clone(), parts)
                .unwrap_or_else(|| vec![whole]);
            units.extend(
                ranges
                    .into_iter()
                    .map(|range| WorkUnit { file: index, range }),
            );
        } else {
            units.push(WorkUnit {
                file: index,
                range: whole,
            });
        }
    }
    units
}

/// Line-aligned ranges covering `whole`, about `parts` of them; `None` if the file cannot be
/// split (it is compressed, or cannot be read: its single unit will say why).
fn split_at_lines(path: &Path, whole: Range<u64>, parts: u64) -> Option<Vec<Range<u64>>> {
    let file = open(path).ok()?;
    if whole.start == 0 && Encoding::of_file(&file).ok()? != Encoding::Plain {
        return None;
    }
    let length = whole.end - whole.start;
    let mut ranges = Vec::new();
    let mut start = whole.start;
    let mut window = vec![0u8; SEARCH_WINDOW];
    for k in 1..parts {
        let nominal = whole.start + length * k / parts;
        if nominal <= start {
            continue;
        }
        let found = find_newline(
            &file,
            nominal..whole.end,
            Direction::Forward,
            MAX_BOUNDARY_SEARCH,
            &mut window,
        );
        // No newline near this point (or the file cannot be read there): the neighbouring
        // ranges stay together.
        let Ok(Some(boundary)) = found else {
            continue;
        };
        if boundary > start && boundary < whole.end {
            ranges.push(start..boundary);
            start = boundary;
        }
    }
    ranges.push(start..whole.end);
    Some(ranges)
}

/// What to process of a file when appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendRange {
    /// From `start` to the end of its last complete line.
    Lines(u64, u64),
    /// No complete line after `start` yet.
    Partial,
    /// A compressed file that grew: a stream cannot be resumed in the middle.
    Compressed,
}

/// The bytes of `file` to process from `start` when appending: up to the end of its last
/// complete line. A compressed file is processed whole when new. If the file cannot be read
/// now, the whole listed range is planned, and processing says why it fails. Blocking.
pub(crate) fn whole_lines(root: &Path, file: &ListedFile, start: u64) -> AppendRange {
    let whole = AppendRange::Lines(start, file.size);
    let Ok(handle) = open(&absolute(root, &file.path)) else {
        return whole;
    };
    match Encoding::of_file(&handle) {
        Ok(Encoding::Plain) => {}
        Ok(_) if start == 0 => return whole,
        Ok(_) => return AppendRange::Compressed,
        Err(_) => return whole,
    }
    let mut window = vec![0u8; SEARCH_WINDOW];
    match find_newline(
        &handle,
        start..file.size,
        Direction::Backward,
        u64::MAX,
        &mut window,
    ) {
        Ok(Some(end)) => AppendRange::Lines(start, end),
        Ok(None) => AppendRange::Partial,
        Err(_) => whole,
    }
}

/// Which way [`find_newline`] searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// From the start of the range: the first newline.
    Forward,
    /// From the end of the range: the last newline.
    Backward,
}

/// The offset just past the first (forwards) or last (backwards) newline in `range` of
/// `file`, looking at no more than about `limit` bytes; `None` if there is none. Reads a
/// `window` at a time, by position, so the file's read position does not matter.
fn find_newline(
    file: &File,
    range: Range<u64>,
    direction: Direction,
    limit: u64,
    window: &mut [u8],
) -> std::io::Result<Option<u64>> {
    let (mut low, mut high) = (range.start, range.end);
    let mut searched = 0u64;
    while low < high && searched < limit {
        let len = (window.len() as u64).min(high - low);
        let at = match direction {
            Direction::Forward => low,
            Direction::Backward => high - len,
        };
        let chunk = &mut window[..len as usize];
        file.read_exact_at(chunk, at)?;
        let found = match direction {
            Direction::Forward => memchr::memchr(b'\n', chunk),
            Direction::Backward => memchr::memrchr(b'\n', chunk),
        };
        if let Some(i) = found {
            return Ok(Some(at + i as u64 + 1));
        }
        match direction {
            Direction::Forward => low += len,
            Direction::Backward => high -= len,
        }
        searched += len;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_found_forwards_and_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ab\ncd\nef").unwrap();
        let file = open(&path).unwrap();
        let mut window = [0u8; 2];
        let find = |range, direction, window: &mut [u8]| {
            find_newline(&file, range, direction, u64::MAX, window).unwrap()
        };
        assert_eq!(find(0..8, Direction::Forward, &mut window), Some(3));
        assert_eq!(find(3..8, Direction::Forward, &mut window), Some(6));
        assert_eq!(find(6..8, Direction::Forward, &mut window), None);
        assert_eq!(find(0..8, Direction::Backward, &mut window), Some(6));
        assert_eq!(find(0..5, Direction::Backward, &mut window), Some(3));
        assert_eq!(find(3..5, Direction::Backward, &mut window), None);
        // The limit stops a forward search.
        assert_eq!(
            find_newline(&file, 3..8, Direction::Forward, 2, &mut window).unwrap(),
            None
        );
        // Reading past the end of a file that shrank is an error, not a boundary.
        assert!(find_newline(&file, 0..100, Direction::Backward, u64::MAX, &mut window).is_err());
    }

    #[test]
    fn appended_ranges_end_at_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let listed = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.path().join(name), bytes).unwrap();
            ListedFile {
                path: name.into(),
                size: bytes.len() as u64,
                mtime_ns: 0,
                inode: 0,
                btime_ns: 0,
            }
        };
        let file = listed("a", b"one\ntwo\nthr");
        assert_eq!(whole_lines(dir.path(), &file, 0), AppendRange::Lines(0, 8));
        assert_eq!(whole_lines(dir.path(), &file, 8), AppendRange::Partial);
        let gz = listed("b", &[0x1f, 0x8b, 8, 0, b'\n', 1]);
        assert_eq!(whole_lines(dir.path(), &gz, 0), AppendRange::Lines(0, 6));
        assert_eq!(whole_lines(dir.path(), &gz, 2), AppendRange::Compressed);
        let missing = ListedFile {
            path: "missing".into(),
            ..file
        };
        assert_eq!(
            whole_lines(dir.path(), &missing, 4),
            AppendRange::Lines(4, 11)
        );
    }
}
