//! The long crash campaign: `gleaner run` under a restart supervisor (as Kubernetes runs it),
//! SIGKILLed at random moments while an emitter writes files all along; snapshots every few
//! generations and `--after move:DIR`, so that kills land in every phase: start-up and loading,
//! listing, processing, flushing, committing, snapshotting and cleanup. Afterwards every file is
//! in the outputs exactly once with correct results, moved exactly once, and the state verifies.
//! The outputs are laid out in Hive-style partitions (`--output-layout hive`; the flat layout,
//! the default, has its own kill campaign in crash.rs): every object must sit in the partition
//! of its source and of a day the campaign ran, and hold only lines of its generation.
//!
//! `GLEANER_CAMPAIGN_KILLS` sets the number of kills (default 200); `GLEANER_TEST_SEED` replays
//! a run (the kill and emitter timings are drawn from it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::supervisor::{Backoff, Supervisor};
use crate::support::{
    Fixture, assert_exactly_once, assert_state_verifies, files_with, random_content, seeded_rng,
    wait_with_timeout,
};

/// Evidence, in the logs of the run after a kill, of where the kill landed.
const EVIDENCE: [(&str, &str); 4] = [
    (
        "redoing a batch",
        "inside a batch (planned, processing, flushing or committing)",
    ),
    (
        "cleaning up committed files left by",
        "between a commit and its cleanup",
    ),
    (
        "removed temporary files left by an interrupted write",
        "inside a write (output, state object)",
    ),
    (
        "removed state objects a newer snapshot or delta supersedes",
        "while snapshotting (after the snapshot, before its cleanup)",
    ),
];

#[test]
fn two_hundred_kills_under_a_restart_supervisor_lose_and_duplicate_nothing() {
    let kills: usize = std::env::var("GLEANER_CAMPAIGN_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let fx = Fixture::new();
    let done = fx.root.join("done");
    let (mut rng, seed) = seeded_rng("campaign");
    let started = Instant::now();
    let first_day = utc_day(SystemTime::now());

    // The emitter: files written under a temporary name and renamed, all along.
    let expected: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let emitting = Arc::new(AtomicBool::new(true));
    let emitter = {
        let (expected, emitting, watch) = (
            Arc::clone(&expected),
            Arc::clone(&emitting),
            fx.watch.clone(),
        );
        let mut rng = fastrand::Rng::with_seed(rng.u64(..));
        std::thread::spawn(move || {
            let mut n = 0usize;
            while emitting.load(Ordering::SeqCst) {
                for _ in 0..rng.usize(1..6) {
                    let rel = format!("d{}/f{n:06}.log", n % 11);
                    let data = random_content(&mut rng, 3000);
                    crate::support::emit(&watch, &rel, &data);
                    expected.lock().unwrap().insert(rel, data);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(rng.u64(2..15)));
            }
        })
    };

    let after = format!("move:{}", done.display());
    let args: Vec<String> = [
        "--interval",
        "50ms",
        "--min-age",
        "0s",
        "--max-files",
        "9",
        "--workers",
        "2",
        "--snapshot-every",
        "3",
        "--after",
        &after,
        "--debounce",
        "20ms",
        // The drain at the end commits whatever the killed runs left: on a loaded machine that
        // backlog can be thousands of 9-file batches, more than the default 25 s allow. What
        // is tested here is exactly-once under kills; the drain's deadline with default flags
        // is tested in signals.rs.
        "--shutdown-timeout",
        "300s",
        "--output-layout",
        "hive",
    ]
    .map(String::from)
    .to_vec();
    let supervisor = {
        let (fx_args, args) = (
            fx.command(&[])
                .get_args()
                .map(|a| a.to_owned())
                .collect::<Vec<_>>(),
            args.clone(),
        );
        Supervisor::start(fx.root.join("logs"), Backoff::default(), move |_| {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gleaner"));
            command.args(&fx_args).args(&args);
            command
        })
    };

    let mut landed = 0;
    while landed < kills {
        std::thread::sleep(Duration::from_millis(rng.u64(5..150)));
        if supervisor.kill() {
            landed += 1;
        }
    }
    emitting.store(false, Ordering::SeqCst);
    emitter.join().unwrap();
    let runs = supervisor.stop();
    let restarts = runs.len() - 1;
    let last = runs.last().unwrap();
    assert!(
        last.status.success(),
        "the drained run ended with {}: {}",
        last.status,
        std::fs::read_to_string(&last.log).unwrap()
    );
    // Whatever the drain left (files written during it), one more run finishes.
    let mut child = fx
        .command(&[
            "--once",
            "--min-age",
            "0s",
            "--after",
            &after,
            "--output-layout",
            "hive",
        ])
        .spawn()
        .unwrap();
    assert!(wait_with_timeout(&mut child, Duration::from_secs(300)).is_some_and(|s| s.success()));

    let mut evidence = vec![0usize; EVIDENCE.len()];
    // How often kills hit the same batch in a row: each redo logs the abnormal ends so far. A
    // file given up after 8 ends alone must stay far out of reach of kills from outside.
    let (mut most_ends, mut cut_redos) = (0u32, 0usize);
    for run in &runs {
        let text = std::fs::read_to_string(&run.log).unwrap();
        assert!(!text.contains("panicked"), "{}: {text}", run.log.display());
        for (count, (needle, _)) in evidence.iter_mut().zip(EVIDENCE) {
            *count += usize::from(text.contains(needle));
        }
        for ends in text.split("abnormal_ends=").skip(1) {
            let digits: String = ends.chars().take_while(char::is_ascii_digit).collect();
            most_ends = most_ends.max(digits.parse().unwrap_or(0));
        }
        cut_redos += text.matches("redoing it with its first files only").count();
    }
    let expected = expected.lock().unwrap().clone();
    let lines = fx.outputs();
    assert_exactly_once(&lines, &expected);
    let days = [first_day, utc_day(SystemTime::now())];
    for (object, line) in &lines {
        let key = object.strip_prefix(&fx.output).unwrap().to_string_lossy();
        let parts: Vec<&str> = key.split('/').collect();
        let generation = line["generation"].as_u64().unwrap();
        assert!(
            parts.len() == 3
                && parts[0] == format!("source={}", fx.source_id)
                && days.iter().any(|day| parts[1] == format!("date={day}"))
                && parts[2] == format!("{generation:020}.ndjson")
                && line["source_id"] == fx.source_id.as_str(),
            "{key} holds a line outside its partition: {line}"
        );
    }
    assert_state_verifies(&fx.state.display().to_string());
    // Every file moved exactly once (no second copy under a `.generation` name), none left.
    let moved: BTreeSet<String> = files_with(&done, |_| true)
        .into_iter()
        .map(|p| {
            p.strip_prefix(&done)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(moved, expected.keys().cloned().collect::<BTreeSet<_>>());
    // Only Gleaner's root id (`.gleaner-root`) may stay.
    let left = files_with(&fx.watch, |n| !n.ends_with(".tmp") && n != ".gleaner-root");
    assert!(
        left.is_empty(),
        "committed files left in the watch directory: {left:?}"
    );

    eprintln!(
        "campaign: seed {seed}, {landed} SIGKILLs, {restarts} restarts, {} files, {} output \
         lines, 0 duplicated, 0 missing, {:.1?}",
        expected.len(),
        lines.len(),
        started.elapsed()
    );
    let mut lasted: Vec<Duration> = runs.iter().map(|r| r.lasted).collect();
    lasted.sort();
    eprintln!(
        "campaign: runs lasted {:?} (median), {:?} (longest)",
        lasted[lasted.len() / 2],
        lasted[lasted.len() - 1]
    );
    for (count, (_, phase)) in evidence.iter().zip(EVIDENCE) {
        eprintln!("campaign: {count:4} restarts found a kill {phase}");
    }
    eprintln!(
        "campaign: at most {most_ends} kills in a row before one batch's commit; {cut_redos} \
         redos cut smaller"
    );
    assert!(restarts >= kills, "every kill was followed by a restart");
    assert!(
        lines.len() > 1000,
        "too few lines to say much: {}",
        lines.len()
    );
    assert!(evidence[0] > 0, "no kill landed inside a batch");
}

/// The UTC day of `time`, as `YYYY-MM-DD`.
fn utc_day(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_string()
}
