//! The `stats` processor: bytes, lines, words and the longest line of any bytes.

use serde::{Deserialize, Serialize};

use super::{Processor, Reducer};

/// Counts bytes, lines, words and the longest line, like `wc -c -l -w -L` on raw bytes.
///
/// * `lines`: newline-terminated lines, plus one if the file ends with a non-empty unterminated
///   line (so `"a\nb"` has 2 lines where `wc -l` says 1).
/// * `words`: maximal runs of bytes other than ASCII whitespace (space, `\t`, `\n`, `\v`, `\f`,
///   `\r`). Every other byte, including invalid UTF-8 and NUL, is part of a word.
/// * `max_line_bytes`: bytes of the longest line, its `\n` excluded (a `\r` before it counts).
///
/// Any input is accepted: binary data and invalid UTF-8 are counted, never rejected.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats;

/// The result of [`Stats`] for one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStats {
    /// Bytes processed.
    pub bytes: u64,
    /// Lines, counting a non-empty unterminated last line.
    pub lines: u64,
    /// Runs of non-whitespace bytes.
    pub words: u64,
    /// Length of the longest line in bytes, without its newline.
    pub max_line_bytes: u64,
}

/// The reduction state of [`Stats`] for one file.
#[derive(Clone, Debug, Default)]
pub struct StatsReducer {
    stats: FileStats,
    /// Bytes of the line in progress.
    current_line: u64,
    /// Whether the previous byte was part of a word.
    in_word: bool,
}

impl Processor for Stats {
    type Reducer = StatsReducer;

    fn name(&self) -> &str {
        "stats"
    }

    fn reducer(&self) -> StatsReducer {
        StatsReducer::default()
    }
}

/// `WHITESPACE[b]` is 1 for the six ASCII whitespace bytes.
const WHITESPACE: [u8; 256] = {
    let mut table = [0u8; 256];
    table[b' ' as usize] = 1;
    table[b'\t' as usize] = 1;
    table[b'\n' as usize] = 1;
    table[0x0b] = 1;
    table[0x0c] = 1;
    table[b'\r' as usize] = 1;
    table
};

impl Reducer for StatsReducer {
    type Output = FileStats;

    fn update(&mut self, chunk: &[u8]) {
        let stats = &mut self.stats;
        stats.bytes += chunk.len() as u64;

        let mut line_start = 0usize;
        for newline in memchr::memchr_iter(b'\n', chunk) {
            let length = self.current_line + (newline - line_start) as u64;
            stats.max_line_bytes = stats.max_line_bytes.max(length);
            stats.lines += 1;
            self.current_line = 0;
            line_start = newline + 1;
        }
        self.current_line += (chunk.len() - line_start) as u64;

        // A word starts at every non-whitespace byte that follows whitespace (or the start).
        let mut previous_space = u8::from(!self.in_word);
        let mut starts = 0u64;
        for &byte in chunk {
            let space = WHITESPACE[byte as usize];
            starts += u64::from(previous_space & (space ^ 1));
            previous_space = space;
        }
        stats.words += starts;
        if let Some(&last) = chunk.last() {
            self.in_word = WHITESPACE[last as usize] == 0;
        }
    }

    fn finish(self) -> FileStats {
        let mut stats = self.stats;
        if self.current_line > 0 {
            stats.lines += 1;
            stats.max_line_bytes = stats.max_line_bytes.max(self.current_line);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, byte by byte, with no shortcuts.
    fn reference(data: &[u8]) -> FileStats {
        let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        let mut out = FileStats {
            bytes: data.len() as u64,
            ..FileStats::default()
        };
        for line in data.split(|&b| b == b'\n') {
            out.max_line_bytes = out.max_line_bytes.max(line.len() as u64);
        }
        out.lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        if data.last().is_some_and(|&b| b != b'\n') {
            out.lines += 1;
        }
        out.words = data
            .split(|&b| is_space(b))
            .filter(|w| !w.is_empty())
            .count() as u64;
        out
    }

    fn run(data: &[u8], chunk: usize) -> FileStats {
        let mut reducer = Stats.reducer();
        for piece in data.chunks(chunk.max(1)) {
            reducer.update(piece);
        }
        reducer.finish()
    }

    #[test]
    fn edge_cases_match_the_definition_for_every_chunking() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"\n\n",
            b"a",
            b"a\n",
            b"a\nb",
            b"hello world\r\nsecond  line\r\n",
            b"  leading and trailing  ",
            b"\x00\x00\x00",
            b"caf\xc3\xa9 \xff\xfe bad utf8\n",
            b"tab\tvt\x0bff\x0ccr\rend",
            b"x\n\ny\n\n\nlongest line here\nz",
        ];
        for &case in cases {
            for chunk in [1, 2, 3, 7, 1 << 20] {
                assert_eq!(
                    run(case, chunk),
                    reference(case),
                    "{case:?} in {chunk}-byte chunks"
                );
            }
        }
    }

    #[test]
    fn random_inputs_match_the_definition() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9);
        let alphabet = b"ab \n\t\r\x00\xff";
        for _ in 0..200 {
            let data: Vec<u8> = (0..rng.usize(..2000))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let chunk = rng.usize(1..64);
            assert_eq!(run(&data, chunk), reference(&data));
        }
    }

    #[test]
    fn a_line_longer_than_any_chunk() {
        let mut data = vec![b'x'; 1_000_000];
        data.push(b'\n');
        data.extend_from_slice(b"short");
        let got = run(&data, 4096);
        assert_eq!(got.max_line_bytes, 1_000_000);
        assert_eq!(got.lines, 2);
        assert_eq!(got.words, 2);
    }
}
