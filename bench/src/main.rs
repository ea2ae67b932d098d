//! `gleaner-bench`: writes the deterministic inputs of Gleaner's processing benchmarks.
//!
//! `bench/run.sh` calls it; the same seed and size always give the same bytes, so figures from
//! different runs and machines are measured on identical data.
//!
//! ```text
//! gleaner-bench log FILE BYTES SEED         log-like lines (key=value, JSON-free)
//! gleaner-bench no-newline FILE BYTES SEED  printable bytes and spaces, no newline at all
//! gleaner-bench tree DIR FILES DIRS BYTES SEED
//!                                           FILES files of exactly BYTES bytes of log lines,
//!                                           spread over DIRS directories
//! ```

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

/// The services of generated log lines: `count-by` keys.
const SERVICES: [&str; 8] = [
    "auth",
    "inventory",
    "payments",
    "search",
    "checkout",
    "shipping",
    "profile",
    "notifications",
];
const PATHS: [&str; 6] = [
    "/api/cart",
    "/api/items",
    "/api/orders",
    "/api/login",
    "/api/search?q=shoes",
    "/healthz",
];
const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["log", file, bytes, seed] => number(bytes)
            .and_then(|b| number(seed).map(|s| (b, s)))
            .and_then(|(b, s)| write_log(Path::new(file), b, s)),
        ["no-newline", file, bytes, seed] => number(bytes)
            .and_then(|b| number(seed).map(|s| (b, s)))
            .and_then(|(b, s)| write_no_newline(Path::new(file), b, s)),
        ["tree", dir, files, dirs, bytes, seed] => (|| {
            write_tree(
                Path::new(dir),
                number(files)?,
                number(dirs)?,
                number(bytes)?,
                number(seed)?,
            )
        })(),
        _ => {
            eprintln!(
                "usage: gleaner-bench log FILE BYTES SEED | no-newline FILE BYTES SEED | tree DIR FILES DIRS BYTES SEED"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gleaner-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number(s: &str) -> io::Result<u64> {
    s.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("not a number: {s:?}")))
}

/// Appends one log line (with its newline) to `line`.
fn log_line(rng: &mut fastrand::Rng, n: u64, line: &mut Vec<u8>) {
    let secs = n * 67 % 86_400;
    let level = match rng.u32(0..100) {
        0..=1 => "ERROR",
        2..=6 => "WARN",
        7..=16 => "DEBUG",
        _ => "INFO",
    };
    // Skewed services, so that `count-by` has a clear top.
    let service =
        SERVICES[((rng.u32(0..256).leading_zeros() - 24) as usize).min(SERVICES.len() - 1)];
    let (status, msg) = if level == "ERROR" {
        (500, "upstream timed out")
    } else {
        (200, "request served")
    };
    writeln!(
        line,
        "2026-11-24T{:02}:{:02}:{:02}.{:03}Z level={level} service={service} request_id={:016x} method={} path={} status={status} latency_ms={} msg=\"{msg}\"",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        n % 1000,
        rng.u64(..),
        METHODS[rng.usize(..METHODS.len())],
        PATHS[rng.usize(..PATHS.len())],
        rng.u32(1..1000),
    )
    .expect("writing to a Vec");
}

fn write_log(file: &Path, bytes: u64, seed: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(file)?);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut written, mut n) = (0u64, 0u64);
    let mut line = Vec::with_capacity(256);
    while written < bytes {
        line.clear();
        log_line(&mut rng, n, &mut line);
        out.write_all(&line)?;
        written += line.len() as u64;
        n += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn write_no_newline(file: &Path, bytes: u64, seed: u64) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(file)?);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for b in block.iter_mut() {
            // Words of letters separated by spaces: a realistic worst case for `stats`.
            *b = match rng.u8(0..8) {
                0 => b' ',
                _ => rng.u8(b'a'..=b'z'),
            };
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn write_tree(dir: &Path, files: u64, dirs: u64, bytes: u64, seed: u64) -> io::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut content = Vec::with_capacity(bytes as usize + 256);
    let mut n = 0u64;
    for i in 0..files {
        let sub = dir.join(format!("d{:03}", i % dirs.max(1)));
        if i < dirs {
            fs::create_dir_all(&sub)?;
        }
        content.clear();
        while (content.len() as u64) < bytes {
            log_line(&mut rng, n, &mut content);
            n += 1;
        }
        // Exactly `bytes` bytes, ending with a newline.
        content.truncate(bytes as usize);
        if let Some(last) = content.last_mut() {
            *last = b'\n';
        }
        fs::write(sub.join(format!("f{i:06}.log")), &content)?;
    }
    Ok(())
}
