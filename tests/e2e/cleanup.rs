//! Cleanup after commit (`--after=delete`, `--after=move:DIR`, `--quarantine`) under SIGKILL at
//! random moments: a file leaves the watch directory only once its result is committed, every
//! file is processed exactly once, and in the end no committed file is left behind.
//!
//! `GLEANER_CLEANUP_KILLS` sets the kills per mode (default 30); `GLEANER_TEST_SEED` replays.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Fixture, OLD, assert_exactly_once, files_with, random_content, seeded_rng, wait_with_timeout,
};

/// Paths (relative to the watch root) whose results are committed: the output lines of
/// generations up to the committed one (a flushed but uncommitted batch does not count).
fn committed_paths(fx: &Fixture) -> BTreeSet<String> {
    let inspection = fx.inspect();
    let generation = inspection["generation"].as_u64().unwrap_or(0);
    fx.outputs()
        .into_iter()
        .filter(|(_, line)| line["generation"].as_u64().unwrap() <= generation)
        .map(|(_, line)| line["path"].as_str().unwrap().to_string())
        .collect()
}

fn relative_files(dir: &Path) -> BTreeSet<String> {
    files_with(dir, |_| true)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The files still in the watch directory, by the path they were listed under: a file that a
/// kill caught between taking its private name (`.gleaner-cleanup.<name>`, the first step of
/// its cleanup) and leaving is still here, and the next run finishes it.
fn watched_files(dir: &Path) -> BTreeSet<String> {
    relative_files(dir)
        .into_iter()
        .map(|rel| match rel.rsplit_once('/') {
            Some((parent, name)) => match name.strip_prefix(".gleaner-cleanup.") {
                Some(name) => format!("{parent}/{name}"),
                None => rel,
            },
            None => rel
                .strip_prefix(".gleaner-cleanup.")
                .map_or(rel.clone(), str::to_string),
        })
        .collect()
}

fn campaign(mode: &str) {
    let kills: usize = std::env::var("GLEANER_CLEANUP_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let fx = Fixture::new();
    let moved_to = fx.root.join("done");
    let after = match mode {
        "delete" => "delete".to_string(),
        _ => format!("move:{}", moved_to.display()),
    };
    let (mut rng, seed) = seeded_rng(&format!("cleanup_{mode}"));
    let started = Instant::now();
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut wave = 0;
    let mut add_files =
        |rng: &mut fastrand::Rng, expected: &mut BTreeMap<String, Vec<u8>>, count| {
            wave += 1;
            for i in 0..count {
                let rel = format!("w{wave:03}/d{}/f{i:04}.log", i % 7);
                let data = random_content(rng, 3000);
                crate::support::emit(&fx.watch, &rel, &data);
                expected.insert(rel, data);
            }
        };
    add_files(&mut rng, &mut expected, 600);

    let flags = [
        "--interval",
        "50ms",
        "--min-age",
        "0s",
        "--max-files",
        "9",
        "--workers",
        "2",
        "--after",
        &after,
    ];
    let mut cleaned_in_runs = 0;
    let mut resumed_cleanups = 0;
    for kill in 0..kills {
        // Keep a backlog, so that kills land while batches are processed, committed and
        // cleaned up.
        let waiting = relative_files(&fx.watch).len();
        if waiting < 300 {
            add_files(&mut rng, &mut expected, 300 - waiting);
        }
        let log = fx.root.join(format!("run-{kill:03}.log"));
        let mut child = fx.spawn(&flags, &log);
        std::thread::sleep(Duration::from_millis(rng.u64(5..250)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "gleaner exited by itself ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("panicked"), "{text}");
        resumed_cleanups += text.matches("cleaning up committed files left by").count();

        // Whatever left the watch directory must be committed.
        let present = watched_files(&fx.watch);
        let committed = committed_paths(&fx);
        let left: Vec<&String> = expected.keys().filter(|p| !present.contains(*p)).collect();
        cleaned_in_runs = left.len();
        let uncommitted: Vec<&&String> = left.iter().filter(|p| !committed.contains(**p)).collect();
        assert!(
            uncommitted.is_empty(),
            "kill {kill} (seed {seed}): files left the watch directory before their commit: {uncommitted:?}"
        );
        if mode == "move" {
            let moved = relative_files(&moved_to);
            for rel in &left {
                assert!(moved.contains(*rel), "{rel} neither here nor moved");
                assert_eq!(
                    &std::fs::read(moved_to.join(rel)).unwrap(),
                    &expected[*rel],
                    "{rel} moved with other contents"
                );
            }
        }
    }

    let mut child = fx
        .command(&["--once", "--min-age", "0s", "--after", &after])
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(300)).expect("final --once");
    assert!(status.success());

    let leftover: Vec<String> = watched_files(&fx.watch)
        .into_iter()
        .filter(|p| expected.contains_key(p))
        .collect();
    assert!(
        leftover.is_empty(),
        "committed files left behind: {leftover:?}"
    );
    let private: Vec<String> = relative_files(&fx.watch)
        .into_iter()
        .filter(|p| p.contains(".gleaner-cleanup."))
        .collect();
    assert!(private.is_empty(), "cleanups left unfinished: {private:?}");
    assert_exactly_once(&fx.outputs(), &expected);
    if mode == "move" {
        let moved = relative_files(&moved_to);
        assert_eq!(
            moved,
            expected.keys().cloned().collect::<BTreeSet<_>>(),
            "every file moved once, nothing else (no duplicate copies)"
        );
        for (rel, data) in &expected {
            assert_eq!(&std::fs::read(moved_to.join(rel)).unwrap(), data, "{rel}");
        }
    }
    fx.assert_outputs_match_commits();
    eprintln!(
        "cleanup {mode}: seed {seed}, {kills} SIGKILLs, {} files, each committed once, \
         {cleaned_in_runs} cleaned before the last run, {resumed_cleanups} runs finished a \
         cleanup a kill had cut short, none left behind, {:.1?}",
        expected.len(),
        started.elapsed()
    );
}

#[test]
fn after_delete_under_sigkill_deletes_only_committed_files() {
    campaign("delete");
}

#[test]
fn after_move_under_sigkill_moves_only_committed_files_once() {
    campaign("move");
}

#[test]
fn failed_files_go_to_quarantine_and_processed_ones_stay_with_keep() {
    let fx = Fixture::new();
    fx.write("good.log", b"fine\n", OLD);
    let mut corrupt = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    corrupt.extend_from_slice(&[0x55; 64]);
    fx.write("sub/bad.gz", &corrupt, OLD);
    let quarantine = fx.root.join("quarantine");
    fx.run_once(&["--quarantine", quarantine.to_str().unwrap()]);
    assert!(
        fx.watch.join("good.log").exists(),
        "--after keep by default"
    );
    assert!(!fx.watch.join("sub/bad.gz").exists());
    assert_eq!(
        std::fs::read(quarantine.join("sub/bad.gz")).unwrap(),
        corrupt
    );

    // Committed while cleanup was off (as if killed between commit and cleanup): the next run
    // cleans them up from the state, and touches nothing uncommitted.
    fx.write("later.log", b"later\n", OLD);
    fx.run_once(&["--after", "delete", "--include", "good.log"]);
    assert!(!fx.watch.join("good.log").exists(), "cleaned up from state");
    assert!(
        fx.watch.join("later.log").exists(),
        "never committed: untouched"
    );

    // A destination inside the watch directory is refused.
    let out = fx
        .command(&[
            "--once",
            "--after",
            &format!("move:{}", fx.watch.join("done").display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("inside the watched directory"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_different_file_at_the_destination_is_never_taken_for_our_copy() {
    // Before: a file at the destination with the same size and modification time was taken
    // for an interrupted copy of ours, and the source was deleted: its bytes were lost.
    let fx = Fixture::new();
    let done = fx.root.join("done");
    let ours = b"our bytes\n".to_vec();
    let source = fx.write("a.log", &ours, OLD);
    std::fs::create_dir_all(&done).unwrap();
    std::fs::write(done.join("a.log"), b"not ours!\n").unwrap();
    let mtime = std::fs::metadata(&source).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(done.join("a.log"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fx.run_once(&["--after", &format!("move:{}", done.display())]);
    assert_exactly_once(
        &fx.outputs(),
        &BTreeMap::from([("a.log".to_string(), ours.clone())]),
    );
    assert_eq!(std::fs::read(done.join("a.log")).unwrap(), b"not ours!\n");
    assert_eq!(std::fs::read(done.join("a.log.1")).unwrap(), ours);
    assert!(!source.exists());
}

/// Runs `--once` `rounds` times with `--after move:DIR --snapshot-every 1`, a new file before
/// each run (so that each commits, and snapshots: a snapshot forgets what its walk did not
/// find). Returns every file written and the logs.
fn rounds_of_moves(
    fx: &Fixture,
    done: &Path,
    rounds: usize,
) -> (BTreeMap<String, Vec<u8>>, String) {
    let mut written = BTreeMap::new();
    let mut logs = String::new();
    for round in 0..rounds {
        let rel = format!("r{round}.log");
        let data = format!("round {round}\n").into_bytes();
        fx.write(&rel, &data, OLD);
        written.insert(rel, data);
        let out = fx.run_once(&[
            "--after",
            &format!("move:{}", done.display()),
            "--snapshot-every",
            "1",
        ]);
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (written, logs)
}

/// A move that keeps failing (here: the destination name and its `.<generation>` alternative
/// are both taken by other files) leaves the committed file waiting under its private name.
/// It must stay known as committed: before, the next snapshot forgot it (its name was no
/// longer listed), then it was put back and processed a second time.
#[test]
fn a_move_that_keeps_failing_on_taken_names_never_processes_the_file_again() {
    let fx = Fixture::new();
    let done = fx.root.join("done");
    std::fs::create_dir_all(&done).unwrap();
    let mut expected = BTreeMap::new();
    for name in ["a.log", "b.log"] {
        let data = format!("{name} committed once\n").into_bytes();
        fx.write(name, &data, OLD);
        expected.insert(name.to_string(), data);
        // Other files already hold both names the move could take (generation 1).
        for taken in [name.to_string(), format!("{name}.1")] {
            std::fs::write(done.join(taken), b"someone else's\n").unwrap();
        }
    }
    let (written, logs) = rounds_of_moves(&fx, &done, 4);
    expected.extend(written);
    assert_exactly_once(&fx.outputs(), &expected);
    assert!(
        logs.matches("cleanup failed").count() >= 8,
        "retried at every run, and said so: {logs}"
    );
    assert!(!logs.contains("put back"), "{logs}");
    // Still waiting for their move, not lost either.
    for name in ["a.log", "b.log"] {
        let private = fx.watch.join(format!(".gleaner-cleanup.{name}"));
        assert!(
            private.exists() || fx.watch.join(name).exists(),
            "{name} is still in the watched directory"
        );
    }
}

/// The same with a full archive volume: the copy across file systems fails with ENOSPC.
#[test]
fn a_move_that_keeps_failing_on_a_full_archive_volume_never_processes_the_file_again() {
    let fx = Fixture::new();
    let Some(archive) = crate::support::SmallVolume::mount(fx.root.join("done"), "64k") else {
        eprintln!("cannot mount a tmpfs here (not root?): full archive volume case not run");
        return;
    };
    let mut expected = BTreeMap::new();
    for name in ["a.log", "b.log"] {
        // Larger than the archive volume: its copy fails with ENOSPC.
        let data: Vec<u8> = format!("{name} is too large for the archive\n")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(256 << 10)
            .collect();
        fx.write(name, &data, OLD);
        expected.insert(name.to_string(), data);
    }
    let (written, logs) = rounds_of_moves(&fx, &archive.0, 4);
    expected.extend(written);
    assert_exactly_once(&fx.outputs(), &expected);
    assert!(logs.contains("No space left on device"), "{logs}");
    assert!(!logs.contains("put back"), "{logs}");
    drop(archive);
}

/// The uid contract: Gleaner deletes and moves files as its own user, so it needs write
/// permission on their directories (a group-writable directory of the Pod's `fsGroup`, umask
/// 002 in the emitter). Where it lacks it, the error says so and names the directory, and the
/// file stays committed, tried again at every scan.
#[test]
fn a_directory_gleaner_cannot_write_is_named_in_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("not root: cannot run gleaner as another user; case not run");
        return;
    }
    let data = b"written by the emitter as root, umask 022\n".to_vec();
    fx.write("app/a.log", &data, OLD);
    // The emitter's directory: its own, not writable by Gleaner's uid (65534).
    std::fs::set_permissions(fx.watch.join("app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&fx.root, &fx.watch] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_gleaner"))
        .args([
            "run",
            "--once",
            "--metrics-addr",
            "off",
            "--after",
            "delete",
        ])
        .args(["--source-id", &fx.source_id, "--watch"])
        .arg(&fx.watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_exactly_once(
        &fx.outputs(),
        &BTreeMap::from([("app/a.log".to_string(), data)]),
    );
    assert!(fx.watch.join("app/a.log").exists(), "left in place");
    let line = log
        .lines()
        .find(|l| l.contains("cleanup failed"))
        .unwrap_or_else(|| panic!("no cleanup error: {log}"));
    assert!(
        line.contains("permission denied")
            && line.contains(&*fx.watch.join("app").to_string_lossy())
            && line.contains("uid 65534")
            && line.contains("group-writable"),
        "names the directory, the uid and what the emitter must do: {line}"
    );
}

/// The value of `gleaner_tracked_files` on a running sidecar's metrics endpoint.
fn tracked_files(addr: &str) -> Option<u64> {
    let (_, body) = crate::http::get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("gleaner_tracked_files "))
        .and_then(|v| v.trim().parse().ok())
}

/// A sidecar under a steady writer with `--after delete` kept the entry of every file it had
/// deleted until a snapshot (every 64 generations: a minute of files at one scan a second, and
/// their memory for good). They are forgotten as the scan that deleted them ends.
#[test]
fn with_after_delete_the_state_forgets_deleted_files_without_waiting_for_a_snapshot() {
    let fx = Fixture::new();
    let served = crate::support::Served::start(&fx, &["--after", "delete", "--min-age", "0s"]);
    let mut expected = BTreeMap::new();
    for i in 0..40 {
        let rel = format!("f-{i:02}.log");
        let data = format!("line {i}\n").into_bytes();
        std::fs::write(fx.watch.join(&rel), &data).unwrap();
        expected.insert(rel, data);
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_deleted = || files_with(&fx.watch, |name| name.ends_with(".log")).is_empty();
    assert!(crate::support::wait_until(
        Duration::from_secs(30),
        all_deleted
    ));
    // One more file: its commit sets the gauge, after the scans that deleted the others ended
    // with them forgotten.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(
        fx.watch.join("last.log"),
        b"last
",
    )
    .unwrap();
    expected.insert(
        "last.log".to_string(),
        b"last
"
        .to_vec(),
    );
    assert!(crate::support::wait_until(
        Duration::from_secs(30),
        all_deleted
    ));
    let tracked = tracked_files(&served.addr);
    let forgotten = tracked.is_some_and(|n| n <= 2);
    crate::support::sigterm(&served.child);
    let (status, log) = served.wait(Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{log:?}");
    assert!(
        forgotten,
        "gleaner_tracked_files {tracked:?} after every file was deleted"
    );
    assert_exactly_once(&fx.outputs(), &expected);
}
