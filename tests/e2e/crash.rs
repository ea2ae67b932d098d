//! Crash safety: SIGKILL the real process at random moments while it works through thousands of
//! files in small batches, restart it each time, finish with `--once`: every file's result is in
//! the outputs exactly once.
//!
//! `GLEANER_CRASH_KILLS` sets the number of kills (default 40); `GLEANER_TEST_SEED` replays a run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{
    Fixture, assert_exactly_once, path_counts, random_content, seeded_rng, wait_with_timeout,
};

/// Ready files kept waiting before every restart.
const BACKLOG: usize = 400;

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("GLEANER_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let fx = Fixture::new();
    let (mut rng, seed) = seeded_rng("crash");
    let started = Instant::now();

    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut wave = 0;
    let mut add_files = |rng: &mut fastrand::Rng, count: usize| {
        wave += 1;
        for i in 0..count {
            let rel = format!("w{wave:03}/d{}/f{i:04}.log", i % 13);
            let data = random_content(rng, 4000);
            crate::support::emit(&fx.watch, &rel, &data);
            expected.insert(rel, data);
        }
        count
    };
    let mut written = add_files(&mut rng, 2000);

    let mut killed_running = 0;
    let mut recovered_batches = 0;
    for kill in 0..kills {
        // The emitter keeps writing while the collector crashes: keep a backlog, so that every
        // run is busy and kills land in every phase (load, listing, processing, flush, commit).
        let committed = fx.outputs().len();
        if written - committed < BACKLOG {
            written += add_files(&mut rng, BACKLOG - (written - committed));
        }
        let log = fx.root.join(format!("run-{kill:03}.log"));
        let mut child = fx.spawn(
            &[
                "--interval",
                "50ms",
                "--min-age",
                "0s",
                "--max-files",
                "7",
                "--workers",
                "3",
            ],
            &log,
        );
        std::thread::sleep(Duration::from_millis(rng.u64(5..300)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "gleaner exited by itself ({status}) before kill {kill}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed_running += 1;
        let text = std::fs::read_to_string(&log).unwrap();
        recovered_batches += text.matches("redoing a batch").count();
        assert!(!text.contains("panicked"), "{text}");
    }

    let mut child = fx
        .command(&["--once", "--min-age", "0s", "--max-files", "7"])
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(300)).expect("final --once");
    assert!(status.success());

    let lines = fx.outputs();
    let counts = path_counts(&lines);
    let duplicates = counts.values().filter(|&&n| n > 1).count();
    let missing = expected.keys().filter(|p| !counts.contains_key(*p)).count();
    let generations = fx.inspect()["generation"].as_u64().unwrap();
    let objects = fx.output_objects().len();
    eprintln!(
        "crash: seed {seed}, {killed_running} SIGKILLs, {} files, {} output lines, \
         {duplicates} duplicated, {missing} missing, {generations} generations, {objects} output \
         objects, {recovered_batches} interrupted batches redone, {:.1?}",
        expected.len(),
        lines.len(),
        started.elapsed()
    );
    assert!(killed_running >= kills);
    assert_exactly_once(&lines, &expected);
    // Every output object belongs to a committed generation (no orphans), and the state is
    // sound.
    fx.assert_outputs_match_commits();
    // The kills did land inside batches (otherwise this test would prove little).
    assert!(recovered_batches > 0, "no kill interrupted a batch");
}
