//! Labels: written into every output line, the chosen ones partition folders of the hive
//! layout; a batch redone after a restart with other labels keeps the key (and so the
//! partition folders) of its plan, and is never written twice.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{
    Fixture, OLD, Place, assert_exactly_once, leave_interrupted_plan_at, random_content, seeded_rng,
};

/// The folder (below the output location) of the object a line was read from.
fn folder_of(object: &Path) -> String {
    object.parent().unwrap().display().to_string()
}

/// Labels from the environment (as the Helm chart passes them), one a partition; then an
/// interrupted batch planned under them, redone by a process with other labels (flags).
fn labels_in_every_line_and_partition_folders(fx: &Fixture) {
    let output = Place::of(&fx.output);
    let (mut rng, _) = seeded_rng("labels_in_every_line_and_partition_folders");
    let mut expected = BTreeMap::new();
    let mut write = |rel: &str, expected: &mut BTreeMap<String, Vec<u8>>| {
        let data = random_content(&mut rng, 2000);
        fx.write(rel, &data, OLD);
        expected.insert(rel.to_string(), data);
    };
    for i in 0..5 {
        write(&format!("f{i}.log"), &mut expected);
    }
    let out = fx
        .command(&["--once", "--max-files", "2", "--output-layout", "hive"])
        .env(
            "GLEANER_LABELS",
            "pod=web-0,namespace=shop,node=node-1,app=web",
        )
        .env("GLEANER_PARTITION_LABELS", "namespace")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shop = format!("source={}/namespace=shop/date=", fx.source_id);
    let first = json!({"pod": "web-0", "namespace": "shop", "node": "node-1", "app": "web"});
    let lines = output.committed_outputs();
    assert_exactly_once(&lines, &expected);
    for (object, line) in &lines {
        assert_eq!(line["labels"], first, "{}", object.display());
        assert!(folder_of(object).starts_with(&shop), "{}", object.display());
    }

    // Generation 4, planned and flushed under namespace=shop, not committed; the restart runs
    // on another node, in another namespace (flags, which replace the environment form).
    write("late.log", &mut expected);
    write("later.log", &mut expected);
    let planned = format!("{shop}2026-12-01/{:020}.ndjson", 4);
    leave_interrupted_plan_at(fx, 4, "late.log", planned.clone());
    output.put(&planned, format!("{}\n", lines[0].1).as_bytes());
    let moved = [
        "--output-layout",
        "hive",
        "--label",
        "pod=web-0",
        "--label",
        "namespace=pay",
        "--label",
        "node=node-2",
        "--label",
        "app=web",
        "--partition-label",
        "namespace",
    ];
    fx.run_once(&moved);
    let lines = output.committed_outputs();
    assert_exactly_once(&lines, &expected);
    let pay = format!("source={}/namespace=pay/date=", fx.source_id);
    for (object, line) in &lines {
        let (labels, folder): (Value, &str) = match line["path"].as_str().unwrap() {
            // The redo: the planned key, its partition's value, the other labels of now.
            "late.log" => (
                json!({"pod": "web-0", "namespace": "shop", "node": "node-2", "app": "web"}),
                planned.rsplit_once('/').unwrap().0,
            ),
            "later.log" => (
                json!({"pod": "web-0", "namespace": "pay", "node": "node-2", "app": "web"}),
                &pay,
            ),
            _ => (first.clone(), &shop),
        };
        assert_eq!(line["labels"], labels, "{}", object.display());
        assert!(
            folder_of(object).starts_with(folder),
            "{}",
            object.display()
        );
    }
    // The redo replaced the planted object: a reader of every object reads each file once too.
    assert_exactly_once(&output.outputs(), &expected);
}

#[test]
fn labels_are_in_every_line_and_partition_folders_on_local_disk() {
    labels_in_every_line_and_partition_folders(&Fixture::new());
}

#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn labels_are_in_every_line_and_partition_folders_on_s3() {
    let mut fx = Fixture::new();
    fx.state = Place::s3("labels-state").arg().into();
    fx.output = Place::s3("labels-output").arg().into();
    labels_in_every_line_and_partition_folders(&fx);
}

#[test]
fn bad_labels_are_refused_with_the_reason() {
    let fx = Fixture::new();
    for (flags, reason) in [
        (&["--label", "path=x"][..], "label key \"path\" is reserved"),
        (&["--label", "App=x"], "a lowercase letter then"),
        (&["--label", "team=a/b"], "what Kubernetes allows"),
        (&["--label", "a=1", "--label", "a=2"], "given twice"),
        (
            &["--label", "zone=a", "--partition-label", "zone"],
            "need --output-layout hive",
        ),
        (
            &["--output-layout", "hive", "--partition-label", "zone"],
            "not a label",
        ),
    ] {
        let out = fx.command(&[&["--once"], flags].concat()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
    assert!(!fx.output.exists() && !fx.state.exists(), "nothing written");
}
