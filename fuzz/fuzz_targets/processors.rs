//! Every built-in processor reads any bytes: the first byte picks the processor and its
//! configuration, the second how the input is chunked; the result must not depend on the
//! chunking, nor on splitting the input at a line boundary and merging.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use scanner_core::processor::{CountBy, CountByConfig, DynProcessor, Grep, KeySource, Stats};

/// Reads in chunks of at most `size` bytes.
struct Chunked<'a>(&'a [u8], usize);

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn processor(choice: u8) -> DynProcessor {
    let count_by = |key, sum: Option<&str>| {
        DynProcessor::splittable(
            CountBy::new(CountByConfig {
                key,
                top: 3,
                sum: sum.map(str::to_string),
            })
            .unwrap(),
        )
    };
    match choice % 7 {
        0 => DynProcessor::splittable(Stats),
        1 => DynProcessor::splittable(Grep::new("ab", 2).unwrap()),
        2 => DynProcessor::splittable(Grep::new(r"^\w+=\d{2,}$", 2).unwrap()),
        3 => count_by(KeySource::Regex(r"k=(\w+)".into()), None),
        4 => count_by(KeySource::Regex(r"(\w+)@(?P<n>\d+)".into()), Some("n")),
        5 => count_by(KeySource::Json("/a/b".into()), Some("/n")),
        _ => count_by(
            KeySource::Column {
                index: 2,
                delimiter: b',',
            },
            Some("3"),
        ),
    }
}

/// Built once: compiling the patterns per input would make the fuzzer crawl.
static PROCESSORS: std::sync::LazyLock<Vec<DynProcessor>> =
    std::sync::LazyLock::new(|| (0..7).map(processor).collect());

fuzz_target!(|data: &[u8]| {
    let [choice, chunk, input @ ..] = data else {
        return;
    };
    let processor = &PROCESSORS[usize::from(*choice % 7)];
    let (whole, bytes) = processor.reduce(&mut &input[..]).unwrap();
    assert_eq!(bytes, input.len() as u64);
    let chunked = processor
        .reduce(&mut Chunked(input, usize::from(*chunk).max(1)))
        .unwrap()
        .0;
    // Results come rendered as JSON: the same result is the same text.
    assert_eq!(chunked.get(), whole.get(), "chunking changed the result");
    // Split after the middle newline, reduce both halves, merge.
    if let Some(cut) = input
        .iter()
        .enumerate()
        .skip(input.len() / 2)
        .find(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
    {
        let (first, _) = processor.reduce_partial(&mut &input[..cut]).unwrap();
        let (second, _) = processor.reduce_partial(&mut &input[cut..]).unwrap();
        let merged = processor.finish(processor.merge(first, second)).unwrap();
        assert_eq!(
            merged.get(),
            whole.get(),
            "splitting at a line changed the result"
        );
    }
});
