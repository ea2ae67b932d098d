//! Turning chunks into regions of complete lines, in bounded memory.

/// Splits a stream of chunks into regions of complete lines.
///
/// Regions are handed over whole, most of them straight out of the chunk (no copy), so that a
/// matcher can search many lines at once. Only a line that spans two chunks is copied, into a
/// carry buffer; a line longer than `max_line` bytes is cut there (the rest of it, up to its
/// newline, is skipped and counted in [`LineSplitter::long_lines`]), so an input without any
/// newline costs `max_line` bytes of memory, not its size.
///
/// ```
/// use scanner_core::processor::LineSplitter;
///
/// let mut lines = LineSplitter::new(8);
/// let mut seen = Vec::new();
/// lines.feed(b"one\ntw", |region| seen.push(region.to_vec()));
/// lines.feed(b"o\nthree and much more\nfour", |region| seen.push(region.to_vec()));
/// lines.finish(|region| seen.push(region.to_vec()));
/// assert_eq!(seen, [&b"one\n"[..], b"two\n", b"three an\n", b"four"]);
/// assert_eq!(lines.long_lines(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct LineSplitter {
    carry: Vec<u8>,
    max_line: usize,
    /// The line in the carry exceeded `max_line`: drop bytes until its newline.
    cutting: bool,
    long_lines: u64,
}

impl Default for LineSplitter {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINE)
    }
}

impl LineSplitter {
    /// Lines are cut at 8 MiB unless told otherwise.
    pub const DEFAULT_MAX_LINE: usize = 8 << 20;

    /// A splitter that cuts lines longer than `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> Self {
        Self {
            carry: Vec::new(),
            max_line: max_line.max(1),
            cutting: false,
            long_lines: 0,
        }
    }

    /// How many lines were longer than the limit and cut.
    pub fn long_lines(&self) -> u64 {
        self.long_lines
    }

    /// Feeds the next chunk; calls `lines` with each region of complete lines, every line of it
    /// ending with `\n`.
    pub fn feed(&mut self, chunk: &[u8], mut lines: impl FnMut(&[u8])) {
        // In pieces of at most `max_line` bytes, any longer line spans two pieces and so passes
        // through the carry, where it is cut: results never depend on the chunk sizes.
        for piece in chunk.chunks(self.max_line) {
            self.feed_piece(piece, &mut lines);
        }
    }

    fn feed_piece(&mut self, mut chunk: &[u8], lines: &mut impl FnMut(&[u8])) {
        if !self.carry.is_empty() || self.cutting {
            match memchr::memchr(b'\n', chunk) {
                None => {
                    self.keep(chunk);
                    return;
                }
                Some(newline) => {
                    self.keep(&chunk[..newline]);
                    self.carry.push(b'\n');
                    if self.cutting {
                        self.long_lines += 1;
                        self.cutting = false;
                    }
                    lines(&self.carry);
                    self.carry.clear();
                    chunk = &chunk[newline + 1..];
                }
            }
        }
        match memchr::memrchr(b'\n', chunk) {
            None => self.keep(chunk),
            Some(last) => {
                lines(&chunk[..=last]);
                self.keep(&chunk[last + 1..]);
            }
        }
    }

    /// Ends the input: calls `lines` with the last line if it has no newline (then without one).
    pub fn finish(&mut self, mut lines: impl FnMut(&[u8])) {
        if self.cutting {
            self.long_lines += 1;
            self.cutting = false;
        }
        if !self.carry.is_empty() {
            lines(&self.carry);
            self.carry.clear();
        }
    }

    /// Adds part of an unfinished line to the carry, up to the limit.
    fn keep(&mut self, part: &[u8]) {
        if self.cutting || part.is_empty() {
            return;
        }
        let room = self.max_line - self.carry.len();
        if part.len() > room {
            self.carry.extend_from_slice(&part[..room]);
            self.cutting = true;
        } else {
            self.carry.extend_from_slice(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line delivered, as delivered, for `data` fed in `chunk`-byte pieces.
    fn lines_of(data: &[u8], chunk: usize, max: usize) -> (Vec<Vec<u8>>, u64) {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut collect = |region: &[u8]| {
            for line in region.split_inclusive(|&b| b == b'\n') {
                out.push(line.to_vec());
            }
        };
        for piece in data.chunks(chunk) {
            splitter.feed(piece, &mut collect);
        }
        splitter.finish(&mut collect);
        (out, splitter.long_lines())
    }

    #[test]
    fn every_chunking_gives_the_same_lines() {
        let data = b"a\n\nbb\r\nccc\nlast without newline";
        let expected: Vec<Vec<u8>> = data
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        for chunk in 1..=data.len() {
            assert_eq!(
                lines_of(data, chunk, 1000),
                (expected.clone(), 0),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn long_lines_are_cut_in_bounded_memory() {
        let mut data = vec![b'x'; 10_000];
        data.extend_from_slice(b"\nshort\n");
        data.extend(std::iter::repeat_n(b'y', 5000));
        for chunk in [1, 7, 4096, 100_000] {
            let (lines, long) = lines_of(&data, chunk, 100);
            let mut cut = vec![b'x'; 100];
            cut.push(b'\n');
            assert_eq!(
                lines,
                vec![cut, b"short\n".to_vec(), vec![b'y'; 100]],
                "chunk {chunk}"
            );
            assert_eq!(long, 2);
        }
    }
}
