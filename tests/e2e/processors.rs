//! The processors through the real binary: `grep` and `count-by` results against independent
//! line-by-line computations, decoding by content (gzip, zstd, corrupt and oversized input),
//! a large file split across workers, and processor flag mistakes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{Fixture, OLD, gleaner, reference_stats, seeded_rng};

/// The result line of each path, asserting every path appears once.
fn results_by_path(lines: &[(PathBuf, Value)]) -> BTreeMap<String, Value> {
    let mut by_path = BTreeMap::new();
    for (_, line) in lines {
        let path = line["path"].as_str().unwrap().to_string();
        assert!(
            by_path.insert(path.clone(), line.clone()).is_none(),
            "{path} twice"
        );
    }
    by_path
}

/// Lines as a line-oriented tool sees them: split at `\n`, without the terminator (and the `\r`
/// of CRLF), no empty last line for a terminated file.
fn lines_of(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if data.is_empty() || data.ends_with(b"\n") {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

/// A log-like line, sometimes an error with a code, sometimes with invalid UTF-8 or NUL bytes.
fn log_line(rng: &mut fastrand::Rng) -> Vec<u8> {
    let service = ["auth", "cart", "search", "pay"][rng.usize(..4)];
    let mut line = match rng.u8(..10) {
        0 => format!("level=ERROR service={service} code={}", rng.u16(100..600)).into_bytes(),
        1 => b"caf\xc3\xa9 \xff\xfe level=WARN \x00 service=".to_vec(),
        _ => format!("level=INFO service={service} latency_ms={}", rng.u16(..999)).into_bytes(),
    };
    line.extend(std::iter::repeat_n(b'.', rng.usize(..40)));
    line.extend_from_slice(if rng.bool() { b"\r\n" } else { b"\n" });
    line
}

/// Files with the edge cases: empty, unterminated, CRLF, invalid UTF-8, a line longer than
/// every read buffer, and matches straddling every power-of-two offset a buffer might end at.
fn edge_files(rng: &mut fastrand::Rng) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("empty.log".into(), Vec::new());
    files.insert(
        "unterminated.log".into(),
        b"level=INFO service=a\nlevel=ERROR service=b code=500".to_vec(),
    );
    files.insert(
        "crlf.log".into(),
        b"level=ERROR service=a code=404\r\nlevel=INFO service=a\r\n".to_vec(),
    );
    files.insert(
        "invalid-utf8.log".into(),
        b"\xff\xfe\xfd level=ERROR service=\xc3\x28 code=501\n\x80\x81\n".to_vec(),
    );
    let mut long = vec![b'x'; 3 << 20];
    long.extend_from_slice(b" level=ERROR service=long code=502\nlevel=INFO service=long\n");
    files.insert("long-line.log".into(), long);
    // Every `level=ERROR … code=NNN` crosses a power-of-two offset from 4 KiB to 2 MiB.
    let mut straddle = Vec::new();
    for shift in 12..=21 {
        let boundary = 1usize << shift;
        let token = b"level=ERROR service=edge code=503\n";
        while straddle.len() + token.len() / 2 < boundary {
            let filler = format!("level=INFO filler {}\n", ".".repeat(rng.usize(..200)));
            let room = boundary - token.len() / 2 - straddle.len();
            if filler.len() > room {
                straddle.extend(std::iter::repeat_n(b'-', room - 1));
                straddle.push(b'\n');
            } else {
                straddle.extend_from_slice(filler.as_bytes());
            }
        }
        straddle.extend_from_slice(token);
    }
    files.insert("straddle.log".into(), straddle);
    files
}

fn random_files(rng: &mut fastrand::Rng, n: usize) -> BTreeMap<String, Vec<u8>> {
    let mut files = edge_files(rng);
    for i in 0..n {
        let data: Vec<u8> = (0..rng.usize(..400)).flat_map(|_| log_line(rng)).collect();
        files.insert(format!("d{}/f{i:02}.log", i % 3), data);
    }
    files
}

#[test]
fn grep_counts_and_samples_match_a_line_by_line_search() {
    let fx = Fixture::new();
    let (mut rng, _) = seeded_rng("grep");
    let files = random_files(&mut rng, 20);
    for (rel, data) in &files {
        fx.write(rel, data, OLD);
    }
    let pattern = r"level=ERROR .*code=5\d\d$";
    fx.run_once(&["--processor", "grep", "--pattern", pattern, "--sample", "3"]);

    let reference = regex::bytes::Regex::new(pattern).unwrap();
    let results = results_by_path(&fx.outputs());
    assert_eq!(results.len(), files.len());
    for (rel, data) in &files {
        let matching: Vec<&[u8]> = lines_of(data)
            .into_iter()
            .filter(|l| reference.is_match(l))
            .collect();
        let samples: Vec<String> = matching
            .iter()
            .take(3)
            .map(|l| String::from_utf8_lossy(&l[..l.len().min(1024)]).into_owned())
            .collect();
        let mut expected = json!({ "matches": matching.len() });
        if !samples.is_empty() {
            expected["samples"] = json!(samples);
        }
        assert_eq!(results[rel]["processor"], "grep");
        assert_eq!(results[rel]["result"], expected, "grep of {rel}");
    }
    assert_eq!(results["straddle.log"]["result"]["matches"], 10);
    assert_eq!(results["long-line.log"]["result"]["matches"], 1);
    assert_eq!(
        results["long-line.log"]["result"]["samples"][0]
            .as_str()
            .unwrap()
            .len(),
        1024,
        "samples are cut to 1 KiB"
    );
}

/// `count-by` computed line by line: key and optional summed value of each line.
#[allow(clippy::type_complexity)]
fn reference_count_by(
    files: &BTreeMap<String, Vec<u8>>,
    top: usize,
    summing: bool,
    key_of: impl Fn(&[u8]) -> Option<(String, Option<f64>)>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (rel, data) in files {
        let mut counts: HashMap<String, (u64, f64)> = HashMap::new();
        let (mut lines, mut missing) = (0u64, 0u64);
        for line in lines_of(data) {
            lines += 1;
            match key_of(line) {
                None => missing += 1,
                Some((key, value)) => {
                    let entry = counts.entry(key).or_default();
                    entry.0 += 1;
                    entry.1 += value.unwrap_or(0.0);
                }
            }
        }
        let mut keys: Vec<_> = counts.into_iter().collect();
        keys.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        let distinct = keys.len();
        let (mut other_count, mut other_sum) = (0u64, 0.0);
        for (_, (count, sum)) in keys.iter().skip(top) {
            other_count += count;
            other_sum += sum;
        }
        let entry = |key: &str, count: u64, sum: f64| {
            let mut v = json!({ "key": key, "count": count });
            if summing {
                v["sum"] = json!(sum);
            }
            v
        };
        let mut other = json!({ "count": other_count });
        if summing {
            other["sum"] = json!(other_sum);
        }
        let top_keys: Vec<Value> = keys
            .iter()
            .take(top)
            .map(|(k, (c, s))| entry(k, *c, *s))
            .collect();
        out.insert(
            rel.clone(),
            json!({
                "lines": lines,
                "missing_key": missing,
                "top": top_keys,
                "other": other,
                "distinct_keys": distinct,
                "exact": true,
            }),
        );
    }
    out
}

fn assert_count_by(fx: &Fixture, expected: &BTreeMap<String, Value>) {
    let results = results_by_path(&fx.outputs());
    assert_eq!(results.len(), expected.len());
    for (rel, want) in expected {
        assert_eq!(results[rel]["processor"], "count-by");
        assert_eq!(&results[rel]["result"], want, "count-by of {rel}");
    }
}

#[test]
fn count_by_regex_with_a_named_sum_matches_a_line_by_line_count() {
    let fx = Fixture::new();
    let (mut rng, _) = seeded_rng("count_by_regex");
    let files = random_files(&mut rng, 12);
    for (rel, data) in &files {
        fx.write(rel, data, OLD);
    }
    let pattern = r"service=(\w+)(?:.*code=(?P<code>\d+))?";
    fx.run_once(&[
        "--processor",
        "count-by",
        "--key-regex",
        pattern,
        "--top",
        "2",
        "--sum",
        "code",
    ]);
    let reference = regex::bytes::Regex::new(pattern).unwrap();
    // Lines without a code are summed as errors (counted, not summed): only the sums matter.
    let mut expected = reference_count_by(&files, 2, true, |line| {
        let caps = reference.captures(line)?;
        let key = String::from_utf8_lossy(&caps[1]).into_owned();
        let code = caps
            .name("code")
            .map(|c| std::str::from_utf8(c.as_bytes()).unwrap().parse().unwrap());
        Some((key, code))
    });
    for (rel, want) in expected.iter_mut() {
        let errors = lines_of(&files[rel])
            .into_iter()
            .filter_map(|l| reference.captures(l))
            .filter(|c| c.name("code").is_none())
            .count();
        if errors > 0 {
            want["sum_errors"] = json!(errors);
        }
    }
    assert_count_by(&fx, &expected);
}

#[test]
fn count_by_json_field_and_delimited_column() {
    let (mut rng, _) = seeded_rng("count_by_json");
    let mut json_files = BTreeMap::new();
    let mut csv_files = BTreeMap::new();
    for i in 0..6 {
        let mut jsonl = Vec::new();
        let mut csv = Vec::new();
        for _ in 0..rng.usize(..300) {
            let service = ["a", "b", "c", "d", "é"][rng.usize(..5)];
            let bytes = rng.u32(..10_000);
            match rng.u8(..12) {
                0 => jsonl.extend_from_slice(b"not json at all\n"),
                1 => jsonl.extend_from_slice(b"{\"http\":{}}\n"),
                2 => writeln!(jsonl, "{{\"http\":{{\"service\":7,\"bytes\":{bytes}}}}}").unwrap(),
                _ => writeln!(
                    jsonl,
                    "{{\"http\":{{\"service\":\"{service}\",\"bytes\":{bytes}}}}}"
                )
                .unwrap(),
            }
            match rng.u8(..12) {
                0 => csv.extend_from_slice(b"short\r\n"),
                _ => write!(csv, "2026-11-24;{service};{bytes}\r\n").unwrap(),
            }
        }
        json_files.insert(format!("j{i}.jsonl"), jsonl);
        csv_files.insert(format!("c{i}.csv"), csv);
    }

    let fx = Fixture::new();
    for (rel, data) in &json_files {
        fx.write(rel, data, OLD);
    }
    fx.run_once(&[
        "--processor",
        "count-by",
        "--key-json",
        "/http/service",
        "--sum",
        "/http/bytes",
    ]);
    let expected = reference_count_by(&json_files, 100, true, |line| {
        let v: Value = serde_json::from_slice(line).ok()?;
        let key = match v.pointer("/http/service")? {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some((key, v.pointer("/http/bytes").and_then(Value::as_f64)))
    });
    assert_count_by(&fx, &expected);

    let fx = Fixture::new();
    for (rel, data) in &csv_files {
        fx.write(rel, data, OLD);
    }
    fx.run_once(&[
        "--processor",
        "count-by",
        "--key-column",
        "2",
        "--delimiter",
        ";",
        "--top",
        "3",
    ]);
    let expected = reference_count_by(&csv_files, 3, false, |line| {
        let line = std::str::from_utf8(line).unwrap();
        line.split(';').nth(1).map(|k| (k.to_string(), None))
    });
    assert_count_by(&fx, &expected);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn compressed_input_is_recognised_by_content_and_bad_input_fails_alone() {
    let fx = Fixture::new();
    let (mut rng, _) = seeded_rng("compressed");
    let plain: Vec<u8> = (0..5000).flat_map(|_| log_line(&mut rng)).collect();
    let mut two_members = gzip(&plain[..1000]);
    two_members.extend(gzip(&plain[1000..]));
    let compressed = gzip(&plain);
    let mut corrupt = compressed.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 64].fill(0x55);
    let bomb = zstd::encode_all(&vec![0u8; 4 << 20][..], 19).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plain.log", plain.clone()),
        ("gzip.log.gz", compressed.clone()),
        // By content, not by name.
        ("gzip-named-plain.log", compressed.clone()),
        ("plain-named.gz", plain.clone()),
        ("two-members.gz", two_members),
        ("zstd.log.zst", zstd::encode_all(&plain[..], 3).unwrap()),
        ("corrupt.gz", corrupt),
        ("truncated.gz", compressed[..compressed.len() / 3].to_vec()),
        ("bomb.zst", bomb),
        ("after.log", b"still processed\n".to_vec()),
    ];
    for (rel, data) in &cases {
        fx.write(rel, data, OLD);
    }
    let out = fx.run_once(&["--max-decoded-bytes", "1MiB"]);
    let results = results_by_path(&fx.outputs());
    assert_eq!(results.len(), cases.len());
    let stats = reference_stats(&plain);
    for (rel, encoding) in [
        ("plain.log", None),
        ("plain-named.gz", None),
        ("gzip.log.gz", Some("gzip")),
        ("gzip-named-plain.log", Some("gzip")),
        ("two-members.gz", Some("gzip")),
        ("zstd.log.zst", Some("zstd")),
    ] {
        let line = &results[rel];
        assert_eq!(line["result"], stats, "{rel}");
        assert_eq!(
            line.get("encoding").and_then(Value::as_str),
            encoding,
            "{rel}"
        );
    }
    for (rel, reason) in [
        ("corrupt.gz", "cannot decode gzip"),
        ("truncated.gz", "gzip"),
        (
            "bomb.zst",
            "zstd decodes to more than the limit of 1048576 bytes",
        ),
    ] {
        let error = results[rel]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel} should fail: {}", results[rel]));
        assert!(error.contains(reason), "{rel}: {error}");
        assert!(results[rel].get("result").is_none());
    }
    assert_eq!(
        results["after.log"]["result"],
        reference_stats(b"still processed\n")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 failed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Failed files are recorded: a second run writes nothing.
    let objects = fx.output_objects();
    fx.run_once(&[]);
    assert_eq!(fx.output_objects(), objects);
}

#[test]
fn a_large_file_split_across_workers_gives_the_single_worker_result() {
    let (mut rng, _) = seeded_rng("split");
    // Over twice the smallest range a worker gets (16 MiB), so two workers share it.
    let mut data = Vec::with_capacity(40 << 20);
    while data.len() < 40 << 20 {
        data.extend(log_line(&mut rng));
    }
    data.extend_from_slice(b"no final newline level=ERROR code=599");
    let mut results = Vec::new();
    for workers in ["1", "2"] {
        for args in [
            &["--processor", "stats"][..],
            &[
                "--processor",
                "grep",
                "--pattern",
                r"code=5\d\d",
                "--sample",
                "2",
            ],
            &["--processor", "count-by", "--key-regex", r"service=(\w+)"],
        ] {
            let fx = Fixture::new();
            fx.write("big.log", &data, OLD);
            fx.run_once(&[args, &["--workers", workers]].concat());
            let lines = fx.outputs();
            assert_eq!(lines.len(), 1);
            results.push((workers, args[1], lines[0].1["result"].clone()));
        }
    }
    assert_eq!(results[0].2, reference_stats(&data));
    for i in 0..3 {
        assert_eq!(
            results[i].2,
            results[i + 3].2,
            "{} with 1 and 2 workers",
            results[i].1
        );
    }
}

#[test]
fn processor_flag_mistakes_end_with_one_clear_line() {
    let fx = Fixture::new();
    // Found by clap (its own multi-line message) or by gleaner (one line); exit 2 either way.
    const CLAP: bool = true;
    const GLEANER: bool = false;
    let cases: &[(&[&str], bool, &str)] = &[
        (&["--processor", "grep"], CLAP, "--pattern"),
        (
            &["--processor", "grep", "--pattern", "(unclosed"],
            GLEANER,
            "--pattern",
        ),
        (
            &["--processor", "stats", "--pattern", "x"],
            GLEANER,
            "--pattern is a flag of --processor grep, not of --processor stats",
        ),
        (
            &["--processor", "count-by"],
            GLEANER,
            "needs one of --key-regex",
        ),
        (
            &[
                "--processor",
                "count-by",
                "--key-regex",
                "a",
                "--key-json",
                "/a",
            ],
            CLAP,
            "cannot be used with",
        ),
        (
            &["--processor", "count-by", "--key-column", "0"],
            GLEANER,
            "columns are counted from 1",
        ),
        (
            &["--processor", "count-by", "--key-json", "service"],
            GLEANER,
            "not a JSON pointer",
        ),
        (
            &[
                "--processor",
                "count-by",
                "--key-regex",
                r"(\w+)",
                "--sum",
                "3",
            ],
            GLEANER,
            "only 1 capture group",
        ),
        (
            &["--processor", "count-by", "--key-regex", "x", "--top", "0"],
            GLEANER,
            "--top",
        ),
        (
            &[
                "--processor",
                "count-by",
                "--key-regex",
                "x",
                "--delimiter",
                ",",
            ],
            GLEANER,
            "--delimiter only applies to --key-column",
        ),
        (&["--processor", "wc"], CLAP, "invalid value 'wc'"),
    ];
    for (args, by_clap, needle) in cases {
        let out = fx
            .command(&[&["--once"], *args].concat())
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        if !by_clap {
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(
                stderr.starts_with("gleaner: error: invalid arguments: "),
                "{stderr}"
            );
        }
        assert!(!fx.output.exists(), "{args:?} wrote outputs");
    }
    // The binary's help lists every processor flag.
    let help = gleaner().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--pattern",
        "--sample",
        "--key-regex",
        "--key-json",
        "--key-column",
        "--delimiter",
        "--top",
        "--sum",
        "--max-decoded-bytes",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
