//! SIGTERM finishes the current batch, drains what is ready, commits, and exits 0.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Fixture, assert_exactly_once, sigterm, wait_until, wait_with_timeout};

/// `count` small files, an hour old, as `f0000.log`, `f0001.log`, …
fn small_files(fx: &Fixture, count: usize) -> BTreeMap<String, Vec<u8>> {
    (0..count)
        .map(|i| {
            let (rel, data) = (format!("f{i:04}.log"), format!("file {i}\n").into_bytes());
            fx.write(&rel, &data, Duration::from_secs(3600));
            (rel, data)
        })
        .collect()
}

/// Starts `--once` with `extra` flags and returns once its first batch is committed, busy with
/// the rest.
fn start_busy_once(fx: &Fixture, extra: &[&str]) -> std::process::Child {
    let child = fx
        .command(&[&["--once", "--min-age", "0s"], extra].concat())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(fx.root.join("once.log")).unwrap())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || !fx
        .output_objects()
        .is_empty()));
    child
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for i in 0..3000 {
        let data = format!("line {i}\nanother line of {i}\n").into_bytes();
        fx.write(
            &format!("d{}/f{i:04}.log", i % 7),
            &data,
            Duration::from_secs(60),
        );
        expected.insert(format!("d{}/f{i:04}.log", i % 7), data);
    }
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(
        &["--interval", "1h", "--min-age", "0s", "--max-files", "5"],
        &log,
    );
    // Wait until it is busy with the backlog, then ask it to stop.
    assert!(wait_until(Duration::from_secs(30), || !fx
        .output_objects()
        .is_empty()));
    sigterm(&child);
    let status =
        wait_with_timeout(&mut child, Duration::from_secs(60)).expect("exits after SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("shutdown requested"), "{text}");
    // The signal arrived in the middle of the backlog: the scan stopped after its current
    // batch, and the drain committed the rest.
    assert!(
        text.contains("leaving the rest of this scan to the drain"),
        "{text}"
    );
    assert!(text.contains("drained"), "{text}");

    // Everything ready at the signal was committed by the drain, nothing is half done.
    assert_exactly_once(&fx.outputs(), &expected);
    fx.assert_outputs_match_commits();
}

#[test]
fn sigterm_during_once_still_commits_everything_ready() {
    let fx = Fixture::new();
    let expected = small_files(&fx, 1500);
    let mut child = start_busy_once(&fx, &["--max-files", "2"]);
    sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(120)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert_exactly_once(&fx.outputs(), &expected);
}

#[test]
fn sigterm_when_idle_exits_zero_promptly() {
    let fx = Fixture::new();
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&["--interval", "1h"], &log);
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("gleaner started")
    }));
    sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(10)).expect("prompt exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_shutdown_deadline_exits_promptly_and_loses_nothing() {
    let fx = Fixture::new();
    let expected = small_files(&fx, 6000);
    // One file per batch: the drain of `--once` takes far longer than the deadline.
    let mut child = start_busy_once(&fx, &["--max-files", "1", "--shutdown-timeout", "1s"]);
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(30)).expect("exits");
    let waited = signalled.elapsed();
    let text = std::fs::read_to_string(fx.root.join("once.log")).unwrap();
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(
        waited < Duration::from_secs(5),
        "exited {waited:?} after SIGTERM with --shutdown-timeout 1s"
    );
    assert!(
        text.contains("did not finish within --shutdown-timeout"),
        "{text}"
    );
    let committed = fx.outputs().len();
    assert!(
        committed < expected.len(),
        "the deadline cut the drain short"
    );

    // Nothing is damaged, and the next run finishes the job: every file exactly once.
    crate::support::assert_state_verifies(&fx.state.display().to_string());
    fx.run_once(&["--min-age", "0s", "--max-files", "500"]);
    assert_exactly_once(&fx.outputs(), &expected);
    fx.assert_outputs_match_commits();
}

#[test]
fn a_second_sigterm_during_the_drain_exits_at_once_without_damage() {
    let fx = Fixture::new();
    let expected = small_files(&fx, 6000);
    let mut child = start_busy_once(&fx, &["--max-files", "1"]);
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(200));
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(143));
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert!(fx.outputs().len() < expected.len(), "cut short");
    crate::support::assert_state_verifies(&fx.state.display().to_string());
    fx.run_once(&["--min-age", "0s", "--max-files", "500"]);
    assert_exactly_once(&fx.outputs(), &expected);
}
