//! The `stats` processor: bytes, lines, words and the longest line of any bytes.

use serde::{Deserialize, Serialize};
use wide::u8x16;

use super::{Merge, Processor, Reducer};

/// Counts bytes, lines, words and the longest line, like `wc -c -l -w -L` on raw bytes.
///
/// * `lines`: newline-terminated lines, plus one if the file ends with a non-empty unterminated
///   line (so `"a\nb"` has 2 lines where `wc -l` says 1).
/// * `words`: maximal runs of bytes other than ASCII whitespace (space, `\t`, `\n`, `\v`, `\f`,
///   `\r`). Every other byte, including invalid UTF-8 and NUL, is part of a word.
/// * `max_line_bytes`: bytes of the longest line, its `\n` excluded (a `\r` before it counts).
///
/// Any input is accepted: binary data and invalid UTF-8 are counted, never rejected. One pass,
/// at memory speed: word starts and newlines are found 64 bytes at a time with SIMD
/// comparisons, from one load of each byte. The reduction merges, so a large file is split across workers.
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

/// The reduction state of [`Stats`] for one file or range.
#[derive(Clone, Debug, Default)]
pub struct StatsReducer {
    bytes: u64,
    newlines: u64,
    words: u64,
    /// Longest line that ended (with a newline) in this range, counted from its start here.
    max_line: u64,
    /// Bytes since the last newline (all bytes, if none was seen).
    current_line: u64,
    /// Bytes before the first newline of this range, once one was seen.
    leading_line: Option<u64>,
    /// Whether the last byte was part of a word.
    in_word: bool,
    /// Whether the first byte was part of a word (`None` until a byte arrives).
    starts_in_word: Option<bool>,
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

#[inline(always)]
fn is_space(b: u8) -> bool {
    (b == b' ') | (b.wrapping_sub(b'\t') < 5)
}

/// For one block of 64 bytes: bit `i` of the first mask set where byte `i` is ASCII
/// whitespace, of the second where it is a newline. Both from one load of each 16 bytes, so
/// words and lines cost one pass over the bytes.
#[inline(always)]
fn block_masks(block: &[u8; 64]) -> (u64, u64) {
    let space = u8x16::splat(b' ');
    let tab = u8x16::splat(b'\t');
    let newline = u8x16::splat(b'\n');
    let four = u8x16::splat(4);
    let mut whitespace = 0u64;
    let mut newlines = 0u64;
    for (k, lane) in block.chunks_exact(16).enumerate() {
        let v = u8x16::new(lane.try_into().expect("16 bytes"));
        // \t \n \v \f \r are 9..=13: after subtracting 9 they are the bytes below 5.
        let shifted = v - tab;
        let ws = v.simd_eq(space) | shifted.min(four).simd_eq(shifted);
        whitespace |= u64::from(ws.to_bitmask()) << (16 * k);
        newlines |= u64::from(v.simd_eq(newline).to_bitmask()) << (16 * k);
    }
    (whitespace, newlines)
}

/// [`block_masks`] with AVX2 instructions.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_min_epu8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8, _mm256_sub_epi8,
    };

    /// Whitespace and newline masks of 64 bytes, as [`super::block_masks`] gives them.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn block_masks(block: &[u8; 64]) -> (u64, u64) {
        let halves: [[u8; 32]; 2] = bytemuck::cast(*block);
        let mut whitespace = 0u64;
        let mut newlines = 0u64;
        for (k, half) in halves.iter().enumerate() {
            let v: __m256i = bytemuck::cast(*half);
            // As in the baseline: \t \n \v \f \r are the bytes below 5 once 9 is subtracted.
            let shifted = _mm256_sub_epi8(v, _mm256_set1_epi8(9));
            let control = _mm256_cmpeq_epi8(_mm256_min_epu8(shifted, _mm256_set1_epi8(4)), shifted);
            let space = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b' ' as i8));
            let ws = _mm256_movemask_epi8(_mm256_or_si256(space, control));
            let nl = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\n' as i8)));
            whitespace |= u64::from(ws as u32) << (32 * k);
            newlines |= u64::from(nl as u32) << (32 * k);
        }
        (whitespace, newlines)
    }
}

impl StatsReducer {
    /// A newline ends the open line, `bytes` of it in the current chunk.
    #[inline(always)]
    fn end_line(&mut self, bytes: usize) {
        let length = self.current_line + bytes as u64;
        if self.leading_line.is_none() {
            self.leading_line = Some(length);
        } else {
            self.max_line = self.max_line.max(length);
        }
        self.newlines += 1;
        self.current_line = 0;
    }

    /// The reduction of one chunk, with `masks` finding whitespace and newlines in each block
    /// of 64 bytes. Inlined into each caller, so that the SIMD instructions of the caller's
    /// target features are used throughout.
    #[inline(always)]
    fn update_with(&mut self, chunk: &[u8], masks: impl Fn(&[u8; 64]) -> (u64, u64)) {
        let Some(&last) = chunk.last() else {
            return;
        };
        if self.starts_in_word.is_none() {
            self.starts_in_word = Some(!is_space(chunk[0]));
        }
        self.bytes += chunk.len() as u64;
        // Words and newlines 64 bytes at a time, from one pass over the bytes: `carry` is 1
        // when the byte before the block was whitespace (or nothing came before).
        let mut carry = u64::from(!self.in_word);
        let mut line_start = 0usize;
        let mut blocks = chunk.chunks_exact(64);
        let mut offset = 0usize;
        for block in &mut blocks {
            let (ws, nl) = masks(block.try_into().expect("64 bytes"));
            self.words += u64::from((!ws & ((ws << 1) | carry)).count_ones());
            carry = ws >> 63;
            let mut newlines = nl;
            while newlines != 0 {
                let at = offset + newlines.trailing_zeros() as usize;
                self.end_line(at - line_start);
                line_start = at + 1;
                newlines &= newlines - 1;
            }
            offset += 64;
        }
        let mut after_space = carry == 1;
        for &b in blocks.remainder() {
            let space = is_space(b);
            self.words += u64::from(!space & after_space);
            after_space = space;
            if b == b'\n' {
                self.end_line(offset - line_start);
                line_start = offset + 1;
            }
            offset += 1;
        }
        self.current_line += (chunk.len() - line_start) as u64;
        self.in_word = !is_space(last);
    }

    /// [`update_with`](Self::update_with) on 32 bytes at a time, twice the width of the
    /// baseline x86-64 instructions, with one instruction each for counting and finding set
    /// bits (`popcnt`, `tzcnt`): for the CPUs that have them (every x86-64 since 2013), checked
    /// at run time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,popcnt")]
    fn update_avx2(&mut self, chunk: &[u8]) {
        self.update_with(chunk, |block| avx2::block_masks(block));
    }
}

impl Reducer for StatsReducer {
    type Output = FileStats;

    fn update(&mut self, chunk: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("popcnt")
        {
            // SAFETY: the CPU running this has the target features `update_avx2` is built for.
            #[allow(unsafe_code)]
            unsafe {
                self.update_avx2(chunk);
            }
            return;
        }
        self.update_with(chunk, block_masks);
    }

    fn finish(self) -> FileStats {
        let longest_closed = self.leading_line.map_or(0, |l| l.max(self.max_line));
        FileStats {
            bytes: self.bytes,
            lines: self.newlines + u64::from(self.current_line > 0),
            words: self.words,
            max_line_bytes: longest_closed.max(self.current_line),
        }
    }
}

impl Merge for StatsReducer {
    fn merge(&mut self, later: Self) {
        let Some(later_starts_in_word) = later.starts_in_word else {
            return; // an empty range changes nothing
        };
        if self.starts_in_word.is_none() {
            *self = later;
            return;
        }
        self.bytes += later.bytes;
        self.newlines += later.newlines;
        // A word that runs across the boundary was counted once on each side.
        self.words += later.words - u64::from(self.in_word && later_starts_in_word);
        self.in_word = later.in_word;
        match later.leading_line {
            // The line open here continues into the later range and ends there.
            Some(leading) => {
                let joined = self.current_line + leading;
                match self.leading_line {
                    None => self.leading_line = Some(joined),
                    Some(_) => self.max_line = self.max_line.max(joined),
                }
                self.max_line = self.max_line.max(later.max_line);
                self.current_line = later.current_line;
            }
            None => self.current_line += later.current_line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::testing::{newlines, run_chunked, run_split};

    /// The definition, byte by byte, with no shortcuts.
    fn reference(data: &[u8]) -> serde_json::Value {
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
        serde_json::to_value(out).unwrap()
    }

    const CASES: &[&[u8]] = &[
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

    #[test]
    fn edge_cases_match_the_definition_for_every_chunking() {
        for &case in CASES {
            for chunk in [1, 2, 3, 7, 63, 64, 65, 1 << 20] {
                assert_eq!(
                    run_chunked(&Stats, case, chunk),
                    reference(case),
                    "{case:?} in {chunk}-byte chunks"
                );
            }
        }
    }

    #[test]
    fn random_inputs_match_the_definition_whole_and_split() {
        let mut rng = fastrand::Rng::with_seed(0x9e37_79b9);
        let alphabet = b"ab \n\t\r\x0b\x0c\x00\xff";
        for _ in 0..300 {
            let data: Vec<u8> = (0..rng.usize(..3000))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let expected = reference(&data);
            assert_eq!(run_chunked(&Stats, &data, rng.usize(1..200)), expected);
            let lines = newlines(&data);
            let cuts: Vec<usize> = lines.iter().copied().filter(|_| rng.bool()).collect();
            assert_eq!(run_split(&Stats, &data, &cuts, rng.usize(1..200)), expected);
        }
    }

    #[test]
    fn the_baseline_path_matches_the_definition_too() {
        // `update` takes the AVX2 path where the CPU has it: the baseline masks are run here
        // on their own, on the same kind of inputs.
        let mut rng = fastrand::Rng::with_seed(0x51_7cc1);
        let alphabet = b"ab \n\t\r\x0b\x0c\x00\xff";
        for _ in 0..200 {
            let data: Vec<u8> = (0..rng.usize(..3000))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let mut reducer = Stats.reducer();
            for piece in data.chunks(rng.usize(1..300)) {
                reducer.update_with(piece, block_masks);
            }
            assert_eq!(
                serde_json::to_value(reducer.finish()).unwrap(),
                reference(&data)
            );
        }
    }

    #[test]
    fn both_mask_functions_agree_on_every_byte_value() {
        let by_definition = |block: &[u8; 64]| {
            let mut masks = (0u64, 0u64);
            for (i, &b) in block.iter().enumerate() {
                masks.0 |= u64::from(matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')) << i;
                masks.1 |= u64::from(b == b'\n') << i;
            }
            masks
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut blocks: Vec<[u8; 64]> = (0..=255u8)
            .collect::<Vec<_>>()
            .chunks(64)
            .map(|c| c.try_into().unwrap())
            .collect();
        blocks.extend((0..1000).map(|_| std::array::from_fn(|_| rng.u8(..))));
        for block in &blocks {
            assert_eq!(block_masks(block), by_definition(block), "{block:?}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                #[allow(unsafe_code)]
                let masks = unsafe { avx2::block_masks(block) };
                assert_eq!(masks, by_definition(block), "{block:?}");
            }
        }
    }

    #[test]
    fn merging_is_correct_at_any_byte_not_just_lines() {
        let data = b"one two\nthree four five\n\nsix";
        let expected = reference(data);
        for cut in 0..data.len() {
            let mut first = Stats.reducer();
            first.update(&data[..cut]);
            let mut second = Stats.reducer();
            second.update(&data[cut..]);
            first.merge(second);
            assert_eq!(
                serde_json::to_value(first.finish()).unwrap(),
                expected,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_line_longer_than_any_chunk() {
        let mut data = vec![b'x'; 1_000_000];
        data.push(b'\n');
        data.extend_from_slice(b"short");
        let got = run_chunked(&Stats, &data, 4096);
        assert_eq!(got["max_line_bytes"], 1_000_000);
        assert_eq!(got["lines"], 2);
        assert_eq!(got["words"], 2);
    }
}
