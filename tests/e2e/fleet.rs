//! `gleaner state list` and `gleaner state gc` over several source ids under one state root:
//! gc removes only the idle sources, a dry run removes nothing, and a live writer committing
//! while gc runs keeps its state and goes on.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// `gleaner state <args> --state <state>`: its standard output, asserting it succeeded. Run
/// with the live writer's `GLEANER_SOURCE_ID`, as in its container: `list` and `gc` still look
/// at every source.
fn state_command(state: &Place, args: &[&str]) -> String {
    let out = gleaner()
        .arg("state")
        .args(args)
        .args(["--state", &state.arg()])
        .env("GLEANER_SOURCE_ID", "live")
        .output()
        .expect("running gleaner state");
    assert!(
        out.status.success(),
        "gleaner state {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `gleaner state list --json`, one object per source id.
fn listed(state: &Place) -> Vec<Value> {
    state_command(state, &["list", "--json"])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn listed_ids(state: &Place) -> Vec<String> {
    let sources = listed(state);
    let ids = sources
        .iter()
        .map(|s| s["source_id"].as_str().unwrap().to_string());
    ids.collect()
}

/// A fixture of source id `id` over its own directory, with the shared state and output.
fn member(id: &str, state: &Place, output: &Place) -> Fixture {
    let mut fx = Fixture::new();
    fx.state = PathBuf::from(state.arg());
    fx.output = PathBuf::from(output.arg());
    fx.source_id = id.into();
    fx
}

/// A background `gleaner run`, killed if a failed assertion leaves it running.
struct Writer(std::process::Child);

impl Drop for Writer {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn fleet(state: Place, output: Place) {
    for id in ["idle-a", "idle-b"] {
        let fx = member(id, &state, &output);
        fx.write("one.log", b"one\n", OLD);
        fx.run_once(&[]);
    }
    let live = member("live", &state, &output);
    live.write("first.log", b"first\n", OLD);
    let mut writer = Writer(live.spawn(&["--interval", "200ms"], &live.root.join("live.log")));
    let committed =
        |fx: &Fixture| inspect_state(&state.arg(), &fx.source_id)["generation"].as_u64();
    assert!(wait_until(Duration::from_secs(20), || committed(&live) >= Some(1)));
    std::thread::sleep(Duration::from_millis(1100));

    let sources = listed(&state);
    assert_eq!(listed_ids(&state), ["idle-a", "idle-b", "live"]);
    for idle in &sources[..2] {
        assert!(idle["live_writer"].is_null(), "{idle}");
        assert_eq!(
            (&idle["generation"], &idle["tracked_files"]),
            (&1.into(), &1.into())
        );
        assert!(idle["idle_seconds"].as_u64() >= Some(1), "{idle}");
    }
    let pid = writer.0.id().to_string();
    assert!(
        sources[2]["live_writer"].as_str().unwrap().contains(&pid),
        "{}",
        sources[2]
    );

    // A dry run by default: it says what it would remove, and removes nothing.
    let dry = state_command(&state, &["gc", "--idle-for", "1s"]);
    assert!(
        dry.contains("would remove idle-a") && dry.contains("would remove idle-b"),
        "{dry}"
    );
    assert!(dry.contains("kept live: its writer is live"), "{dry}");
    assert_eq!(listed_ids(&state), ["idle-a", "idle-b", "live"]);

    // Files keep arriving while gc runs, with no idle time asked: only the lease keeps the
    // live writer's state.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicUsize::new(1));
    let feeder = {
        let (writing, written, watch) = (writing.clone(), written.clone(), live.watch.clone());
        std::thread::spawn(move || {
            while writing.load(Ordering::SeqCst) {
                let n = written.fetch_add(1, Ordering::SeqCst);
                write_aged(&watch.join(format!("f-{n:04}.log")), b"line\n", OLD);
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    };
    // gc runs again and again until the writer has committed twice meanwhile.
    let before = committed(&live).unwrap();
    let started = std::time::Instant::now();
    while committed(&live).unwrap() < before + 2 {
        let gc = state_command(&state, &["gc", "--idle-for", "0s", "--delete"]);
        assert!(gc.contains("kept live: its writer is live"), "{gc}");
        assert!(!gc.contains("removed live"), "{gc}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no commit in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    writing.store(false, Ordering::SeqCst);
    feeder.join().unwrap();
    assert_eq!(listed_ids(&state), ["live"], "the idle sources are gone");

    // The live writer goes on: every file is committed, once, and its state is sound.
    let files = written.load(Ordering::SeqCst);
    let tracked = || inspect_state(&state.arg(), "live")["tracked_files"].as_u64();
    assert!(wait_until(Duration::from_secs(30), || tracked() == Some(files as u64)));
    sigterm(&writer.0);
    let status = wait_with_timeout(&mut writer.0, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_state_verifies(&state.arg());
    let lines: Vec<_> = output
        .outputs()
        .into_iter()
        .filter(|(_, line)| line["source_id"] == "live")
        .collect();
    let counts = path_counts(&lines);
    assert_eq!(counts.len(), files, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    // Its clean exit released its lease: the source is idle now, and collectable.
    let after = state_command(&state, &["gc", "--idle-for", "0s"]);
    assert!(after.contains("would remove live"), "{after}");
}

#[test]
fn gc_removes_only_idle_sources_on_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    fleet(
        Place::Local(dir.path().join("state")),
        Place::Local(dir.path().join("output")),
    );
}

#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn gc_removes_only_idle_sources_on_s3() {
    fleet(Place::s3("fleet-state"), Place::s3("fleet-output"));
}

/// A source whose writer was killed keeps its lease: gc keeps it, whatever the idle time.
#[test]
fn a_killed_writers_lease_keeps_its_source() {
    let fx = Fixture::new();
    fx.write("a.log", b"a\n", OLD);
    let mut writer = Writer(fx.spawn(&["--interval", "1h"], &fx.root.join("log")));
    let state = Place::Local(fx.state.clone());
    assert!(wait_until(Duration::from_secs(20), || {
        fx.state.join(&fx.source_id).join("writer.lease").exists()
    }));
    writer.0.kill().unwrap();
    writer.0.wait().unwrap();
    let gc = state_command(&state, &["gc", "--idle-for", "0s", "--delete"]);
    assert!(gc.contains("kept test-source: its writer is live"), "{gc}");
    assert_eq!(listed_ids(&state), ["test-source"]);
}
