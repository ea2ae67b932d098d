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
    write_files_from(fx, 0, count)
}

/// `count` files from number `first` on (new names after an earlier `write_files`).
fn write_files_from(fx: &Fixture, first: usize, count: usize) -> BTreeMap<String, Vec<u8>> {
    (first..first + count)
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
    let mut expected = write_files(&fx, 3000);
    // 48 descriptors for 3000 files: the runtime needs some, each worker one at a time.
    let out = Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(env!("CARGO_BIN_EXE_gleaner"))
        .args(["run", "--once", "--min-age", "0s", "--metrics-addr", "off"])
        .args(["--source-id", &fx.source_id, "--workers", "4", "--watch"])
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
    let more = write_files_from(&fx, 3000, 200);
    let log = fx.root.join("gleaner.log");
    let mut child = fx.spawn(&["--interval", "100ms", "--min-age", "0s"], &log);
    // Between scans: once the 200 new files are committed (a fixed wait after the start
    // could fall inside the scan that reads them, on a loaded machine).
    assert!(
        wait_until(Duration::from_secs(30), || fx.outputs().len() == 3200),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
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
    expected.extend(more);
    assert_exactly_once(&fx.outputs(), &expected);
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
    // Files already complete (an hour old): the event of the last one wakes the scan. 24 MiB:
    // at 12 MiB the batch took 2.9-3.3 s, at the edge of the three stall timeouts it must last.
    let expected: BTreeMap<String, Vec<u8>> = (0..12)
        .map(|i| {
            let data: Vec<u8> = format!("file {i} line with a few words in it\n")
                .into_bytes()
                .into_iter()
                .cycle()
                .take(2 << 20)
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

/// `count-by` with default flags over thousands of small files with long keys: each file's
/// result (its top 100 keys of 240 bytes) is larger than the file. One batch of all of them
/// used to hold every result and then the whole rendered object in memory (about twice the
/// input), and was OOM-killed under a container's limit on every attempt, so the source never
/// committed again. Under a 256 MiB cgroup (the chart's limit), the run must commit them all.
#[test]
fn count_by_with_results_larger_than_the_input_commits_under_a_memory_limit() {
    const LIMIT: u64 = 256 << 20;
    const FILES: usize = 6_000;
    let Some(group) = Cgroup::memory_limit(LIMIT) else {
        eprintln!("cannot create a memory-limited cgroup here (not root?): case not run");
        return;
    };
    let fx = Fixture::new();
    let mut input_bytes = 0;
    for file in 0..FILES {
        // 100 lines, each its own 240-byte key.
        let text: String = (0..100)
            .map(|line| format!("{:0>240}\n", format!("{file}-{line}-key")))
            .collect();
        input_bytes += text.len();
        fx.write(
            &format!("d{}/f{file:05}.log", file % 20),
            text.as_bytes(),
            OLD,
        );
    }
    let mut command = fx.command(&[
        "--once",
        "--processor",
        "count-by",
        "--key-regex",
        r"^(\S+)",
    ]);
    let log_path = fx.root.join("gleaner.log");
    let started = Instant::now();
    let mut child = group
        .command(&mut command)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("running gleaner");
    // The process's own peak (VmHWM), read until it exits: the group's peak also counts the
    // page cache of the outputs written.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let hwm = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(hwm);
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let oom = group.oom_kills();
    let batches = log.matches("committed batch").count();
    eprintln!(
        "count-by over {FILES} files ({} MB): {status} in {took:.1?}, {batches} batches, peak \
         RSS {} MiB (the group's peak with page cache {} MiB) under a {} MiB limit, {oom} OOM \
         kill(s)",
        input_bytes / 1_000_000,
        peak_rss_kib >> 10,
        group.memory_peak().map_or(0, |p| p >> 20),
        LIMIT >> 20
    );
    assert_eq!(oom, 0, "killed for memory: {log}");
    assert!(status.success(), "{status}: {log}");
    assert!(
        peak_rss_kib << 10 < 128 << 20,
        "a batch's memory is bounded by --max-output-bytes: peak RSS {} MiB",
        peak_rss_kib >> 10
    );
    let lines = fx.outputs();
    let counts = crate::support::path_counts(&lines);
    assert_eq!(counts.len(), FILES, "every file has a line");
    assert!(counts.values().all(|n| *n == 1), "each exactly once");
    for (_, line) in &lines {
        assert!(line.get("error").is_none(), "{line}");
        assert_eq!(line["result"]["lines"], 100);
        assert_eq!(line["result"]["top"].as_array().map(Vec::len), Some(100));
    }
    drop(group);
}

/// A file that runs the process out of memory by itself, whatever the batch (here `count-by`
/// asked to keep ten million keys, in a 64 MiB cgroup), restarted as a Job's pod would be:
/// redone whole once, then with fewer files, then given up with a clear error once it alone
/// killed the process several times. The files planned with it are committed, and it is
/// committed as failed (`abandoned`), instead of every attempt dying forever.
#[test]
fn a_file_that_kills_the_process_every_time_is_given_up_not_redone_forever() {
    const LIMIT: u64 = 64 << 20;
    let Some(group) = Cgroup::memory_limit(LIMIT) else {
        eprintln!("cannot create a memory-limited cgroup here (not root?): case not run");
        return;
    };
    let fx = Fixture::new();
    // Planned first (batches are in path order): a million distinct keys of 64 bytes.
    let mut poison = Vec::with_capacity(70 << 20);
    for line in 0..1_000_000 {
        poison.extend_from_slice(format!("{line:064}\n").as_bytes());
    }
    fx.write("a-poison.log", &poison, OLD);
    drop(poison);
    let good: BTreeMap<String, Vec<u8>> = ["b.log", "c.log"]
        .map(|name| {
            (
                name.to_string(),
                format!("{name} 1\n{name} 2\n").into_bytes(),
            )
        })
        .into();
    for (rel, data) in &good {
        fx.write(rel, data, OLD);
    }
    let flags = [
        "--once",
        "--processor",
        "count-by",
        "--key-regex",
        r"^(\S+)",
        "--top",
        "1000000",
    ];
    let mut runs = Vec::new();
    let mut logs = String::new();
    let mut last_log = String::new();
    while runs.len() < 20 {
        let out = group
            .command(&mut fx.command(&flags))
            .output()
            .expect("running gleaner");
        last_log = String::from_utf8_lossy(&out.stderr).into_owned();
        logs.push_str(&last_log);
        runs.push(out.status);
        if out.status.success() {
            break;
        }
        assert_eq!(
            out.status.code(),
            None,
            "only the OOM killer ends a run: {last_log}"
        );
    }
    let oom = group.oom_kills();
    eprintln!(
        "a poison file in a {} MiB cgroup: {} runs ({} killed, {oom} OOM kills), the last {}",
        LIMIT >> 20,
        runs.len(),
        runs.iter().filter(|s| !s.success()).count(),
        runs.last().unwrap()
    );
    assert!(
        runs.last().unwrap().success(),
        "still dying after 20 runs: {last_log}"
    );
    assert!(
        oom >= 9,
        "the poison file killed the process: {oom} OOM kills"
    );
    assert!(
        logs.contains("redoing it with its first files only"),
        "cut before given up: {logs}"
    );
    let lines = fx.outputs();
    let counts = crate::support::path_counts(&lines);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    for (_, line) in &lines {
        if line["path"] == "a-poison.log" {
            let error = line["error"].as_str().unwrap_or_else(|| panic!("{line}"));
            assert!(
                error.starts_with("abandoned: the process ended abnormally"),
                "{error}"
            );
        } else {
            assert!(line.get("error").is_none(), "{line}");
            assert_eq!(line["result"]["lines"], 2);
        }
    }
    assert!(
        last_log.contains("a-poison.log") && last_log.contains("abandoned"),
        "the failure is logged with its reason: {last_log}"
    );
    drop(group);
}

/// The environment and arguments of a running process, from `/proc`.
fn environ_and_args(pid: u32) -> (Vec<String>, Vec<String>) {
    let read = |what: &str| -> Vec<String> {
        std::fs::read(format!("/proc/{pid}/{what}"))
            .unwrap()
            .split(|&byte| byte == 0)
            .filter(|item| !item.is_empty())
            .map(|item| String::from_utf8_lossy(item).into_owned())
            .collect()
    };
    (read("environ"), read("cmdline"))
}

/// The `GLIBC_TUNABLES=` entries of a process's initial environment. glibc 2.36 ends each
/// tunable's value in place with a NUL while it reads them, so in `/proc/PID/environ` the ones
/// after the first look like entries of their own: they are joined back with colons.
fn glibc_tunables(environ: &[String]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut in_tunables = false;
    for var in environ {
        if var.starts_with("GLIBC_TUNABLES=") {
            found.push(var.clone());
            in_tunables = true;
        } else if in_tunables && var.starts_with("glibc.") {
            let last = found.last_mut().unwrap();
            last.push(':');
            last.push_str(var);
        } else {
            in_tunables = false;
        }
    }
    found
}

/// A watching sidecar runs without glibc's per-thread caches of freed blocks, which made its
/// RSS rise for hours under a steady emitter (`memory::restart_without_thread_caches`): same
/// process, same arguments, the tunable added to those already set; a count the user chose
/// is kept.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_watching_sidecar_runs_without_the_threads_caches_of_freed_blocks() {
    let cases = [
        ("", "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"),
        (
            "glibc.malloc.perturb=0",
            "GLIBC_TUNABLES=glibc.malloc.perturb=0:glibc.malloc.tcache_count=0",
        ),
        (
            "glibc.malloc.tcache_count=3",
            "GLIBC_TUNABLES=glibc.malloc.tcache_count=3",
        ),
    ];
    for (given, expected) in cases {
        let mut fx = Fixture::new();
        fx.env.push(("GLIBC_TUNABLES", given.to_string()));
        let served = Served::start(&fx, &["--interval", "1h"]);
        let (environ, args) = environ_and_args(served.child.id());
        let tunables = glibc_tunables(&environ);
        // Only a started process serves /metrics, so this is the one that runs the scans.
        let metrics = crate::http::get(&served.addr, "/metrics").1;
        sigterm(&served.child);
        let (status, log) = served.wait(Duration::from_secs(30));

        assert_eq!(tunables, [expected], "given {given:?}");
        assert_eq!(args[0], env!("CARGO_BIN_EXE_gleaner"));
        assert_eq!(
            args[1..],
            fx.command(&["--interval", "1h", "--metrics-addr", "127.0.0.1:0"])
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        );
        assert!(metrics.contains("gleaner_scans_total"), "{metrics}");
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{log:#?}");
    }
}
