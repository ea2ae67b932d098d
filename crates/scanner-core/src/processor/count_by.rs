//! The `count-by` processor: lines per key, the top keys, in bounded memory.

use std::collections::HashMap;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::Arc;

use regex_automata::util::captures::Captures;
use regex_automata::util::pool::Pool;
use regex_automata::util::prefilter::Prefilter;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, meta};
use serde::{Deserialize, Serialize};

use super::{LineSplitter, Merge, Processor, Reducer};

/// Longest key kept, in bytes: longer keys are cut (and so counted together).
pub const MAX_KEY_BYTES: usize = 256;

/// Where a line's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The first match of a regular expression in the line: its first capture group if it has
    /// one, else the whole match. A line without a match has no key.
    Regex(String),
    /// A field of a JSON-lines line, by JSON pointer (`/a/b`): a string as it is, any other
    /// value as JSON. A line that is not JSON, or lacks the field, has no key.
    Json(String),
    /// A column of delimited text, counted from 1 (no quoting: every delimiter splits).
    Column {
        /// Which column, from 1.
        index: usize,
        /// The byte between columns.
        delimiter: u8,
    },
}

/// What [`CountBy`] counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountByConfig {
    /// Where the key comes from.
    pub key: KeySource,
    /// How many keys the result lists; the rest are summed up as `other`.
    pub top: usize,
    /// A numeric value summed per key: a capture group (index or name) for [`KeySource::Regex`],
    /// a JSON pointer for [`KeySource::Json`], a column (from 1) for [`KeySource::Column`].
    pub sum: Option<String>,
}

/// Counts lines per key and keeps the `top` keys plus an `other` count, in bounded memory.
///
/// Counting is exact while the distinct keys of a file stay within `max(10 × top, 10 000)`.
/// Beyond that, the least frequent half of the keys is folded into `other` whenever the limit is
/// reached, and the result says `"exact": false`: frequent keys are still found, though their
/// counts may miss what they had when they were folded. Lines longer than
/// [`LineSplitter::DEFAULT_MAX_LINE`] are read on their first part only.
#[derive(Clone, Debug)]
pub struct CountBy {
    extract: Arc<Extractor>,
    top: usize,
    max_keys: usize,
}

#[derive(Debug)]
enum Extractor {
    Regex {
        /// Finds where a match can start, when the pattern begins with literals: an anchored
        /// search from there reads the groups without the reverse scan an unanchored search
        /// needs to find the start.
        starts: Option<Prefilter>,
        key_group: usize,
        sum_group: Option<usize>,
        /// The regex, and its engine's scratch space, one per thread that uses it: creating it
        /// costs more than matching a small file, and one per reducer kept one per file of a
        /// batch alive until the batch was merged.
        scratch: Scratch,
    },
    Json {
        key: String,
        sum: Option<String>,
    },
    Column {
        key: usize,
        sum: Option<usize>,
        delimiter: u8,
    },
}

/// A regex with a pool of its engine's scratch space (cache and captures).
struct Scratch {
    regex: meta::Regex,
    pool: Pool<(meta::Cache, Captures), ScratchFn>,
}

type ScratchFn =
    Box<dyn Fn() -> (meta::Cache, Captures) + Send + Sync + UnwindSafe + RefUnwindSafe>;

impl Scratch {
    fn new(regex: &meta::Regex) -> Self {
        let for_pool = regex.clone();
        Scratch {
            regex: regex.clone(),
            pool: Pool::new(Box::new(move || {
                (for_pool.create_cache(), for_pool.create_captures())
            })),
        }
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// Why a [`CountByConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CountByError {
    /// The key regular expression does not compile.
    #[error("invalid --key-regex")]
    Regex(#[from] Box<meta::BuildError>),
    /// Something else about the configuration.
    #[error("{0}")]
    Invalid(String),
}

impl CountBy {
    /// Checks and compiles a configuration.
    pub fn new(config: CountByConfig) -> Result<Self, CountByError> {
        let invalid = |m: String| CountByError::Invalid(m);
        let extract = match &config.key {
            KeySource::Regex(pattern) => {
                // Lines are searched one by one, so `^` and `$` are those of the line, and a
                // CRLF line's `\r` is not part of it.
                let syntax = syntax::Config::new().multi_line(true).crlf(true);
                let regex = meta::Regex::builder()
                    .syntax(syntax)
                    .build(pattern)
                    .map_err(Box::new)?;
                let starts = syntax::parse_with(pattern, &syntax)
                    .ok()
                    .and_then(|hir| Prefilter::from_hir_prefix(MatchKind::LeftmostFirst, &hir))
                    .filter(Prefilter::is_fast);
                let groups = regex.captures_len();
                let key_group = usize::from(groups > 1);
                let sum_group = match &config.sum {
                    None => None,
                    Some(spec) => Some(match spec.parse::<usize>() {
                        Ok(i) if i < groups => i,
                        Ok(i) => {
                            return Err(invalid(format!(
                                "--sum {i}: the regex has only {} capture group(s)",
                                groups - 1
                            )));
                        }
                        Err(_) => regex
                            .group_info()
                            .to_index(regex_automata::PatternID::ZERO, spec)
                            .ok_or_else(|| {
                                invalid(format!(
                                    "--sum {spec}: the regex has no group named {spec:?}"
                                ))
                            })?,
                    }),
                };
                Extractor::Regex {
                    scratch: Scratch::new(&regex),
                    starts,
                    key_group,
                    sum_group,
                }
            }
            KeySource::Json(pointer) => {
                for p in std::iter::once(pointer).chain(&config.sum) {
                    if !p.is_empty() && !p.starts_with('/') {
                        return Err(invalid(format!(
                            "{p:?} is not a JSON pointer: they start with '/', like /service or /http/status"
                        )));
                    }
                }
                Extractor::Json {
                    key: pointer.clone(),
                    sum: config.sum.clone(),
                }
            }
            KeySource::Column { index, delimiter } => {
                let column = |n: usize, flag: &str| {
                    if n == 0 {
                        Err(invalid(format!("{flag}: columns are counted from 1")))
                    } else {
                        Ok(n - 1)
                    }
                };
                let sum = match &config.sum {
                    None => None,
                    Some(spec) => Some(column(
                        spec.parse().map_err(|_| {
                            invalid(format!(
                                "--sum {spec}: with --key-column, --sum is a column number"
                            ))
                        })?,
                        "--sum",
                    )?),
                };
                Extractor::Column {
                    key: column(*index, "--key-column")?,
                    sum,
                    delimiter: *delimiter,
                }
            }
        };
        if config.top == 0 {
            return Err(invalid("--top must be at least 1".into()));
        }
        Ok(Self {
            extract: Arc::new(extract),
            top: config.top,
            max_keys: (config.top.saturating_mul(10)).max(10_000),
        })
    }
}

/// One key of a [`CountByResult`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyCount {
    /// The key (invalid UTF-8 replaced by U+FFFD).
    pub key: String,
    /// Lines with this key.
    pub count: u64,
    /// Sum of the summed value over those lines, with `--sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

/// The lines of keys outside the top ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OtherCount {
    /// Lines with a key outside the top ones.
    pub count: u64,
    /// Sum of their summed values, with `--sum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
}

/// The result of [`CountBy`] for one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountByResult {
    /// Lines read.
    pub lines: u64,
    /// Lines without a key.
    pub missing_key: u64,
    /// The most frequent keys, most frequent first (ties by key).
    pub top: Vec<KeyCount>,
    /// Everything else with a key.
    pub other: OtherCount,
    /// Distinct keys counted (at the end, when not exact).
    pub distinct_keys: u64,
    /// False if keys had to be folded into `other` to keep memory bounded.
    pub exact: bool,
    /// Lines whose summed value was missing or not a number (counted, not summed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sum_errors: u64,
    /// Lines longer than the line limit, read on their first part only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub long_lines: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    count: u64,
    sum: f64,
}

/// The reduction state of [`CountBy`] for one file or range.
pub struct CountByReducer {
    extract: Arc<Extractor>,
    top: usize,
    max_keys: usize,
    summing: bool,
    lines: LineSplitter,
    counts: Counts,
    state: Totals,
}

/// Keys are short and looked up once per line: a fast hash matters more here than resistance
/// to crafted collisions, which the per-process random seed still makes hard.
type Counts = HashMap<Box<[u8]>, Tally, foldhash::fast::RandomState>;

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    lines: u64,
    missing_key: u64,
    folded: Tally,
    exact: bool,
    sum_errors: u64,
    /// Long lines of ranges merged into this one.
    long_lines: u64,
}

impl Processor for CountBy {
    type Reducer = CountByReducer;

    fn name(&self) -> &str {
        "count-by"
    }

    fn reducer(&self) -> CountByReducer {
        let summing = match &*self.extract {
            Extractor::Regex { sum_group, .. } => sum_group.is_some(),
            Extractor::Json { sum, .. } => sum.is_some(),
            Extractor::Column { sum, .. } => sum.is_some(),
        };
        CountByReducer {
            extract: Arc::clone(&self.extract),
            top: self.top,
            max_keys: self.max_keys,
            summing,
            lines: LineSplitter::default(),
            counts: Counts::default(),
            state: Totals {
                exact: true,
                ..Totals::default()
            },
        }
    }
}

/// Counts the lines of `region` (complete lines, the last possibly unterminated).
fn count_lines(region: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', region).count() as u64;
    newlines + u64::from(region.last().is_some_and(|&b| b != b'\n'))
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_number(bytes: &[u8]) -> Option<f64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

impl CountByReducer {
    fn tally(&mut self, key: &[u8], value: Option<Option<f64>>) {
        let key = &key[..key.len().min(MAX_KEY_BYTES)];
        let add = match value {
            None => 0.0,
            Some(Some(v)) => v,
            Some(None) => {
                self.state.sum_errors += 1;
                0.0
            }
        };
        match self.counts.get_mut(key) {
            Some(t) => {
                t.count += 1;
                t.sum += add;
            }
            None => {
                if self.counts.len() >= self.max_keys {
                    self.fold_least_frequent();
                }
                self.counts.insert(key.into(), Tally { count: 1, sum: add });
            }
        }
    }

    /// Folds the least frequent half of the keys into `other`.
    fn fold_least_frequent(&mut self) {
        let mut by_count: Vec<(Box<[u8]>, Tally)> = self.counts.drain().collect();
        by_count.sort_unstable_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let keep = (self.max_keys / 2).max(self.top);
        for (_, t) in by_count.drain(keep.min(by_count.len())..) {
            self.state.folded.count += t.count;
            self.state.folded.sum += t.sum;
        }
        self.counts.extend(by_count);
        self.state.exact = false;
    }

    fn region(&mut self, region: &[u8]) {
        let lines = count_lines(region);
        self.state.lines += lines;
        let extract = Arc::clone(&self.extract);
        match &*extract {
            Extractor::Regex {
                starts,
                key_group,
                sum_group,
                scratch,
            } => self.regex_region(
                scratch,
                starts.as_ref(),
                *key_group,
                *sum_group,
                region,
                lines,
            ),
            Extractor::Json { key, sum } => {
                for line in region.split_inclusive(|&b| b == b'\n') {
                    self.json_line(key, sum.as_deref(), strip_line_end(line));
                }
            }
            Extractor::Column {
                key,
                sum,
                delimiter,
            } => {
                for line in region.split_inclusive(|&b| b == b'\n') {
                    let line = strip_line_end(line);
                    let mut columns = line.split(|b| b == delimiter);
                    match columns.clone().nth(*key) {
                        None => self.state.missing_key += 1,
                        Some(k) => {
                            let value = sum.map(|s| columns.nth(s).and_then(parse_number));
                            self.tally(k, value);
                        }
                    }
                }
            }
        }
    }

    /// Reads the key of the first match of each line of `region`.
    fn regex_region(
        &mut self,
        scratch: &Scratch,
        starts: Option<&Prefilter>,
        key_group: usize,
        sum_group: Option<usize>,
        region: &[u8],
        lines: u64,
    ) {
        let regex = &scratch.regex;
        let mut guard = scratch.pool.get();
        let (cache, captures) = &mut *guard;
        let mut keyed = 0u64;
        let mut at = 0usize;
        while at < region.len() {
            // A place where the line's first match may start: a literal the pattern starts
            // with, or the start of a match the unanchored search found.
            let start = match starts {
                Some(starts) => {
                    match starts.find(region, regex_automata::Span::from(at..region.len())) {
                        Some(found) => found.start,
                        None => break,
                    }
                }
                None => {
                    match regex.search_with(cache, &Input::new(region).span(at..region.len())) {
                        Some(found) => found.start(),
                        None => break,
                    }
                }
            };
            let line_end =
                memchr::memchr(b'\n', &region[start..]).map_or(region.len(), |i| start + i);
            // The haystack ends with the line, and begins with the region so that look-behind
            // assertions (`^`, `\b`) see the byte before the start.
            let line = Input::new(&region[..line_end])
                .span(start..line_end)
                .anchored(Anchored::Yes);
            regex.search_captures_with(cache, &line, captures);
            if !captures.is_match() {
                at = start + 1;
                continue;
            }
            let key = captures
                .get_group(key_group)
                .or_else(|| captures.get_group(0))
                .map_or(&[][..], |k| &region[k.range()]);
            let value = sum_group.map(|g| {
                captures
                    .get_group(g)
                    .and_then(|v| parse_number(&region[v.range()]))
            });
            self.tally(key, value);
            keyed += 1;
            at = line_end + 1;
        }
        self.state.missing_key += lines - keyed;
    }

    fn json_line(&mut self, key: &str, sum: Option<&str>, line: &[u8]) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
            self.state.missing_key += 1;
            return;
        };
        let Some(field) = value.pointer(key).filter(|v| !v.is_null()) else {
            self.state.missing_key += 1;
            return;
        };
        let key_text = match field {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let summed = sum.map(|p| {
            value.pointer(p).and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
        });
        self.tally(key_text.as_bytes(), summed);
    }
}

impl Reducer for CountByReducer {
    type Output = CountByResult;

    fn update(&mut self, chunk: &[u8]) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(chunk, |region| self.region(region));
        self.lines = lines;
    }

    fn finish(mut self) -> CountByResult {
        let mut lines = std::mem::take(&mut self.lines);
        lines.finish(|region| self.region(region));
        let mut keys: Vec<(Box<[u8]>, Tally)> = self.counts.into_iter().collect();
        keys.sort_unstable_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        let distinct_keys = keys.len() as u64;
        let mut other = self.state.folded;
        for (_, t) in keys.iter().skip(self.top) {
            other.count += t.count;
            other.sum += t.sum;
        }
        let summing = self.summing;
        CountByResult {
            lines: self.state.lines,
            missing_key: self.state.missing_key,
            top: keys
                .into_iter()
                .take(self.top)
                .map(|(key, t)| KeyCount {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    count: t.count,
                    sum: summing.then_some(t.sum),
                })
                .collect(),
            other: OtherCount {
                count: other.count,
                sum: summing.then_some(other.sum),
            },
            distinct_keys,
            exact: self.state.exact,
            sum_errors: self.state.sum_errors,
            long_lines: self.state.long_lines + lines.long_lines(),
        }
    }
}

impl Merge for CountByReducer {
    fn merge(&mut self, mut later: Self) {
        let mut lines = std::mem::take(&mut later.lines);
        lines.finish(|region| later.region(region));
        self.state.long_lines += later.state.long_lines + lines.long_lines();
        self.state.lines += later.state.lines;
        self.state.missing_key += later.state.missing_key;
        self.state.sum_errors += later.state.sum_errors;
        self.state.folded.count += later.state.folded.count;
        self.state.folded.sum += later.state.folded.sum;
        self.state.exact &= later.state.exact;
        for (key, t) in later.counts {
            let entry = self.counts.entry(key).or_default();
            entry.count += t.count;
            entry.sum += t.sum;
        }
        while self.counts.len() > self.max_keys {
            self.fold_least_frequent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::testing::{newlines, run_chunked, run_split};

    fn config(key: KeySource, top: usize, sum: Option<&str>) -> CountBy {
        CountBy::new(CountByConfig {
            key,
            top,
            sum: sum.map(str::to_string),
        })
        .unwrap()
    }

    /// Line by line, with the `regex` crate or plain splitting: an independent computation.
    fn reference(
        data: &[u8],
        key_of: impl Fn(&[u8]) -> Option<(Vec<u8>, Option<Option<f64>>)>,
        top: usize,
    ) -> serde_json::Value {
        let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if data.last() == Some(&b'\n') || data.is_empty() {
            lines.pop();
        }
        let mut counts: std::collections::BTreeMap<Vec<u8>, (u64, f64)> = Default::default();
        let (mut missing, mut sum_errors, mut summing) = (0, 0, false);
        for line in &lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match key_of(line) {
                None => missing += 1,
                Some((key, value)) => {
                    let e = counts.entry(key).or_default();
                    e.0 += 1;
                    if let Some(v) = value {
                        summing = true;
                        match v {
                            Some(v) => e.1 += v,
                            None => sum_errors += 1,
                        }
                    }
                }
            }
        }
        let mut keys: Vec<_> = counts.into_iter().collect();
        keys.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        let other: (u64, f64) = keys
            .iter()
            .skip(top)
            .fold((0, 0.0), |acc, (_, (c, s))| (acc.0 + c, acc.1 + s));
        serde_json::to_value(CountByResult {
            lines: lines.len() as u64,
            missing_key: missing,
            distinct_keys: keys.len() as u64,
            top: keys
                .iter()
                .take(top)
                .map(|(k, (c, s))| KeyCount {
                    key: String::from_utf8_lossy(k).into_owned(),
                    count: *c,
                    sum: summing.then_some(*s),
                })
                .collect(),
            other: OtherCount {
                count: other.0,
                sum: summing.then_some(other.1),
            },
            exact: true,
            sum_errors,
            long_lines: 0,
        })
        .unwrap()
    }

    fn check_all_ways<P: Processor>(processor: &P, data: &[u8], expected: &serde_json::Value)
    where
        P::Reducer: Merge,
    {
        for chunk in [1, 3, 17, 4096] {
            assert_eq!(
                &run_chunked(processor, data, chunk),
                expected,
                "chunk {chunk}"
            );
        }
        let lines = newlines(data);
        assert_eq!(
            &run_split(processor, data, &lines, 5),
            expected,
            "split at every line"
        );
        let halves = [lines.get(lines.len() / 2).copied().unwrap_or(0)];
        if !lines.is_empty() {
            assert_eq!(
                &run_split(processor, data, &halves, 5),
                expected,
                "split in two"
            );
        }
    }

    const LOG: &[u8] = b"t=1 service=checkout latency=12\n\
        t=2 service=search latency=3\r\n\
        t=3 no service here\n\
        t=4 service=checkout latency=x\n\
        service=auth service=ignored latency=7\n\
        t=5 service=search latency=5\n\
        \xff\xfe service=caf\xc3\xa9 latency=1\n\
        t=6 service=checkout latency=2";

    #[test]
    fn regex_keys_with_a_sum_match_a_line_by_line_reference() {
        let re = regex::bytes::Regex::new(r"service=(\w+)").unwrap();
        let lat = regex::bytes::Regex::new(r"service=(\w+).*?latency=(\S+)").unwrap();
        for (top, sum) in [(2, None), (10, Some("2")), (1, Some("2"))] {
            let pattern = if sum.is_some() {
                r"service=(\w+).*?latency=(\S+)"
            } else {
                r"service=(\w+)"
            };
            let processor = config(KeySource::Regex(pattern.into()), top, sum);
            let expected = reference(
                LOG,
                |line| {
                    let c = if sum.is_some() {
                        lat.captures(line)
                    } else {
                        re.captures(line)
                    }?;
                    let value =
                        sum.map(|_| std::str::from_utf8(&c[2]).ok().and_then(|s| s.parse().ok()));
                    Some((c[1].to_vec(), value))
                },
                top,
            );
            check_all_ways(&processor, LOG, &expected);
        }
    }

    /// Patterns with and without a literal prefix (the anchored and the unanchored search),
    /// anchors, word boundaries, case folding and alternation, against the `regex` crate run on
    /// each line alone.
    #[test]
    fn every_kind_of_key_pattern_matches_a_per_line_search() {
        let data: &[u8] = b"svc=a user=bob mail bob@x\n\
            SVC=b\r\n\
            user=carol svc=c\n\
            xsvc=d nosvc=e svc=f\n\
            svc=\n\
            ann@y.org svc=a id=7\r\n\
            id=8 trailing\n\
            svc=svc=g\n\
            \xff svc=\xc3\xa9\xff end\n\
            last svc=z id=9";
        for pattern in [
            r"svc=(\w+)",
            r"\bsvc=(\w+)",
            r"(?i)svc=(\w+)",
            r"(?:user|svc)=(\w+)",
            r"(\w+)@",
            r"^(\w+)",
            r"id=(\d+)$",
            r"svc=(\w*)",
            r"(\w+) end$",
            r"[a-z]+=(\w+)",
        ] {
            let processor = config(KeySource::Regex(pattern.into()), 3, None);
            let re = regex::bytes::Regex::new(pattern).unwrap();
            let expected = reference(
                data,
                |line| {
                    let c = re.captures(line)?;
                    let key = c.get(1).or_else(|| c.get(0))?;
                    Some((key.as_bytes().to_vec(), None))
                },
                3,
            );
            check_all_ways(&processor, data, &expected);
        }
    }

    #[test]
    fn json_and_column_keys() {
        let jsonl: &[u8] = b"{\"svc\":\"a\",\"ms\":1}\n{\"svc\":\"b\",\"ms\":2.5}\nnot json\n{\"svc\":\"a\",\"ms\":\"4\"}\n{\"other\":1}\n{\"svc\":7}\n";
        let processor = config(KeySource::Json("/svc".into()), 5, Some("/ms"));
        let expected = reference(
            jsonl,
            |line| {
                let v: serde_json::Value = serde_json::from_slice(line).ok()?;
                let key = match v.pointer("/svc")? {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let ms = v
                    .pointer("/ms")
                    .and_then(|m| m.as_f64().or_else(|| m.as_str()?.parse().ok()));
                Some((key.into_bytes(), Some(ms)))
            },
            5,
        );
        check_all_ways(&processor, jsonl, &expected);

        let csv: &[u8] = b"a,1,x\nb,2,y\r\na,3\nshort\n,4,z\n";
        let processor = config(
            KeySource::Column {
                index: 3,
                delimiter: b',',
            },
            5,
            Some("2"),
        );
        let expected = reference(
            csv,
            |line| {
                let cols: Vec<&[u8]> = line.split(|&b| b == b',').collect();
                let key = cols.get(2)?.to_vec();
                Some((
                    key,
                    Some(
                        cols.get(1)
                            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
                    ),
                ))
            },
            5,
        );
        check_all_ways(&processor, csv, &expected);
    }

    #[test]
    fn memory_stays_bounded_with_endless_distinct_keys() {
        let processor = config(
            KeySource::Column {
                index: 1,
                delimiter: b' ',
            },
            3,
            None,
        );
        let mut data = Vec::new();
        for i in 0..50_000 {
            data.extend_from_slice(format!("k{i}\nheavy\n").as_bytes());
        }
        let result = run_chunked(&processor, &data, 65536);
        assert_eq!(result["exact"], false);
        assert_eq!(result["lines"], 100_000);
        assert_eq!(result["top"][0]["key"], "heavy");
        assert_eq!(result["top"][0]["count"], 50_000);
        let top: u64 = result["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["count"].as_u64().unwrap())
            .sum();
        assert_eq!(top + result["other"]["count"].as_u64().unwrap(), 100_000);
    }

    #[test]
    fn configuration_errors_are_clear() {
        let err = |c: CountByConfig| CountBy::new(c).unwrap_err().to_string();
        let base = CountByConfig {
            key: KeySource::Regex("(a)".into()),
            top: 5,
            sum: None,
        };
        assert!(
            err(CountByConfig {
                key: KeySource::Regex("(".into()),
                ..base.clone()
            })
            .contains("invalid --key-regex")
        );
        assert!(
            err(CountByConfig {
                sum: Some("3".into()),
                ..base.clone()
            })
            .contains("only 1 capture group")
        );
        assert!(
            err(CountByConfig {
                sum: Some("nope".into()),
                ..base.clone()
            })
            .contains("no group named")
        );
        assert!(
            err(CountByConfig {
                key: KeySource::Json("svc".into()),
                ..base.clone()
            })
            .contains("JSON pointer")
        );
        assert!(
            err(CountByConfig {
                key: KeySource::Column {
                    index: 0,
                    delimiter: b','
                },
                ..base.clone()
            })
            .contains("from 1")
        );
        assert!(err(CountByConfig { top: 0, ..base }).contains("--top"));
    }
}
