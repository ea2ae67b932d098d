//! The state as operators see it: damaged objects stop the process with an error naming them
//! and nothing written; `gleaner state verify` and `inspect` report; a SIGKILL while the log is
//! being folded into a snapshot loses nothing; an emptied state is not silently re-ingested.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::support::{
    Fixture, OLD, assert_exactly_once, assert_state_verifies, files_with, gleaner,
    leave_interrupted_plan, path_counts, random_content, seeded_rng,
};

/// Every file under `dir` with its bytes.
fn snapshot_dir(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_with(dir, |_| true)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn restore_dir(dir: &Path, contents: &BTreeMap<PathBuf, Vec<u8>>) {
    let _ = std::fs::remove_dir_all(dir);
    for (path, bytes) in contents {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

fn state_cmd(fx: &Fixture, args: &[&str]) -> Output {
    gleaner()
        .arg("state")
        .args(args)
        .arg("--state")
        .arg(&fx.state)
        .output()
        .unwrap()
}

/// A way to damage an object: flip the bits of one byte, or keep only its first bytes.
enum Damage {
    Flip(usize),
    KeepFirst(usize),
}

#[test]
fn damaged_state_objects_stop_the_process_with_nothing_written() {
    let fx = Fixture::new();
    for i in 0..30 {
        fx.write(
            &format!("f{i:02}.log"),
            format!("file {i}\n").as_bytes(),
            OLD,
        );
    }
    // 10 generations of 3 files, a snapshot every 4: snapshot 8, deltas 9 and 10.
    fx.run_once(&[
        "--min-age",
        "0s",
        "--max-files",
        "3",
        "--snapshot-every",
        "4",
    ]);
    fx.write("late.log", b"late\n", OLD);
    leave_interrupted_plan(&fx, 11, "late.log");
    let objects = files_with(&fx.state, |_| true);
    let names: Vec<String> = objects
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "00000000000000000008.snapshot",
            "00000000000000000009.delta",
            "00000000000000000010.delta",
            "00000000000000000011.plan"
        ]
    );
    let pristine = snapshot_dir(&fx.state);
    let outputs_before = fx.output_objects();

    let mut cases = 0;
    for (object, name) in objects.iter().zip(&names) {
        let length = pristine[object].len();
        let damages = [
            ("magic", Damage::Flip(0)),
            ("version", Damage::Flip(4)),
            ("length", Damage::Flip(9)),
            ("middle", Damage::Flip(length / 2)),
            ("last byte", Damage::Flip(length - 1)),
            ("truncated by one", Damage::KeepFirst(length - 1)),
            ("truncated to 10 bytes", Damage::KeepFirst(10)),
        ];
        for (what, damage) in damages {
            restore_dir(&fx.state, &pristine);
            let mut bytes = pristine[object].clone();
            match damage {
                Damage::Flip(at) => bytes[at] ^= 0x41,
                Damage::KeepFirst(len) => bytes.truncate(len),
            }
            std::fs::write(object, &bytes).unwrap();
            let damaged = snapshot_dir(&fx.state);

            let out = fx.command(&["--once", "--min-age", "0s"]).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name}, {what}: {stderr}");
            assert_eq!(
                stderr.lines().count(),
                1,
                "{name}, {what}: one line: {stderr}"
            );
            assert!(
                stderr.contains(name.as_str()),
                "{name}, {what}: names the object: {stderr}"
            );
            assert_eq!(
                snapshot_dir(&fx.state),
                damaged,
                "{name}, {what}: state untouched"
            );
            assert_eq!(
                fx.output_objects(),
                outputs_before,
                "{name}, {what}: no output"
            );

            let verify = state_cmd(&fx, &["verify"]);
            let report = String::from_utf8_lossy(&verify.stdout);
            assert_eq!(verify.status.code(), Some(1), "{name}, {what}: {report}");
            assert!(report.contains(name.as_str()), "{name}, {what}: {report}");
            cases += 1;
        }
    }
    assert_eq!(cases, 28);

    // Undamaged, the same state verifies, and the interrupted batch is redone.
    restore_dir(&fx.state, &pristine);
    let verify = state_cmd(&fx, &["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    fx.run_once(&["--min-age", "0s"]);
    assert_eq!(path_counts(&fx.outputs()).len(), 31);
}

#[test]
fn inspect_reports_generation_files_and_objects() {
    let fx = Fixture::new();
    for i in 0..12 {
        fx.write(&format!("f{i:02}.log"), b"x y\n", OLD);
    }
    fx.run_once(&[
        "--min-age",
        "0s",
        "--max-files",
        "2",
        "--snapshot-every",
        "5",
    ]);
    let out = state_cmd(&fx, &["inspect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for expected in [
        "source id      test-source",
        "generation     6, committed 20",
        "tracked files  12 (12 done, 0 failed, 0 baselined)",
        "1 snapshot(s), newest at generation 5",
        "1 delta(s)",
        "interrupted    none",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let json = fx.inspect();
    assert_eq!(json["generation"], 6);
    assert_eq!(json["objects"]["snapshot_generation"], 5);
    assert_eq!(json["objects"]["deltas"], 1);

    let out = state_cmd(&fx, &["inspect", "--entries"]);
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 12);
    assert!(
        entries
            .iter()
            .all(|e| e["outcome"] == "done" && e["size"] == 4)
    );

    let out = gleaner()
        .args(["state", "inspect", "--state"])
        .arg(fx.root.join("nothing-here"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state found"));
}

#[test]
fn an_emptied_state_is_not_silently_reingested() {
    let fx = Fixture::new();
    for i in 0..8 {
        fx.write(&format!("f{i}.log"), b"data\n", OLD);
    }
    fx.run_once(&["--min-age", "0s", "--max-files", "3"]);
    assert_eq!(fx.output_objects().len(), 3);

    // The state is lost; the outputs are not.
    std::fs::remove_dir_all(&fx.state).unwrap();
    let out = fx.command(&["--once", "--min-age", "0s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains("is empty, but the output location already holds 3 batch(es)"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-rescan"), "{stderr}");
    assert_eq!(fx.output_objects().len(), 3, "nothing written");

    // Deliberately: every file again, in new objects after the existing ones.
    fx.run_once(&["--min-age", "0s", "--allow-rescan"]);
    let objects = fx.output_objects();
    assert_eq!(objects.len(), 4);
    assert!(objects[3].ends_with(format!("{}/{:020}.ndjson", fx.source_id, 4)));
    let counts = path_counts(&fx.outputs());
    assert!(counts.values().all(|&n| n == 2), "{counts:?}");
    // From now on, normal operation.
    fx.run_once(&["--min-age", "0s"]);
    assert_eq!(fx.output_objects().len(), 4);
}

#[test]
fn a_state_restored_from_an_older_copy_is_refused() {
    let fx = Fixture::new();
    fx.write("a.log", b"a\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    let old = snapshot_dir(&fx.state);
    fx.write("b.log", b"b\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    fx.write("c.log", b"c\n", OLD);
    fx.run_once(&["--min-age", "0s"]);
    restore_dir(&fx.state, &old);
    let out = fx.command(&["--once", "--min-age", "0s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restored from an older copy"), "{stderr}");

    // The same, with the copy holding an interrupted batch of its own (generation 2, whose
    // output may exist): generation 3 is still ahead, and no writer is active.
    leave_interrupted_plan(&fx, 2, "b.log");
    let out = fx.command(&["--once", "--min-age", "0s"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("restored from an older copy"), "{stderr}");
}

/// SIGKILL at random moments while every commit folds the log into a snapshot: whatever moment
/// the kill hits, the state loads, verifies, and holds exactly the files of the committed
/// generations. `GLEANER_SNAPSHOT_KILLS` sets the number of kills (default 30).
#[test]
fn sigkill_while_snapshotting_keeps_every_entry() {
    let kills: usize = std::env::var("GLEANER_SNAPSHOT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let fx = Fixture::new();
    let (mut rng, seed) = seeded_rng("snapshot-kill");
    let mut written = 0usize;
    let mut during_snapshot = 0;
    for kill in 0..kills {
        // Keep a backlog so that every run commits, and so snapshots.
        let target = fx.outputs().len() + 3000;
        while written < target {
            let name = format!("d{}/f{written:06}.log", written % 40);
            fx.write(&name, &random_content(&mut rng, 64), OLD);
            written += 1;
        }
        let log = fx.root.join(format!("snap-{kill:03}.log"));
        let mut child = fx
            .command(&[
                "--interval",
                "50ms",
                "--min-age",
                "0s",
                "--max-files",
                "300",
                "--snapshot-every",
                "1",
            ])
            .env("GLEANER_LOG", "info,scanner_core::telemetry=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(30..600)));
        assert!(
            child.try_wait().unwrap().is_none(),
            "gleaner exited by itself"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let last = text.lines().rev().find(|l| l.contains("snapshot"));
        if last.is_some_and(|l| l.contains("folding the state log")) {
            during_snapshot += 1;
        }

        // The state loads and verifies, and its entries are exactly the committed files.
        assert_state_verifies(&fx.state.display().to_string());
        let generation = fx.inspect()["generation"].as_u64().unwrap();
        let committed: BTreeSet<String> = fx
            .outputs()
            .into_iter()
            .filter(|(_, l)| l["generation"].as_u64().unwrap() <= generation)
            .map(|(_, l)| l["path"].as_str().unwrap().to_string())
            .collect();
        let out = state_cmd(&fx, &["inspect", "--entries"]);
        let entries: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            entries.len(),
            committed.len(),
            "kill {kill}: entries vs committed files"
        );
        assert_eq!(entries, committed, "kill {kill}");
    }
    eprintln!(
        "snapshot-kill: seed {seed}, {kills} SIGKILLs, {during_snapshot} while folding the log, \
         {written} files"
    );
    assert!(
        during_snapshot > 0,
        "no kill landed while a snapshot was being written"
    );

    fx.run_once(&["--min-age", "0s", "--max-files", "300"]);
    let counts = path_counts(&fx.outputs());
    assert_eq!(counts.len(), written);
    assert!(counts.values().all(|&n| n == 1));
    fx.assert_outputs_match_commits();
}

/// `gleaner state repair` for the fixture's source.
fn repair(fx: &Fixture) -> std::process::Output {
    gleaner()
        .args(["state", "repair", "--source-id", &fx.source_id])
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .arg("--watch")
        .arg(&fx.watch)
        .output()
        .unwrap()
}

#[test]
fn a_damaged_or_lost_last_delta_is_repaired_from_its_output_without_duplicates() {
    for lost in [false, true] {
        let fx = Fixture::new();
        let mut expected = BTreeMap::new();
        for wave in 0..2 {
            for i in 0..3 {
                let (rel, data) = (format!("w{wave}/f{i}.log"), format!("{wave} {i}\n"));
                fx.write(&rel, data.as_bytes(), OLD);
                expected.insert(rel, data.into_bytes());
            }
            fx.run_once(&[]);
        }
        let last = fx
            .state
            .join(&fx.source_id)
            .join(format!("{:020}.delta", 2));
        if lost {
            // Lost: the state is now behind its outputs, and a start refuses.
            std::fs::remove_file(&last).unwrap();
        } else {
            let mut bytes = std::fs::read(&last).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
            std::fs::write(&last, bytes).unwrap();
        }
        let out = fx.command(&["--once"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "lost {lost}: the start stops");

        let out = repair(&fx);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("committed generation 2 again from")
                && stdout.contains("3 file(s): 3 found unchanged"),
            "{stdout}"
        );
        assert_eq!(
            stdout.contains("set aside the damaged delta of generation 2"),
            !lost,
            "{stdout}"
        );
        assert_eq!(
            fx.state
                .join(&fx.source_id)
                .join(format!("{:020}.delta.damaged", 2))
                .exists(),
            !lost
        );

        // Back to normal: nothing is processed again, and new files go on from generation 3.
        fx.write("w2/new.log", b"new\n", OLD);
        expected.insert("w2/new.log".into(), b"new\n".to_vec());
        fx.run_once(&[]);
        assert_exactly_once(&fx.outputs(), &expected);
        fx.assert_outputs_match_commits();
        assert_eq!(fx.inspect()["generation"], 3);
    }
}

/// `gleaner run --once` over `watch`, with the fixture's state, outputs and source id.
fn once_over(fx: &Fixture, watch: &Path, extra: &[&str]) -> Output {
    gleaner()
        .args([
            "run",
            "--once",
            "--metrics-addr",
            "off",
            "--source-id",
            &fx.source_id,
        ])
        .arg("--watch")
        .arg(watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn two_watch_roots_under_one_source_id_are_refused_and_a_recreated_one_is_not() {
    // Before: two roots (two replicas given one GLEANER_SOURCE_ID) took turns after each
    // fencing exit, and each snapshot forgot the other's files: results were duplicated.
    let fx = Fixture::new();
    let other = fx.root.join("other-watch");
    let mut expected = BTreeMap::new();
    fx.write("a.log", b"a\n", OLD);
    expected.insert("a.log".to_string(), b"a\n".to_vec());
    fx.run_once(&[]);

    crate::support::write_aged(&other.join("b.log"), b"b\n", OLD);
    let out = once_over(&fx, &other, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("belongs to another watch root")
            && stderr.contains(&*fx.watch.canonicalize().unwrap().to_string_lossy())
            && stderr.contains(&*other.canonicalize().unwrap().to_string_lossy()),
        "names both roots: {stderr}"
    );
    // The first root goes on; the second wrote nothing.
    fx.write("c.log", b"c\n", OLD);
    expected.insert("c.log".to_string(), b"c\n".to_vec());
    fx.run_once(&[]);
    assert_exactly_once(&fx.outputs(), &expected);

    // A Pod recreated under its name, with a fresh emptyDir: the same directory on the same
    // host, a new root id. It goes on without --adopt-source.
    std::fs::remove_dir_all(&fx.watch).unwrap();
    fx.write("d.log", b"d\n", OLD);
    expected.insert("d.log".to_string(), b"d\n".to_vec());
    fx.run_once(&[]);
    assert_exactly_once(&fx.outputs(), &expected);

    // A deliberate move to another root: --adopt-source, once; then the old root is refused.
    let out = once_over(&fx, &other, &["--adopt-source"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expected.insert("b.log".to_string(), b"b\n".to_vec());
    assert_exactly_once(&fx.outputs(), &expected);
    let out = fx.command(&["--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        fx.inspect()["written_by"]
            .as_str()
            .unwrap()
            .contains("other-watch")
    );
    fx.assert_outputs_match_commits();
}
