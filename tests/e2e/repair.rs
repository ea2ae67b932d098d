//! `gleaner state repair` commits a lost or damaged end of the log again from the outputs, and
//! takes a file in the watched directory for the committed one only when it can show that it is
//! the same file: a look-alike (same size and modification time, as `cp -p` and `rsync -t`
//! leave) is processed again, never given the committed file's entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use crate::support::{Fixture, OLD, assert_exactly_once, gleaner, reference_stats, write_aged};

/// `gleaner state repair` for the fixture's source, with `extra` flags.
pub(crate) fn repair(fx: &Fixture, extra: &[&str]) -> Output {
    gleaner()
        .args(["state", "repair", "--source-id", &fx.source_id])
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .arg("--watch")
        .arg(&fx.watch)
        .args(extra)
        .env_remove("GLEANER_OUTPUT_LAYOUT")
        .output()
        .unwrap()
}

/// Sets the modification time of `path` to that of `like`, to the nanosecond.
fn same_mtime(path: &Path, like: &Path) {
    let mtime = std::fs::metadata(like).unwrap().modified().unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

/// Two batches of three files; the delta of the second one is then lost.
fn two_batches_the_last_delta_lost(fx: &Fixture, extra: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut expected = BTreeMap::new();
    for wave in 0..2 {
        for i in 0..3 {
            let (rel, data) = (
                format!("w{wave}/f{i}.log"),
                format!("wave {wave} file {i}\n"),
            );
            fx.write(&rel, data.as_bytes(), OLD);
            expected.insert(rel, data.into_bytes());
        }
        fx.run_once(extra);
    }
    let last = fx.state_objects("delta").pop().unwrap();
    assert!(last.ends_with(format!("{:020}.delta", 2)), "{last:?}");
    std::fs::remove_file(last).unwrap();
    expected
}

#[test]
fn repair_processes_again_a_file_replaced_with_the_same_size_and_mtime() {
    // Before: repair took each file with the committed size and modification time for the
    // committed file ("3 found unchanged"); the replacements' new contents were never
    // processed.
    let fx = Fixture::new();
    let expected = two_batches_the_last_delta_lost(&fx, &[]);

    // `rsync -t` writes a temporary file and renames it over the name, with the old mtime: a
    // new inode and birth time.
    let renamed = fx.watch.join("w1/f0.log");
    let staged = fx.watch.join("w1/.f0.log.rsync");
    std::fs::write(&staged, b"WAVE 1 FILE 0\n").unwrap();
    same_mtime(&staged, &renamed);
    std::fs::rename(&staged, &renamed).unwrap();
    // `cp -p` over an existing file rewrites it in place: the same inode and birth time, the
    // new content, the source's mtime (made the old file's here).
    let copied = fx.watch.join("w1/f1.log");
    let source = write_aged(&fx.root.join("elsewhere/f1.log"), b"WAVE 1 FILE 1\n", OLD);
    same_mtime(&source, &copied);
    let cp = std::process::Command::new("cp")
        .arg("-p")
        .arg(&source)
        .arg(&copied)
        .status()
        .unwrap();
    assert!(cp.success());
    for (path, was) in [(&renamed, "wave 1 file 0\n"), (&copied, "wave 1 file 1\n")] {
        assert_eq!(std::fs::metadata(path).unwrap().len(), was.len() as u64);
    }

    let out = repair(&fx, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    assert!(
        stdout.contains("committed generation 2 again from")
            && stdout.contains(
                "3 file(s): 1 found unchanged, 0 changed since, 2 to be processed again, 0 gone"
            ),
        "{stdout}"
    );
    for (path, why) in [
        ("w1/f0.log", "another file has its name"),
        ("w1/f1.log", "changed since it was read"),
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(path)
                && l.contains("to be processed again")
                && l.contains(why)),
            "{path}: {stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("w1/f2.log") && l.contains("found unchanged")),
        "{stdout}"
    );

    // The next run processes the two replacements, and nothing else.
    fx.run_once(&[]);
    let lines = fx.outputs();
    let third: Vec<_> = lines
        .iter()
        .filter(|(_, line)| line["generation"] == 3)
        .map(|(_, line)| line.clone())
        .collect();
    let mut paths: Vec<&str> = third.iter().map(|l| l["path"].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, ["w1/f0.log", "w1/f1.log"], "{third:?}");
    for line in &third {
        let now = std::fs::read(fx.watch.join(line["path"].as_str().unwrap())).unwrap();
        assert_eq!(line["result"], reference_stats(&now), "{line}");
    }
    // Every other file exactly once, as first committed.
    let earlier: Vec<_> = lines
        .into_iter()
        .filter(|(_, line)| line["generation"] != 3)
        .collect();
    assert_exactly_once(&earlier, &expected);
    fx.run_once(&[]);
    assert_eq!(fx.inspect()["generation"], 3, "nothing more to process");
    fx.assert_outputs_match_commits();
}

#[test]
fn repair_finds_the_outputs_whatever_their_layout_or_names_the_flag() {
    // Before: without `--output-layout hive`, repair looked for flat keys only and said
    // "nothing to repair … start gleaner as usual" (exit 0) while generation 2's output
    // existed; every start then refused (the state is behind its outputs).
    let fx = Fixture::new();
    let hive = ["--output-layout", "hive"];
    let expected = two_batches_the_last_delta_lost(&fx, &hive);

    // The wrong layout named: refused, with the flag that finds them; nothing committed.
    let out = repair(&fx, &["--output-layout", "flat"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--output-layout hive"), "{stderr}");
    assert!(fx.state_objects("delta").len() == 1, "nothing committed");

    // No layout named: found.
    let out = repair(&fx, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("laid out as --output-layout hive")
            && stdout.contains("committed generation 2 again from")
            && stdout.contains("source=test-source/date=")
            && stdout.contains(
                "3 file(s): 3 found unchanged, 0 changed since, 0 to be processed again, 0 gone"
            ),
        "{stdout}"
    );
    fx.run_once(&hive);
    assert_exactly_once(&fx.outputs(), &expected);
    assert_eq!(fx.inspect()["generation"], 2);
    fx.assert_outputs_match_commits();
}
