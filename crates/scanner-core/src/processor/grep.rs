//! The `grep` processor: matching lines, counted, with a few samples.

use std::cell::RefCell;
use std::sync::Arc;

use grep_matcher::LineTerminator;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use serde::{Deserialize, Serialize};

use super::{LineSplitter, Merge, Processor, Reducer};

/// Longest sample kept, in bytes; longer matching lines are cut.
pub const SAMPLE_BYTES: usize = 1024;

/// Counts the lines that match a regular expression, and keeps the first few as samples.
///
/// Built on the crates ripgrep is made of: `grep-regex` compiles the pattern (a match never
/// spans lines; `$` also matches before `\r\n`), `grep-searcher` finds matching lines in whole
/// regions of lines at once. Lines longer than [`LineSplitter::DEFAULT_MAX_LINE`] are matched on
/// their first part only, and counted in `long_lines`. The reduction merges: a large file is
/// split across workers, and its samples stay in file order.
#[derive(Clone, Debug)]
pub struct Grep {
    matcher: Arc<RegexMatcher>,
    samples: usize,
}

impl Grep {
    /// Compiles `pattern` (Rust regex syntax); keeps up to `samples` matching lines.
    pub fn new(pattern: &str, samples: usize) -> Result<Self, grep_regex::Error> {
        let matcher = RegexMatcherBuilder::new()
            // `^` and `$` at every line's start and end, as ripgrep configures it.
            .multi_line(true)
            .line_terminator(Some(b'\n'))
            .crlf(true)
            .build(pattern)?;
        Ok(Self {
            matcher: Arc::new(matcher),
            samples,
        })
    }
}

/// The result of [`Grep`] for one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepResult {
    /// Lines that match.
    pub matches: u64,
    /// The first matching lines (without their line terminator, cut to 1 KiB, invalid UTF-8
    /// replaced by U+FFFD), in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
    /// Lines longer than the line limit, matched on their first part only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub long_lines: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The reduction state of [`Grep`] for one file or range.
pub struct GrepReducer {
    matcher: Arc<RegexMatcher>,
    lines: LineSplitter,
    max_samples: usize,
    result: GrepResult,
}

impl Processor for Grep {
    type Reducer = GrepReducer;

    fn name(&self) -> &str {
        "grep"
    }

    fn reducer(&self) -> GrepReducer {
        GrepReducer {
            matcher: Arc::clone(&self.matcher),
            lines: LineSplitter::default(),
            max_samples: self.samples,
            result: GrepResult::default(),
        }
    }
}

/// Counts matching lines and keeps samples.
struct Collect<'a> {
    result: &'a mut GrepResult,
    max_samples: usize,
}

impl Sink for Collect<'_> {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, std::io::Error> {
        for line in mat.lines() {
            self.result.matches += 1;
            if self.result.samples.len() < self.max_samples {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let cut = &line[..line.len().min(SAMPLE_BYTES)];
                self.result
                    .samples
                    .push(String::from_utf8_lossy(cut).into_owned());
            }
        }
        Ok(true)
    }
}

thread_local! {
    /// One searcher per thread, shared by every reducer that runs there. A searcher owns
    /// buffers of about 72 KiB: one per reducer cost an allocation per file, and a batch of
    /// 10,000 small files kept 10,000 of them alive until its results were merged (700 MB).
    static SEARCHER: RefCell<Option<Searcher>> = const { RefCell::new(None) };
}

fn new_searcher() -> Searcher {
    SearcherBuilder::new()
        .line_number(false)
        .line_terminator(LineTerminator::crlf())
        .binary_detection(BinaryDetection::none())
        // Bytes are bytes: a line starting with FF FE is not UTF-16 to transcode.
        .bom_sniffing(false)
        .build()
}

/// Frees this thread's searcher, if it has one.
pub(super) fn release_searcher() {
    SEARCHER.take();
}

/// Bytes of the searcher this thread holds, roughly (its buffers are private).
#[cfg(test)]
pub(super) fn searcher_bytes() -> usize {
    SEARCHER.with_borrow(|searcher| {
        if searcher.is_some() {
            SEARCHER_BYTES
        } else {
            0
        }
    })
}

/// What a searcher's buffers take, about.
#[cfg(test)]
const SEARCHER_BYTES: usize = 72 << 10;

impl GrepReducer {
    fn search(matcher: &RegexMatcher, result: &mut GrepResult, max_samples: usize, region: &[u8]) {
        let sink = Collect {
            result,
            max_samples,
        };
        // Searching a slice with an infallible sink cannot fail (and the sink never searches,
        // so the searcher is never borrowed twice).
        SEARCHER.with_borrow_mut(|searcher| {
            searcher
                .get_or_insert_with(new_searcher)
                .search_slice(matcher, region, sink)
                .expect("searching memory with a counting sink cannot fail")
        });
    }
}

impl Reducer for GrepReducer {
    type Output = GrepResult;

    fn update(&mut self, chunk: &[u8]) {
        let Self {
            matcher,
            lines,
            max_samples,
            result,
        } = self;
        lines.feed(chunk, |region| {
            Self::search(matcher, result, *max_samples, region);
        });
    }

    fn finish(mut self) -> GrepResult {
        let Self {
            matcher,
            lines,
            max_samples,
            result,
        } = &mut self;
        lines.finish(|region| {
            Self::search(matcher, result, *max_samples, region);
        });
        self.result.long_lines += self.lines.long_lines();
        self.result
    }
}

impl Merge for GrepReducer {
    fn merge(&mut self, mut later: Self) {
        // Ranges are line-aligned: the later one's lines are all complete by now.
        let GrepReducer {
            matcher,
            lines,
            max_samples,
            result,
        } = &mut later;
        lines.finish(|region| {
            Self::search(matcher, result, *max_samples, region);
        });
        self.result.matches += later.result.matches;
        let room = self.max_samples.saturating_sub(self.result.samples.len());
        self.result
            .samples
            .extend(later.result.samples.into_iter().take(room));
        self.result.long_lines += later.lines.long_lines();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::testing::{newlines, run_chunked, run_split};

    /// Line by line with the `regex` crate: an independent computation.
    fn reference(pattern: &str, data: &[u8], samples: usize) -> serde_json::Value {
        let re = regex::bytes::Regex::new(pattern).unwrap();
        let mut result = GrepResult::default();
        let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if data.last() == Some(&b'\n') || data.is_empty() {
            lines.pop();
        }
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if re.is_match(line) {
                result.matches += 1;
                if result.samples.len() < samples {
                    let cut = &line[..line.len().min(SAMPLE_BYTES)];
                    result
                        .samples
                        .push(String::from_utf8_lossy(cut).into_owned());
                }
            }
        }
        serde_json::to_value(result).unwrap()
    }

    #[test]
    fn counts_and_samples_match_a_line_by_line_reference() {
        let data: &[u8] = b"ERROR one\r\nok\nERROR two\n\xff\xfe ERROR bytes\nnothing\nERROR last";
        for pattern in ["ERROR", "^ERROR", "o$", "[a-z]{3,}", "t[wo]+\\b", "\\d+"] {
            let grep = Grep::new(pattern, 2).unwrap();
            let expected = reference(pattern, data, 2);
            for chunk in [1, 2, 5, 64, 1 << 16] {
                assert_eq!(
                    run_chunked(&grep, data, chunk),
                    expected,
                    "{pattern} in {chunk}-byte chunks"
                );
            }
            let lines = newlines(data);
            for cut in &lines {
                assert_eq!(
                    run_split(&grep, data, &[*cut], 3),
                    expected,
                    "{pattern} split at {cut}"
                );
            }
            assert_eq!(
                run_split(&grep, data, &lines, 7),
                expected,
                "{pattern} split everywhere"
            );
        }
    }

    #[test]
    fn a_match_spanning_a_buffer_boundary_is_found_once() {
        let mut data = vec![b'.'; 300_000];
        data.extend_from_slice(b" needle in a haystack\n");
        let at = 300_000 + 3;
        for chunk in [at - 2, at, at + 1, 4096, 65536] {
            let result = run_chunked(&Grep::new("needle", 1).unwrap(), &data, chunk);
            assert_eq!(result["matches"], 1, "chunk {chunk}");
            assert_eq!(result["samples"][0].as_str().unwrap().len(), SAMPLE_BYTES);
        }
    }

    #[test]
    fn empty_input_and_random_inputs() {
        let grep = Grep::new("ab+c", 3).unwrap();
        assert_eq!(run_chunked(&grep, b"", 10), reference("ab+c", b"", 3));
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"abc\n\r \xff";
        for _ in 0..200 {
            let data: Vec<u8> = (0..rng.usize(..2000))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let expected = reference("ab+c", &data, 3);
            assert_eq!(run_chunked(&grep, &data, rng.usize(1..300)), expected);
            let cuts: Vec<usize> = newlines(&data).into_iter().filter(|_| rng.bool()).collect();
            assert_eq!(run_split(&grep, &data, &cuts, rng.usize(1..300)), expected);
        }
    }

    #[test]
    fn invalid_patterns_are_errors() {
        assert!(Grep::new("(unclosed", 0).is_err());
    }
}
