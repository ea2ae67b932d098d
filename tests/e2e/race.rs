//! One writer: two `gleaner run` processes on one state location and source id race through a
//! backlog. Exactly one commits each generation; the other stops with the ownership error and
//! exit code 3; the outputs hold every file exactly once.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    Fixture, Place, assert_exactly_once, assert_state_verifies, inspect_state, sigterm,
    wait_with_timeout,
};

fn racer(fx: &Fixture, state: &Place, output: &Place, log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gleaner"))
        .arg("run")
        .arg("--watch")
        .arg(&fx.watch)
        .args(["--state", &state.arg(), "--output", &output.arg()])
        .args([
            "--source-id",
            "racer",
            "--metrics-addr",
            "off",
            "--min-age",
            "0s",
        ])
        .args([
            "--interval",
            "100ms",
            "--max-files",
            "4",
            "--snapshot-every",
            "16",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(fx.root.join(log)).unwrap())
        .spawn()
        .unwrap()
}

fn race(state: Place, output: Place, fx: &Fixture) {
    let mut a = racer(fx, &state, &output, "a.log");
    let mut b = racer(fx, &state, &output, "b.log");
    // The backlog comes once both have loaded the state: a racer started late (a loaded
    // machine) would otherwise find the other done with it, and neither would ever conflict.
    let loaded = |log: &str| {
        std::fs::read_to_string(fx.root.join(log)).is_ok_and(|text| text.contains("state loaded"))
    };
    assert!(
        crate::support::wait_until(Duration::from_secs(60), || loaded("a.log")
            && loaded("b.log")),
        "a racer never loaded the state"
    );
    let mut expected = BTreeMap::new();
    for i in 0..600 {
        let data = format!("racing file {i}\nsecond line\n").into_bytes();
        let rel = format!("d{}/f{i:04}.log", i % 9);
        crate::support::emit(&fx.watch, &rel, &data);
        expected.insert(rel, data);
    }

    // Wait for the loser.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut winner, loser_log, status) = loop {
        if let Some(status) = a.try_wait().unwrap() {
            break (b, "a.log", status);
        }
        if let Some(status) = b.try_wait().unwrap() {
            break (a, "b.log", status);
        }
        if Instant::now() >= deadline {
            let _ = (a.kill(), b.kill());
            let tail = |log: &str| {
                let text = std::fs::read_to_string(fx.root.join(log)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            };
            panic!(
                "neither racer stopped\n-- a.log:\n{}\n-- b.log:\n{}",
                tail("a.log"),
                tail("b.log")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(fx.root.join(loser_log)).unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "the loser exits with code 3: {text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gleaner: error: another writer owns the"),
        "the loser names the problem: {text}"
    );

    // The winner drains the rest and exits cleanly.
    sigterm(&winner);
    let status = wait_with_timeout(&mut winner, Duration::from_secs(120)).expect("winner exits");
    assert_eq!(status.code(), Some(0));

    let lines = output.outputs();
    assert_exactly_once(&lines, &expected);
    let inspection = inspect_state(&state.arg(), "racer");
    let generation = inspection["generation"].as_u64().unwrap();
    let objects = output.objects(|n| n.ends_with(".ndjson")).len() as u64;
    assert_eq!(
        objects, generation,
        "one output object per committed generation"
    );
    assert_eq!(inspection["tracked_files"], 600);
    assert_state_verifies(&state.arg());
}

#[test]
fn two_writers_on_local_disk() {
    for _ in 0..3 {
        let fx = Fixture::new();
        let (state, output) = (
            Place::Local(fx.state.clone()),
            Place::Local(fx.output.clone()),
        );
        race(state, output, &fx);
    }
}

#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn two_writers_on_s3() {
    for _ in 0..2 {
        let fx = Fixture::new();
        race(Place::s3("race-state"), Place::s3("race-output"), &fx);
    }
}
