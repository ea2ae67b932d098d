//! Discovery through the real binary: file-system events for speed (the interval stays the
//! truth), and the completeness rules: `--require-stable`, `--ready-marker`, `--include` and
//! `--exclude`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{
    Fixture, OLD, assert_exactly_once, path_counts, sigterm, wait_until, wait_with_timeout,
};

fn has_output(fx: &Fixture, path: &str) -> bool {
    path_counts(&fx.outputs()).contains_key(path)
}

/// Writes `rel` under a temporary name, then renames it into place; returns the rename time.
fn write_then_rename(fx: &Fixture, rel: &str, data: &[u8]) -> Instant {
    let temporary = fx.watch.join(format!("{rel}.tmp"));
    std::fs::write(&temporary, data).unwrap();
    let renamed_at = Instant::now();
    std::fs::rename(&temporary, fx.watch.join(rel)).unwrap();
    renamed_at
}

/// With events on, a file renamed into place is collected seconds after its rename, not at
/// the next interval (1 h). The latency itself (about 1 s: the debounce, the spacing of scans,
/// a commit) is a benchmark figure (the steady emitter's commit delay in `BENCHMARKS.md`); the
/// bound here only has to tell an event from the interval on a loaded machine.
#[test]
fn with_events_a_renamed_file_is_collected_long_before_the_interval() {
    let fx = Fixture::new();
    fx.write("first.log", b"before start\n", OLD);
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&["--interval", "1h", "--min-age", "0s"], &log);
    assert!(
        wait_until(Duration::from_secs(20), || has_output(&fx, "first.log")),
        "the start-up scan: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    let mut expected = BTreeMap::new();
    expected.insert("first.log".to_string(), b"before start\n".to_vec());
    for i in 0..3 {
        let rel = format!("arrived-{i}.log");
        let data = format!("line {i}\nanother\n").into_bytes();
        let renamed_at = write_then_rename(&fx, &rel, &data);
        assert!(
            wait_until(Duration::from_secs(30), || has_output(&fx, &rel)),
            "{rel} never collected: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        let latency = renamed_at.elapsed();
        eprintln!("{rel}: in the outputs {latency:?} after its rename");
        assert!(
            latency < Duration::from_secs(15),
            "{rel} took {latency:?} with events on and --interval 1h"
        );
        expected.insert(rel, data);
    }
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(20)).is_some_and(|s| s.success()));
    assert_exactly_once(&fx.outputs(), &expected);
}

/// The numbers a `scan complete` log line gives, for the scans that committed `files` files.
fn scans_committing(log: &str, files: usize) -> Vec<(usize, usize)> {
    let field = |line: &str, name: &str| -> usize {
        let start = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
        line[start..].split(' ').next().unwrap().parse().unwrap()
    };
    log.lines()
        .filter(|l| l.contains("scan complete") && l.contains(&format!("committed_files={files} ")))
        .map(|l| (field(l, "listed"), field(l, "scope_dirs")))
        .collect()
}

#[test]
fn with_default_flags_events_make_a_scan_look_only_at_the_directories_they_name() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for d in 0..3 {
        for f in 0..100 {
            let rel = format!("big/d{d}/f{f:03}.log");
            let data = format!("{rel}\n").into_bytes();
            fx.write(&rel, &data, OLD);
            expected.insert(rel, data);
        }
    }
    let log = fx.root.join("gleaner.log");
    // Default flags: events on, --interval 1h, --min-age 5s.
    let mut child = fx.spawn(&[], &log);
    let read_log = || std::fs::read_to_string(&log).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || path_counts(&fx.outputs()).len()
            == 300),
        "the start-up scan: {}",
        read_log()
    );

    // A file finished in one directory, and one in a directory that did not exist.
    for rel in ["big/d1/new.log", "fresh/sub/new.log"] {
        std::fs::create_dir_all(fx.watch.join(rel).parent().unwrap()).unwrap();
        let renamed_at = write_then_rename(&fx, rel, b"new\n");
        assert!(
            wait_until(Duration::from_secs(30), || has_output(&fx, rel)),
            "{rel} never collected: {}",
            read_log()
        );
        eprintln!(
            "{rel}: in the outputs {:?} after its rename",
            renamed_at.elapsed()
        );
        expected.insert(rel.to_string(), b"new\n".to_vec());
    }
    // The output object is written before the commit, and the scan's line after it.
    wait_until(Duration::from_secs(10), || {
        scans_committing(&read_log(), 1).len() >= 2
    });
    let scans = scans_committing(&read_log(), 1);
    assert_eq!(scans.len(), 2, "{}", read_log());
    for (listed, scope_dirs) in scans {
        // Not the 300 files of the tree: the directory of the event (and of waiting files).
        assert!(
            scope_dirs >= 1 && listed <= 101,
            "listed {listed} in {scope_dirs} directories"
        );
    }
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert_exactly_once(&fx.outputs(), &expected);
}

#[test]
fn a_file_gone_at_the_start_is_forgotten_by_a_snapshot_after_an_event_triggered_scan() {
    let fx = Fixture::new();
    fx.write("a/old.log", b"old\n", OLD);
    fx.write("a/stays.log", b"stays\n", OLD);
    fx.run_once(&[]);
    std::fs::remove_file(fx.watch.join("a/old.log")).unwrap();
    let entries = || {
        let out = crate::support::gleaner()
            .args(["state", "inspect", "--entries", "--state"])
            .arg(&fx.state)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(entries().contains("a/old.log"));

    // The start-up walk finds a/old.log gone; the next commits come from scans of the
    // directories events name, and a snapshot after each (`--snapshot-every 1`) forgets it.
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&["--min-age", "0s", "--snapshot-every", "1"], &log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("watching for file-system events"))
    }));
    std::thread::sleep(Duration::from_millis(500));
    std::fs::create_dir_all(fx.watch.join("b")).unwrap();
    write_then_rename(&fx, "b/new.log", b"new\n");
    assert!(
        wait_until(Duration::from_secs(20), || has_output(&fx, "b/new.log")),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("scope_dirs=1"),
        "an event-triggered scan: {text}"
    );
    let entries = entries();
    assert!(!entries.contains("a/old.log"), "forgotten: {entries}");
    assert!(
        entries.contains("a/stays.log") && entries.contains("b/new.log"),
        "{entries}"
    );
}

#[test]
fn without_events_a_renamed_file_waits_for_the_interval() {
    let fx = Fixture::new();
    fx.write("first.log", b"before start\n", OLD);
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(
        &["--interval", "10s", "--min-age", "0s", "--events=false"],
        &log,
    );
    // The start-up scan has ended once its file is in the outputs ("gleaner started" comes
    // before it: a start-up scan slowed down by a loaded machine would list the late file).
    assert!(
        wait_until(Duration::from_secs(20), || has_output(&fx, "first.log")),
        "the start-up scan: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let renamed_at = write_then_rename(&fx, "late.log", b"late\n");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !has_output(&fx, "late.log"),
        "collected before the interval with --events=false"
    );
    assert!(
        wait_until(Duration::from_secs(20), || has_output(&fx, "late.log")),
        "collected at the interval scan"
    );
    eprintln!(
        "late.log: collected {:?} after its rename",
        renamed_at.elapsed()
    );
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(20)).is_some_and(|s| s.success()));
}

#[test]
fn require_stable_never_reads_a_file_that_is_still_being_written() {
    let fx = Fixture::new();
    let log = fx.root.join("gleaner.log");
    // Frequent listings, no minimum age: only stability protects the file.
    let mut child = fx.spawn(
        &[
            "--interval",
            "100ms",
            "--min-age",
            "0s",
            "--require-stable",
            "1s",
        ],
        &log,
    );
    let path = fx.watch.join("slow.log");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut written = Vec::new();
    for i in 0..12 {
        let line = format!("line {i} of a file written slowly\n");
        file.write_all(line.as_bytes()).unwrap();
        written.extend_from_slice(line.as_bytes());
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !has_output(&fx, "slow.log"),
            "slow.log was read after {} of 12 writes",
            i + 1
        );
    }
    drop(file);
    assert!(
        wait_until(Duration::from_secs(10), || has_output(&fx, "slow.log")),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(20)).is_some_and(|s| s.success()));
    let mut expected = BTreeMap::new();
    expected.insert("slow.log".to_string(), written);
    assert_exactly_once(&fx.outputs(), &expected);
}

#[test]
fn ready_markers_hold_files_back_until_they_exist() {
    let fx = Fixture::new();
    fx.write("a/x.log", b"x\n", OLD);
    fx.write("a/y.log", b"y\n", OLD);
    fx.run_once(&["--ready-marker", "{name}.done"]);
    assert!(fx.outputs().is_empty(), "no marker, nothing processed");

    fx.write("a/x.log.done", b"", OLD);
    let out = fx.run_once(&["--ready-marker", "{name}.done"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 not ready yet"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fx.write("a/y.log.done", b"", OLD);
    fx.run_once(&["--ready-marker", "{name}.done"]);
    fx.run_once(&["--ready-marker", "{name}.done"]);
    let mut expected = BTreeMap::new();
    expected.insert("a/x.log".to_string(), b"x\n".to_vec());
    expected.insert("a/y.log".to_string(), b"y\n".to_vec());
    // Each once, markers never.
    assert_exactly_once(&fx.outputs(), &expected);

    // A per-directory marker releases its whole directory.
    let fx = Fixture::new();
    fx.write("part/p-0.csv", b"0\n", OLD);
    fx.write("part/p-1.csv", b"1\n", OLD);
    fx.write("other/p-2.csv", b"2\n", OLD);
    fx.write("part/_SUCCESS", b"", OLD);
    fx.run_once(&["--ready-marker", "_SUCCESS"]);
    let mut expected = BTreeMap::new();
    expected.insert("part/p-0.csv".to_string(), b"0\n".to_vec());
    expected.insert("part/p-1.csv".to_string(), b"1\n".to_vec());
    assert_exactly_once(&fx.outputs(), &expected);
}

#[test]
fn include_and_exclude_globs_choose_the_files() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for (rel, wanted) in [
        ("app.log", true),
        ("deep/er/app.log", true),
        ("notes.txt", false),
        ("debug/app.log", false),
        ("audit/trail.bin", true),
    ] {
        fx.write(rel, rel.as_bytes(), OLD);
        if wanted {
            expected.insert(rel.to_string(), rel.as_bytes().to_vec());
        }
    }
    fx.run_once(&[
        "--include",
        "*.log",
        "--include",
        "audit/**",
        "--exclude",
        "debug/*",
    ]);
    assert_exactly_once(&fx.outputs(), &expected);
    let out = fx
        .command(&["--once", "--include", "a[b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--include/--exclude"));
}

#[test]
fn on_change_append_processes_appended_whole_lines_only() {
    let fx = Fixture::new();
    let path = fx.watch.join("grows.log");
    let mut content = Vec::new();
    let mut append = |bytes: &[u8]| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(bytes).unwrap();
        content.extend_from_slice(bytes);
        content.clone()
    };
    let flags = ["--min-age", "0s", "--on-change", "append"];
    append(b"first line\nsecond line\n");
    fx.run_once(&flags);
    // A partial last line is not counted until it is complete.
    append(b"third line\nfourth, still being wri");
    fx.run_once(&flags);
    let results: Vec<_> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1]["start"], 23);
    assert_eq!(
        results[1]["result"]["lines"], 1,
        "only the complete third line"
    );
    let out = fx.run_once(&flags);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 not ready yet"),
        "the partial line waits: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fx.outputs().len(), 2, "nothing new without a complete line");
    let last = append(b"tten\nfifth line\n");
    fx.run_once(&flags);

    let lines: Vec<_> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 3, "three runs with new lines, three results");
    let sum = |field: &str| -> u64 {
        lines
            .iter()
            .map(|l| l["result"][field].as_u64().unwrap())
            .sum()
    };
    let whole = crate::support::reference_stats(&last);
    for field in ["lines", "words", "bytes"] {
        assert_eq!(sum(field), whole[field].as_u64().unwrap(), "{field}");
    }
    // Ranges follow each other exactly.
    let starts: Vec<u64> = lines
        .iter()
        .map(|l| l["start"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(starts, vec![0, 23, 34]);

    // A rewrite that shrinks the file is processed again from the start.
    std::fs::write(&path, b"new\n").unwrap();
    fx.run_once(&flags);
    let lines: Vec<_> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[3].get("start").is_none());
    assert_eq!(
        lines[3]["result"],
        crate::support::reference_stats(b"new\n")
    );

    // With `reprocess`, a grown file is processed whole again; with `ignore`, left alone.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    fx.run_once(&["--min-age", "0s"]);
    assert_eq!(fx.outputs().len(), 4, "ignored");
    fx.run_once(&["--min-age", "0s", "--on-change", "reprocess"]);
    let lines: Vec<_> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[4]["result"],
        crate::support::reference_stats(b"new\nmore\n")
    );
}

#[test]
fn identity_content_recognises_renamed_files() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for i in 0..6 {
        let data = format!("file {i}\n{}\n", "x".repeat(i * 700)).into_bytes();
        fx.write(&format!("in/{i}.log"), &data, OLD);
        expected.insert(format!("in/{i}.log"), data);
    }
    let flags = ["--min-age", "0s", "--identity", "content"];
    fx.run_once(&flags);
    let processed = fx.outputs().len();
    assert_eq!(processed, 6);

    // Renamed in place, moved to another directory, and one copied (a copy is a new file).
    std::fs::rename(fx.watch.join("in/0.log"), fx.watch.join("in/0-renamed.log")).unwrap();
    std::fs::create_dir_all(fx.watch.join("archive/2026")).unwrap();
    for i in 1..4 {
        std::fs::rename(
            fx.watch.join(format!("in/{i}.log")),
            fx.watch.join(format!("archive/2026/{i}.log")),
        )
        .unwrap();
    }
    std::fs::copy(fx.watch.join("in/4.log"), fx.watch.join("in/4-copy.log")).unwrap();
    let out = fx.run_once(&flags);
    let lines = fx.outputs();
    let paths: Vec<&str> = lines
        .iter()
        .map(|(_, l)| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        7,
        "only the copy is new: {paths:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(paths[6], "in/4-copy.log");

    // The new names are in the state: renaming back and forth again processes nothing.
    let entries = crate::support::gleaner()
        .args(["state", "inspect", "--entries", "--state"])
        .arg(&fx.state)
        .output()
        .unwrap();
    let entries = String::from_utf8_lossy(&entries.stdout);
    assert!(entries.contains("archive/2026/2.log"), "{entries}");
    std::fs::rename(
        fx.watch.join("archive/2026/2.log"),
        fx.watch.join("in/2.log"),
    )
    .unwrap();
    fx.run_once(&flags);
    fx.run_once(&flags);
    assert_eq!(fx.outputs().len(), 7);

    // By path (the default), a renamed file is a new file.
    std::fs::rename(fx.watch.join("in/5.log"), fx.watch.join("in/5-again.log")).unwrap();
    fx.run_once(&["--min-age", "0s"]);
    assert_eq!(fx.outputs().len(), 8);

    // Content identity and cleanup do not mix.
    let out = fx
        .command(&["--once", "--identity", "content", "--after", "delete"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be combined"));
}

#[test]
fn on_change_append_processes_a_rewritten_file_from_the_start() {
    let fx = Fixture::new();
    let path = fx.watch.join("rewritten.log");
    std::fs::write(&path, b"original first line\nsecond\n").unwrap();
    let flags = ["--min-age", "0s", "--on-change", "append"];
    fx.run_once(&flags);
    // Larger, but its first bytes are not the ones processed: a rewrite, not an append.
    let rewritten = b"REWRITTEN first line\nsecond\nthird\n";
    std::fs::write(&path, rewritten).unwrap();
    fx.run_once(&flags);
    let lines: Vec<_> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].get("start").is_none(), "{}", lines[1]);
    assert_eq!(
        lines[1]["result"],
        crate::support::reference_stats(rewritten)
    );
}

#[test]
fn identity_content_handles_rotation_and_never_matches_an_unready_file() {
    // logrotate without copytruncate: rename, then a new file under the old name.
    let fx = Fixture::new();
    fx.write("app.log", b"2026-01-01T00:00:00 first\nsecond\n", OLD);
    let flags = ["--min-age", "0s", "--identity", "content"];
    fx.run_once(&flags);
    std::fs::rename(fx.watch.join("app.log"), fx.watch.join("app.log.1")).unwrap();
    fx.write("app.log", b"2026-01-02T00:00:00 new\n", OLD);
    fx.run_once(&flags);
    let counts = path_counts(&fx.outputs());
    assert_eq!(
        counts.get("app.log"),
        Some(&2),
        "the new app.log is new: {counts:?}"
    );
    assert!(
        !counts.contains_key("app.log.1"),
        "the rotated file is not processed again"
    );

    // A file identical to a processed one that is gone, but still being written (too young),
    // is not taken for it: once complete, it is processed.
    let fx = Fixture::new();
    let content = b"2026-01-01T00:00:00 header\nbody\n";
    fx.write("a.log", content, OLD);
    fx.run_once(&["--min-age", "0s", "--identity", "content"]);
    std::fs::remove_file(fx.watch.join("a.log")).unwrap();
    let b = fx.watch.join("b.log");
    std::fs::write(&b, content).unwrap();
    fx.run_once(&["--min-age", "1h", "--identity", "content"]);
    let mut file = std::fs::OpenOptions::new().append(true).open(&b).unwrap();
    file.write_all(b"more data\n").unwrap();
    drop(file);
    crate::support::set_age(&b, OLD);
    fx.run_once(&["--min-age", "0s", "--identity", "content"]);
    let counts = path_counts(&fx.outputs());
    assert_eq!(counts.get("b.log"), Some(&1), "{counts:?}");
}

#[test]
fn append_mode_refuses_cleanup_and_leaves_grown_compressed_files_alone() {
    let fx = Fixture::new();
    for after in [&["--after", "delete"][..], &["--quarantine", "/tmp/q"][..]] {
        let out = fx
            .command(&[&["--once", "--on-change", "append"], after].concat())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{after:?}: a usage error");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("keeps files in place"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let path = fx.watch.join("x.log.gz");
    std::fs::write(&path, gz(b"a\nb\n")).unwrap();
    let flags = ["--min-age", "0s", "--on-change", "append"];
    fx.run_once(&flags);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&gz(b"c\n")).unwrap();
    drop(file);
    fx.run_once(&flags);
    let lines: Vec<u64> = fx
        .outputs()
        .iter()
        .map(|(_, l)| l["result"]["lines"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![2],
        "a grown gzip stream is left alone, not counted twice"
    );

    // A touch (same size and first bytes, new mtime) is not a rewrite.
    let plain = fx.watch.join("plain.log");
    std::fs::write(&plain, b"one\ntwo\n").unwrap();
    fx.run_once(&flags);
    crate::support::set_age(&plain, Duration::from_secs(5));
    fx.run_once(&flags);
    assert_eq!(path_counts(&fx.outputs()).get("plain.log"), Some(&1));
}

#[test]
fn include_globs_may_use_braces() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for (rel, wanted) in [("a.log", true), ("b.txt", true), ("c.bin", false)] {
        fx.write(rel, rel.as_bytes(), OLD);
        if wanted {
            expected.insert(rel.to_string(), rel.as_bytes().to_vec());
        }
    }
    fx.run_once(&["--include", "*.{log,txt}"]);
    assert_exactly_once(&fx.outputs(), &expected);
}

/// A steady writer makes a file ready every few milliseconds: each would wake a scan of its
/// own (listing the whole waiting backlog and committing a generation for one file: seven
/// scans a second at 20 MB/s of mixed files, most of the sidecar's CPU). Scans start at least a
/// second apart, so one commits what became ready in that second.
#[test]
fn with_default_flags_a_steady_writer_is_collected_by_about_one_scan_a_second() {
    let fx = Fixture::new();
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&[], &log);
    let started = Instant::now();
    let mut expected = BTreeMap::new();
    for i in 0..160 {
        let rel = format!("steady-{i:03}.log");
        let data = format!("line {i}\n").into_bytes();
        std::fs::write(fx.watch.join(&rel), &data).unwrap();
        expected.insert(rel, data);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last file is ready after the default --min-age of 5 s.
    assert!(
        wait_until(Duration::from_secs(30), || path_counts(&fx.outputs()).len()
            == 160),
        "not every file collected: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let seconds = started.elapsed().as_secs() as usize;
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert_exactly_once(&fx.outputs(), &expected);
    let log = std::fs::read_to_string(&log).unwrap();
    let scans = log.lines().filter(|l| l.contains("scan complete")).count();
    eprintln!("{scans} scans in {seconds} s for 160 files written 50 ms apart");
    // At most one a second while running, a few more for the drain.
    assert!(
        scans <= seconds + 4,
        "{scans} scans in {seconds} s: a scan per ready file\n{log}"
    );
}

/// With default flags (events, `--min-age 5s`) the scans that events wake take a file they
/// found too young as it was, without examining it again, until its age may allow; then they
/// look again. A file written on while it waits is collected whole, once.
#[test]
fn with_default_flags_a_file_written_on_while_it_waits_is_collected_whole() {
    let fx = Fixture::new();
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&[], &log);
    let mut expected = BTreeMap::new();
    let mut data = Vec::new();
    let growing = fx.watch.join("growing.log");
    for i in 0..4 {
        let line = format!("line {i} of a file written on for six seconds\n");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&growing)
            .unwrap();
        file.write_all(line.as_bytes()).unwrap();
        data.extend_from_slice(line.as_bytes());
        // Another file each time: more events, more scans while the first one waits.
        let other = format!("other-{i}.log");
        std::fs::write(fx.watch.join(&other), b"one line\n").unwrap();
        expected.insert(other, b"one line\n".to_vec());
        std::thread::sleep(Duration::from_secs(2));
    }
    expected.insert("growing.log".to_string(), data);
    assert!(
        wait_until(Duration::from_secs(30), || path_counts(&fx.outputs())
            .contains_key("growing.log")),
        "not collected: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert_exactly_once(&fx.outputs(), &expected);
}
