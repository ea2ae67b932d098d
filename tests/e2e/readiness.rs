//! Files are read only when complete: old enough, and not under an in-progress name.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Fixture, OLD, assert_exactly_once, path_counts, set_age};

#[test]
fn young_and_in_progress_files_wait_until_ready_then_appear_once() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    fx.write("ready.log", b"ready now\n", OLD);
    expected.insert("ready.log".to_string(), b"ready now\n".to_vec());
    // Written a moment ago: younger than --min-age.
    let young = fx.write("young.log", b"still being written\n", Duration::ZERO);
    // Old, but under names that say "in progress".
    let staged = fx.write("upload.log.tmp", b"staged\n", OLD);
    fx.write("chunk.part", b"partial\n", OLD);
    fx.write("x.partial", b"partial\n", OLD);
    fx.write(".hidden.log", b"hidden\n", OLD);
    fx.write(".staging/inner.log", b"hidden dir\n", OLD);

    fx.run_once(&["--min-age", "30s"]);
    assert_exactly_once(&fx.outputs(), &expected);

    // The emitter finishes: renames the staged file, and the young one ages past --min-age.
    std::fs::rename(&staged, fx.watch.join("upload.log")).unwrap();
    set_age(&young, Duration::from_secs(31));
    fx.run_once(&["--min-age", "30s"]);
    expected.insert("upload.log".to_string(), b"staged\n".to_vec());
    expected.insert("young.log".to_string(), b"still being written\n".to_vec());
    assert_exactly_once(&fx.outputs(), &expected);

    // And once more: nothing is processed twice.
    fx.run_once(&["--min-age", "30s"]);
    let counts = path_counts(&fx.outputs());
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
}

#[test]
fn a_running_collector_picks_up_a_young_file_when_it_becomes_old_enough() {
    // With an hour between scans, a file that was too young at a scan is still collected
    // soon after it becomes old enough, without waiting for the next interval.
    let fx = Fixture::new();
    fx.write("young.log", b"fresh\n", Duration::ZERO);
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&["--interval", "1h", "--min-age", "2s"], &log);
    let found = crate::support::wait_until(Duration::from_secs(20), || fx.outputs().len() == 1);
    crate::support::sigterm(&child);
    let status = crate::support::wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(
        found,
        "not collected: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
