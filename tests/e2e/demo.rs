//! The README's first command: `gleaner demo` runs an emitter and a collector on local disk.

use std::time::Duration;

use crate::support::{Place, wait_with_timeout};

#[test]
fn the_demo_collects_every_emitted_file_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::support::gleaner()
        .args([
            "demo",
            "--duration",
            "4s",
            "--rate",
            "10",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(120)).expect("demo ends");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "emitter writes",
        "state",
        "outputs",
        "metrics         http://127.0.0.1:",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from: {stdout}"
        );
    }
    assert!(
        stdout.contains("0 emitted files missing, 0 duplicated"),
        "{stdout}"
    );
    assert!(
        stdout.contains("committed generation"),
        "running summary: {stdout}"
    );

    // Check the outputs ourselves too.
    let lines = Place::Local(dir.path().join("output")).outputs();
    assert!(
        lines.len() >= 10,
        "a 4 s demo at 10 files/s emits more than 10 files"
    );
    let emitted = crate::support::files_with(&dir.path().join("incoming"), |n| n.ends_with(".log"));
    assert_eq!(lines.len(), emitted.len());
    assert!(
        lines
            .iter()
            .all(|(_, l)| l["result"]["lines"].as_u64().unwrap() > 0)
    );
}
