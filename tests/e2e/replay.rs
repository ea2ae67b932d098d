//! `gleaner state replay`: committed files processed again on purpose, under new generations
//! whose lines say `"replay":true`, with nothing else changed — on local storage and on S3.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Fixture, OLD, Place, inspect_state, reference_stats, sigterm, wait_until, wait_with_timeout,
};

/// `gleaner state replay` with the fixture's flags (as `gleaner run` takes them) and `extra`.
fn replay(fx: &Fixture, extra: &[&str]) -> std::process::Output {
    let mut cmd = crate::support::gleaner();
    cmd.args(["state", "replay", "--watch"])
        .arg(&fx.watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .args(["--source-id", &fx.source_id])
        .args(extra)
        .envs(fx.env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("running gleaner state replay")
}

/// Output lines by object, as text, and the lines marked as replays.
fn lines_by_object(output: &Place) -> (BTreeMap<String, Vec<String>>, Vec<Value>) {
    let mut objects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut replays = Vec::new();
    for (object, line) in output.outputs() {
        if line.get("replay").is_some() {
            replays.push(line.clone());
        }
        objects
            .entry(object.display().to_string())
            .or_default()
            .push(line.to_string());
    }
    (objects, replays)
}

/// Commits three files with default flags, replays two of them by name, and checks that the
/// replay added one object of two marked lines and changed nothing else: the earlier object,
/// the third file's record, and what a later run collects.
fn two_named_files_are_replayed_and_nothing_else_changes(fx: &Fixture, output: &Place) {
    let files = [
        ("a.log", &b"alpha beta\ngamma\n"[..]),
        ("sub/b.log", b"one\n"),
        ("c.log", b"untouched\n"),
    ];
    for (rel, bytes) in files {
        fx.write(rel, bytes, OLD);
    }
    fx.run_once(&[]);
    let (before, none) = lines_by_object(output);
    assert_eq!((before.len(), none.len()), (1, 0), "{before:?}");

    let out = replay(fx, &["a.log", "sub/b.log"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("replayed 2 file(s) as generation 2"),
        "{stdout}"
    );

    let (after, replays) = lines_by_object(output);
    assert_eq!(after.len(), 2, "one more object: {after:?}");
    for (object, lines) in &before {
        assert_eq!(
            after.get(object),
            Some(lines),
            "the first object is untouched"
        );
    }
    let mut replayed: Vec<(&str, &Value)> = replays
        .iter()
        .map(|line| (line["path"].as_str().unwrap(), line))
        .collect();
    replayed.sort_by_key(|(path, _)| *path);
    assert_eq!(
        replayed.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        ["a.log", "sub/b.log"]
    );
    for (path, line) in &replayed {
        let bytes = files.iter().find(|(rel, _)| rel == path).unwrap().1;
        assert_eq!(line["replay"], true);
        assert_eq!(line["generation"], 2);
        assert_eq!(line["result"], reference_stats(bytes), "{path}");
    }

    // The state: the replayed files' records point at the replay, the third file's does not.
    let state = fx.state.display().to_string();
    let inspection = inspect_state(&state, &fx.source_id);
    assert_eq!(inspection["generation"], 2, "{inspection}");
    assert_eq!(inspection["tracked_files"], 3, "{inspection}");
    let entries = entries(fx);
    assert_eq!(entries["a.log"], 2);
    assert_eq!(entries["sub/b.log"], 2);
    assert_eq!(entries["c.log"], 1);

    // A later run collects what is new, unmarked, and nothing again.
    fx.write("d.log", b"new\n", OLD);
    fx.run_once(&[]);
    let (last, replays) = lines_by_object(output);
    assert_eq!((last.len(), replays.len()), (3, 2), "{last:?}");
    let newest = last.values().last().unwrap();
    assert_eq!(newest.len(), 1);
    assert!(newest[0].contains("\"path\":\"d.log\""), "{newest:?}");
    assert!(!newest[0].contains("replay"), "{newest:?}");
}

/// `gleaner state inspect --entries`: each tracked path's generation.
fn entries(fx: &Fixture) -> BTreeMap<String, u64> {
    let out = crate::support::gleaner()
        .args([
            "state",
            "inspect",
            "--entries",
            "--source-id",
            &fx.source_id,
        ])
        .arg("--state")
        .arg(&fx.state)
        .envs(fx.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            (
                entry["path"].as_str().unwrap().to_string(),
                entry["generation"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn replaying_two_named_files_gives_two_marked_lines_and_no_other_change() {
    let fx = Fixture::new();
    two_named_files_are_replayed_and_nothing_else_changes(&fx, &Place::Local(fx.output.clone()));
}

#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn replaying_two_named_files_on_s3() {
    let mut fx = Fixture::new();
    let output = Place::s3("replay-output");
    fx.state = Place::s3("replay-state").arg().into();
    fx.output = output.arg().into();
    two_named_files_are_replayed_and_nothing_else_changes(&fx, &output);
}

#[test]
fn a_replay_refuses_files_it_cannot_replay_and_writes_nothing() {
    let fx = Fixture::new();
    fx.write("a.log", b"committed\n", OLD);
    fx.run_once(&[]);
    fx.write("new.log", b"not committed yet\n", OLD);

    let out = replay(&fx, &["a.log", "new.log"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot replay new.log: not a committed file of this source"),
        "{stderr}"
    );
    let outside = replay(&fx, &["/etc/hostname"]);
    assert_eq!(outside.status.code(), Some(2), "{outside:?}");
    let nothing = replay(&fx, &[]);
    assert!(
        String::from_utf8_lossy(&nothing.stderr).contains("nothing selected"),
        "{nothing:?}"
    );
    assert_eq!(fx.output_objects().len(), 1);
    assert_eq!(fx.inspect()["generation"], 1);

    // A generation selects what it committed; a file gone since is skipped, and said so.
    std::fs::remove_file(fx.watch.join("a.log")).unwrap();
    let gone = replay(&fx, &["--generation", "1"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("nothing to replay"),
        "{gone:?}"
    );
    fx.assert_outputs_match_commits();
}

/// One writer: a replay is refused (exit 3) while a running gleaner holds the source, since the
/// two would race for the next generation; once it is stopped, the replay runs, and leaves no
/// lease of its own behind (a `state gc` need not wait for it to age).
#[test]
fn a_replay_is_refused_while_a_live_writer_holds_the_source() {
    let fx = Fixture::new();
    fx.write("a.log", b"committed\n", OLD);
    fx.run_once(&[]);
    let lease = fx.state.join(&fx.source_id).join("writer.lease");
    let quiet = ["--interval", "1h", "--events", "false"];
    let mut writer = fx.spawn(&quiet, &fx.root.join("writer.log"));
    assert!(wait_until(Duration::from_secs(20), || lease.exists()));

    let refused = replay(&fx, &["a.log"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("another gleaner holds source id"),
        "{stderr}"
    );
    assert_eq!(fx.inspect()["generation"], 1);

    sigterm(&writer);
    assert!(wait_with_timeout(&mut writer, Duration::from_secs(30)).is_some());
    let out = replay(&fx, &["a.log"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(fx.inspect()["generation"], 2);
    assert!(!lease.exists(), "the replay's lease is released");
}
