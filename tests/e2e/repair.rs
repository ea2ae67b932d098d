//! `gleaner state repair` commits a lost or damaged end of the log again from the outputs,
//! wherever they are laid out.

use std::collections::BTreeMap;
use std::process::Output;

use crate::support::{Fixture, OLD, assert_exactly_once, gleaner};

/// `gleaner state repair` for the fixture's source, with `extra` flags.
fn repair(fx: &Fixture, extra: &[&str]) -> Output {
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
            && stdout.contains("3 file(s), 3 found unchanged"),
        "{stdout}"
    );
    fx.run_once(&hive);
    assert_exactly_once(&fx.outputs(), &expected);
    assert_eq!(fx.inspect()["generation"], 2);
    fx.assert_outputs_match_commits();
}
