//! Embedding Gleaner as a library: a tiny service with its own processor.
//!
//! The processor builds a histogram of line lengths per file (how many lines of 0–63 bytes,
//! 64–255, 256–1023, 1024 and more). Everything else, the listing, readiness, batching, state
//! and exactly-once outputs, comes from `scanner-core` and `state-store`.
//!
//! ```text
//! # a self-contained run on a temporary directory:
//! cargo run -p scanner-core --example line_lengths
//! # or as a service on your directories, until Ctrl-C:
//! cargo run -p scanner-core --example line_lengths -- WATCH_DIR STATE_URL OUTPUT_URL
//! ```

use std::time::Duration;

use scanner_core::processor::{DynProcessor, Processor, Reducer};
use scanner_core::{Scanner, ScannerConfig, shutdown_channel};
use serde::Serialize;
use state_store::Location;

/// Line-length histogram, one per file.
struct LineLengths;

#[derive(Default)]
struct Histogram {
    current: u64,
    buckets: LengthBuckets,
}

#[derive(Default, Serialize)]
struct LengthBuckets {
    under_64: u64,
    under_256: u64,
    under_1024: u64,
    longer: u64,
}

impl LengthBuckets {
    fn count(&mut self, length: u64) {
        match length {
            0..64 => self.under_64 += 1,
            64..256 => self.under_256 += 1,
            256..1024 => self.under_1024 += 1,
            _ => self.longer += 1,
        }
    }
}

impl Processor for LineLengths {
    type Reducer = Histogram;

    fn name(&self) -> &str {
        "line-lengths"
    }

    fn reducer(&self) -> Histogram {
        Histogram::default()
    }
}

impl Reducer for Histogram {
    type Output = LengthBuckets;

    fn update(&mut self, chunk: &[u8]) {
        // Only lengths are kept, so a line of any size costs no memory.
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', chunk) {
            self.buckets.count(self.current + (newline - start) as u64);
            self.current = 0;
            start = newline + 1;
        }
        self.current += (chunk.len() - start) as u64;
    }

    fn finish(mut self) -> LengthBuckets {
        if self.current > 0 {
            self.buckets.count(self.current);
        }
        self.buckets
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (watch, state, output, _scratch) = match args.as_slice() {
        [watch, state, output] => (watch.into(), state.clone(), output.clone(), None),
        [] => {
            let scratch = tempfile::tempdir()?;
            let watch = scratch.path().join("incoming");
            std::fs::create_dir_all(&watch)?;
            std::fs::write(watch.join("short.log"), "a\nbb\nccc\n")?;
            std::fs::write(
                watch.join("mixed.log"),
                format!("{}\nshort\n", "x".repeat(300)),
            )?;
            let state = scratch.path().join("state").display().to_string();
            let output = scratch.path().join("output").display().to_string();
            (watch, state, output, Some(scratch))
        }
        _ => return Err("usage: line_lengths [WATCH_DIR STATE_URL OUTPUT_URL]".into()),
    };

    let mut config = ScannerConfig::new(watch, "line-lengths-example".parse()?);
    config.readiness.min_age = Duration::ZERO;
    let state = Location::parse(&state)?;
    let output = Location::parse(&output)?;
    let mut scanner =
        Scanner::open(config, DynProcessor::new(LineLengths), &state, &output).await?;

    if let Some(scratch) = &_scratch {
        let report = scanner.scan(None).await?;
        let key = scratch
            .path()
            .join("output/line-lengths-example/00000000000000000001.ndjson");
        println!(
            "one scan committed {} file(s); the output object holds:",
            report.batches[0].files
        );
        print!("{}", std::fs::read_to_string(key)?);
        return Ok(());
    }

    let (trigger, shutdown) = shutdown_channel();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        trigger.request();
    });
    println!("collecting every 10s until Ctrl-C");
    scanner.run(Duration::from_secs(10), shutdown).await?;
    Ok(())
}
