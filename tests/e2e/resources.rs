//! Resource limits: a full state volume (writes fail with ENOSPC; no damaged state, and the
//! same process recovers when space returns), and an open-file limit far below the number of
//! files (no crash; files are never held open between scans).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Cgroup, Fixture, OLD, Served, SmallVolume, assert_exactly_once, assert_state_verifies,
    http_get, sigterm, wait_until, wait_with_timeout,
};

fn write_files(fx: &Fixture, count: usize) -> BTreeMap<String, Vec<u8>> {
    (0..count)
        .map(|i| {
            let rel = format!("d{}/f{i:05}.log", i % 10);
            let data = format!("line {i}\nanother line\n").into_bytes();
            fx.write(&rel, &data, OLD);
            (rel, data)
        })
        .collect()
}

#[test]
fn a_full_state_volume_stops_commits_without_damage_and_recovers_in_place() {
    let fx = Fixture::new();
    let Some(volume) = SmallVolume::mount(fx.root.join("statevol"), "512k") else {
        eprintln!("cannot mount a tmpfs here (not root?): full-volume case not run");
        return;
    };
    let state = volume.0.join("state");
    let expected = write_files(&fx, 1500);
    // Leave almost no room: the first commits fit, then writes fail with ENOSPC.
    let filler = volume.0.join("filler");
    std::fs::write(&filler, vec![0u8; 440 << 10]).unwrap();

    let log = fx.root.join("gleaner.log");
    let mut child = crate::support::gleaner()
        .args([
            "run",
            "--interval",
            "50ms",
            "--min-age",
            "0s",
            "--max-files",
            "20",
        ])
        .args([
            "--metrics-addr",
            "off",
            "--source-id",
            "full",
            "--snapshot-every",
            "8",
        ])
        .arg("--watch")
        .arg(&fx.watch)
        .arg("--state")
        .arg(&state)
        .arg("--output")
        .arg(&fx.output)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("scan failed; will retry"))
        }),
        "the volume never filled: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    let stuck_at = fx.outputs().len();
    assert!(stuck_at < expected.len(), "it filled before the end");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running while the volume is full"
    );

    // Space returns: the same process goes on and commits everything.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || fx.outputs().len()
            >= expected.len()),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert_exactly_once(&fx.outputs(), &expected);
    assert_state_verifies(&state.display().to_string());
    eprintln!(
        "full volume: commits stopped at {stuck_at} of {} files, resumed after space returned, \
         {} scan failures logged, all exactly once",
        expected.len(),
        text.matches("scan failed; will retry").count()
    );
}

#[test]
fn an_open_file_limit_below_the_file_count_is_no_problem() {
    let fx = Fixture::new();
    let expected = write_files(&fx, 3000);
    // 48 descriptors for 3000 files: the runtime needs some, each worker one at a time.
    let out = Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(env!("CARGO_BIN_EXE_gleaner"))
        .args(["run", "--once", "--min-age", "0s", "--metrics-addr", "off"])
        .args(["--source-id", "nofile", "--workers", "4", "--watch"])
        .arg(&fx.watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .output();
    let Ok(out) = out else {
        eprintln!("prlimit is missing: open-file case not run");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&fx.outputs(), &expected);

    // A running collector holds no input file open between scans.
    let more = write_files(&fx, 200);
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&["--interval", "100ms", "--min-age", "0s"], &log);
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("gleaner started"))
    }));
    std::thread::sleep(Duration::from_millis(800));
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| {
            target.starts_with(&fx.watch.display().to_string())
                && target != &fx.watch.display().to_string()
                // A walk in progress (a scan every 100 ms) reads directories: only files count.
                && std::path::Path::new(target).is_file()
        })
        .collect();
    sigterm(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert!(
        held.is_empty(),
        "input files held open between scans: {held:?}"
    );
    assert_eq!(more.len(), 200);
}

/// A batch slower than `--stall-timeout` that advances: the process is throttled to a few
/// percent of a core (a CPU limit, as a container's), and `/livez` must answer 200 all along,
/// since the workers read and finish files; a liveness probe would otherwise restart the
/// container and the same planned batch would be redone, forever.
#[test]
fn a_batch_slower_than_the_stall_timeout_that_advances_is_never_stalled() {
    const STALL: Duration = Duration::from_secs(1);
    let fx = Fixture::new();
    let served = Served::start(
        &fx,
        &[
            "--interval",
            "1h",
            "--stall-timeout",
            "1s",
            "--workers",
            "1",
        ],
    );
    let Some(throttle) = Cgroup::cpu_quota(3) else {
        eprintln!("cannot create a CPU-limited cgroup here (not root?): slow batch case not run");
        return;
    };
    throttle.add(served.child.id());
    // Files already complete (an hour old): the event of the last one wakes the scan.
    let expected: BTreeMap<String, Vec<u8>> = (0..12)
        .map(|i| {
            let data: Vec<u8> = format!("file {i} line with a few words in it\n")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(1 << 20)
                .collect();
            (format!("big/f{i:02}.log"), data)
        })
        .collect();
    for (rel, data) in &expected {
        fx.write(rel, data, OLD);
    }
    let started = Instant::now();
    let mut probes = Vec::new();
    while fx.outputs().is_empty() && started.elapsed() < Duration::from_secs(120) {
        let answer = http_get(&served.addr, "/livez", Duration::from_secs(3));
        probes.push((started.elapsed(), answer));
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    sigterm(&served.child);
    let (status, log) = served.wait(Duration::from_secs(60));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log:#?}");
    assert_exactly_once(&fx.outputs(), &expected);
    let batch = log
        .iter()
        .find_map(|line| {
            let line = line.strip_suffix('s')?;
            line.contains("committed batch")
                .then(|| line.rsplit("elapsed=").next()?.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no committed batch with its time: {log:#?}"));
    assert!(
        batch > 3.0 * STALL.as_secs_f64(),
        "the batch took {batch:.1} s, not longer than three stall timeouts: throttle harder"
    );
    let failed: Vec<_> = probes
        .iter()
        .filter(|(_, answer)| !matches!(answer, Ok((200, _))))
        .collect();
    eprintln!(
        "slow batch: {batch:.1} s at 3 % of a core ({took:.1?} until its output), stall timeout \
         1 s: {} /livez probes, {} not 200",
        probes.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:#?}");
    drop(throttle);
}
