//! `gleaner run --baseline`: a first start over a directory that already holds files records
//! them as seen but not processed, and later starts process only what came after.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

const DAYS: Duration = Duration::from_secs(3 * 86_400);
const HOURS: Duration = Duration::from_secs(2 * 3600);

/// Baselines the files older than a day, then restarts twice with `--baseline` still given:
/// the baseline is taken once, the younger file and the files written later are processed
/// exactly once, the baselined ones never, and `state inspect` names them.
fn baseline_then_restart(fx: &Fixture, output: &Place) {
    for name in ["old-1.log", "old-2.log", "sub/old-3.log"] {
        fx.write(name, format!("{name}\n").as_bytes(), DAYS);
    }
    fx.write("recent.log", b"recent\n", HOURS);

    let first = fx.run_once(&["--baseline", "--baseline-older-than", "1d"]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("baselined 3 file(s)") && stdout.contains("1 younger file(s)"),
        "{stdout}"
    );
    assert_eq!(processed(output), ["recent.log"]);

    let inspection = fx.inspect();
    assert_eq!(inspection["baselined"], 3, "{inspection}");
    let baselined: Vec<&str> = inspection["baselined_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(baselined, ["old-1.log", "old-2.log", "sub/old-3.log"]);
    assert_eq!(inspection["baselined_files"][0]["generation"], 1);
    assert_eq!(inspection["generation"], 2, "baseline, then one batch");

    // A restart with the flag still given: nothing baselined again, only the new file processed.
    fx.write("new.log", b"new\n", OLD);
    let second = fx.run_once(&["--baseline"]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("baseline skipped"), "{stdout}");
    assert!(
        stdout.contains("committed 1 batch(es): 1 file(s)"),
        "{stdout}"
    );
    assert_eq!(processed(output), ["new.log", "recent.log"]);

    // And without it: nothing left to do.
    let third = fx.run_once(&[]);
    let stdout = String::from_utf8_lossy(&third.stdout);
    assert!(stdout.contains("committed 0 batch(es)"), "{stdout}");
    let inspection = fx.inspect();
    assert_eq!(
        (&inspection["done"], &inspection["baselined"]),
        (&2.into(), &3.into())
    );
    assert_state_verifies(&fx.state.display().to_string());
}

/// The paths of every output line, sorted; each path once.
fn processed(output: &Place) -> Vec<String> {
    let counts = path_counts(&output.outputs());
    assert!(counts.values().all(|&n| n == 1), "a file twice: {counts:?}");
    counts.into_keys().collect()
}

#[test]
fn baseline_then_restart_on_local_disk() {
    let fx = Fixture::new();
    let output = Place::Local(fx.output.clone());
    baseline_then_restart(&fx, &output);
}

#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn baseline_then_restart_on_s3() {
    let mut fx = Fixture::new();
    let output = Place::s3("baseline-output");
    fx.state = PathBuf::from(Place::s3("baseline-state").arg());
    fx.output = PathBuf::from(output.arg());
    baseline_then_restart(&fx, &output);
}

/// Baselined files were never shipped: `--after delete` removes the processed files and keeps
/// the baselined ones. Without an age, every complete file is baselined, and a file still
/// being written (younger than `--min-age`) is processed once complete.
#[test]
fn baselined_files_are_never_cleaned_up() {
    let fx = Fixture::new();
    let old = fx.write("old.log", b"old\n", DAYS);
    let writing = fx.write("writing.log", b"half a line", Duration::ZERO);
    let first = fx.run_once(&["--baseline", "--after", "delete"]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("baselined 1 file(s)"), "{stdout}");
    assert!(old.exists() && writing.exists());

    set_age(&writing, OLD);
    fx.write("new.log", b"new\n", OLD);
    fx.run_once(&["--after", "delete"]);
    assert!(old.exists(), "a baselined file is kept");
    assert!(!writing.exists() && !fx.watch.join("new.log").exists());
    let output = Place::Local(fx.output.clone());
    assert_eq!(processed(&output), ["new.log", "writing.log"]);
}

/// One writer: a baseline is refused, clearly (exit 3), while another gleaner holds the source
/// (its lease is live), and nothing is committed.
#[test]
fn a_baseline_is_refused_while_a_live_writer_holds_the_source() {
    let fx = Fixture::new();
    // Its first scan finds nothing, and it scans again only in an hour.
    let quiet = ["--interval", "1h", "--events", "false"];
    let log = fx.root.join("writer.log");
    let mut writer = fx
        .command(&quiet)
        .env("GLEANER_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The lease is written before the first scan: a file written before that scan ended would
    // be committed by it, and the baseline then skipped (the source has state), not refused.
    assert!(wait_until(Duration::from_secs(20), || {
        fx.state.join(&fx.source_id).join("writer.lease").exists()
            && std::fs::read_to_string(&log).is_ok_and(|text| text.contains("scan complete"))
    }));
    fx.write("old.log", b"old\n", DAYS);
    let refused = fx.command(&["--once", "--baseline"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("another gleaner holds source id \"test-source\""),
        "{stderr}"
    );
    sigterm(&writer);
    assert!(wait_with_timeout(&mut writer, Duration::from_secs(30)).is_some());
    assert_eq!(fx.inspect()["baselined"], 0);
}
