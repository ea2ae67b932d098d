//! Files that move, come back, get replaced, or carry absurd timestamps.

use std::time::Duration;

use crate::support::{Fixture, OLD, path_counts, reference_stats, set_age};

#[test]
fn a_file_moved_out_and_back_is_not_processed_again() {
    let fx = Fixture::new();
    let file = fx.write("a.log", b"one two\n", OLD);
    fx.write("b.log", b"three\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    let aside = fx.root.join("a.log.aside");
    std::fs::rename(&file, &aside).unwrap();
    fx.run_once(&["--min-age", "0s"]);
    std::fs::rename(&aside, &file).unwrap();
    fx.write("c.log", b"four\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    let counts = path_counts(&fx.outputs());
    assert_eq!(counts.get("a.log"), Some(&1), "{counts:?}");
    assert_eq!(counts.len(), 3);
}

#[test]
fn a_file_replaced_under_the_same_name_is_a_new_file() {
    // Emitters reuse names; file systems reuse inode numbers at once. The new file must be
    // collected, and the old one not again.
    let fx = Fixture::new();
    fx.write("app.log", b"first version\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    std::fs::remove_file(fx.watch.join("app.log")).unwrap();
    fx.run_once(&["--min-age", "0s"]);
    std::thread::sleep(Duration::from_millis(5));
    fx.write("app.log", b"second version, longer\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    // Replaced between two scans, without a scan seeing it gone.
    std::fs::remove_file(fx.watch.join("app.log")).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    fx.write("app.log", b"third\n", OLD);
    fx.run_once(&["--min-age", "0s"]);

    let lines = fx.outputs();
    let results: Vec<_> = lines.iter().map(|(_, l)| l["result"].clone()).collect();
    assert_eq!(
        results,
        vec![
            reference_stats(b"first version\n"),
            reference_stats(b"second version, longer\n"),
            reference_stats(b"third\n"),
        ]
    );
}

#[test]
fn a_file_changed_in_place_after_processing_is_left_alone() {
    let fx = Fixture::new();
    let file = fx.write("a.log", b"line\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    std::fs::write(&file, b"line\nappended\n").unwrap();
    set_age(&file, OLD);
    let out = fx.run_once(&["--min-age", "0s"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("committed 0 batch(es)"));
    assert_eq!(fx.outputs().len(), 1);
}

#[test]
fn an_absurd_timestamp_does_not_stop_the_pipeline() {
    let fx = Fixture::new();
    let future = fx.write("future.log", b"from the year 2300\n", Duration::ZERO);
    let far = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(10_413_792_000);
    std::fs::File::options()
        .write(true)
        .open(&future)
        .unwrap()
        .set_modified(far)
        .unwrap();
    fx.write("normal.log", b"today\n", OLD);
    let out = fx.run_once(&["--min-age", "1s"]);
    let counts = path_counts(&fx.outputs());
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["normal.log"]);
    // A file modified "in the future" is not ready until then, and is reported as such.
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 not ready yet"));
}

#[test]
fn a_file_stamped_far_in_the_future_is_collected_once_it_has_waited_min_age() {
    // `touch -d 2100-01-01`, or a writer whose clock is far ahead: with the default --min-age
    // (5s) and --max-clock-skew (1m), it is collected about 5s after it was first seen, with a
    // warning, instead of waiting silently until 2100.
    let fx = Fixture::new();
    let data = b"written by a host whose clock is wrong\n".to_vec();
    let path = fx.write("skewed.log", &data, Duration::ZERO);
    let year_2100 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(4_102_444_800);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(year_2100)
        .unwrap();
    let started = std::time::Instant::now();
    let served = crate::support::Served::start(&fx, &["--interval", "1h"]);
    let mut metrics = String::new();
    assert!(
        crate::support::wait_until(Duration::from_secs(4), || {
            metrics = crate::http::get(&served.addr, "/metrics").1;
            crate::support::has_sample(&metrics, "gleaner_future_mtime_files 1")
        }),
        "{metrics}"
    );
    assert!(
        fx.outputs().is_empty(),
        "not before it has waited --min-age"
    );
    assert!(crate::support::wait_until(Duration::from_secs(20), || fx
        .outputs()
        .len()
        == 1));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(15),
        "collected after {waited:?}"
    );
    crate::support::sigterm(&served.child);
    let (status, log) = served.wait(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log:#?}");
    assert!(
        log.iter()
            .any(|l| l.contains("modification time in the future") && l.contains("skewed.log")),
        "{log:#?}"
    );
    crate::support::assert_exactly_once(
        &fx.outputs(),
        &std::collections::BTreeMap::from([("skewed.log".to_string(), data)]),
    );
}
