//! `--once` on fresh and existing state: every ready file exactly once, nested ones included.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{Fixture, OLD, assert_exactly_once, random_content, seeded_rng};

#[test]
fn fresh_state_processes_every_ready_file_once_with_correct_stats() {
    let fx = Fixture::new();
    let (mut rng, _) = seeded_rng("fresh_state");
    let mut expected = BTreeMap::new();
    for i in 0..120 {
        let depth = i % 4;
        let dir: String = (0..depth).map(|d| format!("d{}/", (i + d) % 3)).collect();
        let rel = format!("{dir}file-{i:03}.log");
        let data = random_content(&mut rng, 3000);
        fx.write(&rel, &data, OLD);
        expected.insert(rel, data);
    }
    // Edge cases by name: empty, no trailing newline, CRLF only, a long line.
    for (rel, data) in [
        ("edge/empty.log", b"".to_vec()),
        ("edge/no-newline.log", b"last line without newline".to_vec()),
        ("edge/crlf.log", b"a b\r\nc\r\n".to_vec()),
        ("edge/long.log", vec![b'x'; 600_000]),
    ] {
        fx.write(rel, &data, OLD);
        expected.insert(rel.to_string(), data);
    }

    fx.run_once(&["--max-files", "17"]);

    let lines = fx.outputs();
    assert_exactly_once(&lines, &expected);
    // 124 files in batches of at most 17: 8 batches, each its own object and generation.
    assert_eq!(fx.output_objects().len(), 8);
    assert_eq!(fx.state_objects("delta").len(), 8);
    assert!(
        fx.state_objects("plan").is_empty(),
        "plans are removed after commit"
    );
    for (object, line) in &lines {
        let generation = line["generation"].as_u64().unwrap();
        assert!(
            object.ends_with(format!("{}/{generation:020}.ndjson", fx.source_id)),
            "{} holds generation {generation}",
            object.display()
        );
        assert_eq!(line["source_id"], fx.source_id.as_str());
        assert_eq!(line["processor"], "stats");
        assert!(line["mtime"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn a_second_run_writes_nothing_and_later_files_appear_alone() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for i in 0..10 {
        let data = format!("first wave {i}\n").into_bytes();
        fx.write(&format!("a/{i}.log"), &data, OLD);
        expected.insert(format!("a/{i}.log"), data);
    }
    fx.run_once(&[]);
    let objects = fx.output_objects();
    let deltas = fx.state_objects("delta");
    assert_eq!(objects.len(), 1);

    let out = fx.run_once(&[]);
    assert_eq!(
        fx.output_objects(),
        objects,
        "no new output without new files"
    );
    assert_eq!(
        fx.state_objects("delta"),
        deltas,
        "no new commit without new files"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("committed 0 batch(es)"));

    let mut second_wave = BTreeMap::new();
    for i in 0..5 {
        let data = format!("second wave {i}\n").into_bytes();
        fx.write(&format!("b/{i}.log"), &data, OLD);
        second_wave.insert(format!("b/{i}.log"), data);
    }
    fx.run_once(&[]);
    let objects_after = fx.output_objects();
    assert_eq!(objects_after.len(), 2);
    let newest = fx
        .outputs()
        .into_iter()
        .filter(|(object, _)| object == &objects_after[1])
        .collect::<Vec<_>>();
    assert_exactly_once(&newest, &second_wave);

    expected.extend(second_wave);
    assert_exactly_once(&fx.outputs(), &expected);
}

#[test]
fn every_flag_can_come_from_the_environment_and_outputs_can_be_gzipped() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for i in 0..6 {
        let data = format!("line one {i}\nline two\n").into_bytes();
        fx.write(&format!("{i}.log"), &data, Duration::from_secs(120));
        expected.insert(format!("{i}.log"), data);
    }
    let out = crate::support::gleaner()
        .arg("run")
        .env("GLEANER_WATCH", &fx.watch)
        .env("GLEANER_STATE", format!("file://{}", fx.state.display()))
        .env("GLEANER_OUTPUT", format!("file://{}", fx.output.display()))
        .env("GLEANER_ONCE", "true")
        .env("GLEANER_MIN_AGE", "1m")
        .env("GLEANER_MAX_FILES", "4")
        .env("GLEANER_MAX_BYTES", "1MiB")
        .env("GLEANER_SOURCE_ID", &fx.source_id)
        .env("GLEANER_PROCESSOR", "stats")
        .env("GLEANER_WORKERS", "2")
        .env("GLEANER_COMPRESS", "gzip")
        .env("GLEANER_INTERVAL", "10m")
        .env("GLEANER_METRICS_ADDR", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = fx.output_objects();
    assert_eq!(objects.len(), 2, "6 files, at most 4 per batch");
    assert!(
        objects
            .iter()
            .all(|o| o.to_string_lossy().ends_with(".ndjson.gz"))
    );
    assert_exactly_once(&fx.outputs(), &expected);
}
