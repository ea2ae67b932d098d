//! The commit manifest: a record per committed generation under `<output>/.committed/`, written
//! after the commit, so that a reader going by the records never reads the object of a batch
//! that is not committed, and a record lost to a crash after the commit is written again (by
//! the next start, or by `gleaner state repair`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::support::{
    Fixture, OLD, Place, assert_exactly_once, leave_interrupted_plan, random_content, seeded_rng,
};

/// The generations the records name, each checked against its object's key and source.
fn recorded_generations(fx: &Fixture, records: &BTreeMap<String, Value>) -> BTreeSet<u64> {
    records
        .iter()
        .map(|(name, record)| {
            let generation = record["generation"].as_u64().unwrap();
            assert_eq!(
                name,
                &format!(".committed/{}/{generation:020}.json", fx.source_id)
            );
            assert_eq!(record["source_id"], fx.source_id.as_str());
            assert_eq!(
                record["key"],
                format!("{}/{generation:020}.ndjson", fx.source_id)
            );
            generation
        })
        .collect()
}

/// Three committed batches; an interrupted fourth whose object is written but not committed
/// (ignored by a reader of the records, counted by a reader of every object); its redo; a
/// record deleted as a crash right after the commit would leave it, written again at start,
/// and by `gleaner state repair`.
fn records_name_committed_objects_only(fx: &Fixture) {
    let output = Place::of(&fx.output);
    let (mut rng, _) = seeded_rng("records_name_committed_objects_only");
    let mut expected = BTreeMap::new();
    for i in 0..5 {
        let rel = format!("f{i}.log");
        let data = random_content(&mut rng, 2000);
        fx.write(&rel, &data, OLD);
        expected.insert(rel, data);
    }
    fx.run_once(&["--max-files", "2"]);
    let records = output.commit_records();
    assert_eq!(
        recorded_generations(fx, &records),
        BTreeSet::from([1, 2, 3])
    );
    assert_exactly_once(&output.committed_outputs(), &expected);

    // Generation 4 flushed, not committed: its plan and its object, no delta.
    let late = random_content(&mut rng, 2000);
    fx.write("late.log", &late, OLD);
    leave_interrupted_plan(fx, 4, "late.log");
    let uncommitted = format!("{}/{:020}.ndjson", fx.source_id, 4);
    let planted = serde_json::json!({
        "schema": 1, "source_id": fx.source_id, "generation": 4, "path": "late.log", "size": 1,
        "mtime": "2026-12-01T10:00:00.000000Z", "processor": "stats",
        "error": "an attempt that was never committed",
    });
    output.put(&uncommitted, format!("{planted}\n").as_bytes());
    assert_exactly_once(&output.committed_outputs(), &expected);
    // The control: a reader of every object counts it.
    assert_eq!(output.outputs().len(), expected.len() + 1);

    // The redo commits generation 4, with its record.
    fx.run_once(&[]);
    expected.insert("late.log".into(), late);
    let records = output.commit_records();
    assert_eq!(
        recorded_generations(fx, &records),
        BTreeSet::from([1, 2, 3, 4])
    );
    assert_exactly_once(&output.committed_outputs(), &expected);

    // A crash between the commit of generation 4 and its record: the next start writes it,
    // byte for byte the same.
    let name = format!(".committed/{}/{:020}.json", fx.source_id, 4);
    let before = output.objects(|n| n.ends_with(".json"));
    output.delete(&name);
    assert_eq!(
        recorded_generations(fx, &output.commit_records()),
        BTreeSet::from([1, 2, 3])
    );
    fx.run_once(&[]);
    assert_eq!(output.objects(|n| n.ends_with(".json")), before);
    assert_exactly_once(&output.committed_outputs(), &expected);

    // The same crash, and the source never starts again: `gleaner state repair` writes it.
    output.delete(&name);
    let repaired = crate::repair::repair(fx, &[]);
    let said = String::from_utf8_lossy(&repaired.stdout);
    assert!(repaired.status.success(), "{said}");
    assert!(
        said.contains("wrote the missing commit record of generation 4"),
        "{said}"
    );
    assert_eq!(output.objects(|n| n.ends_with(".json")), before);
}

#[test]
fn commit_records_name_committed_objects_only_on_local_disk() {
    records_name_committed_objects_only(&Fixture::new());
}

#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn commit_records_name_committed_objects_only_on_s3() {
    let mut fx = Fixture::new();
    fx.state = Place::s3("manifest-state").arg().into();
    fx.output = Place::s3("manifest-output").arg().into();
    records_name_committed_objects_only(&fx);
}
