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

/// `gleaner emit` alone (the emitter of the Helm chart's example): one stdout line per
/// completed file, and at SIGTERM the file in progress is completed, none left half-written.
#[test]
fn emit_prints_each_completed_file_and_completes_the_last_at_sigterm() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::support::gleaner()
        .args(["emit", "--rate", "40"])
        .arg("--dir")
        .arg(dir.path().join("out"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    crate::support::sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(30)).expect("emit ends");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped_by=\"SIGTERM\""), "{stderr}");
    let mut printed: Vec<String> = stdout.lines().map(str::to_string).collect();
    printed.sort();
    let root = dir.path().join("out");
    let on_disk: Vec<String> = crate::support::files_with(&root, |_| true)
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(printed.len() >= 5, "too few files: {printed:?}");
    assert_eq!(printed, on_disk, "stdout names exactly the completed files");
    assert!(on_disk.iter().all(|p| p.ends_with(".log")), "{on_disk:?}");

    let bad = crate::support::gleaner()
        .args(["emit", "--dir", "x", "--rate", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("files per second from 0.01 to 1000"));
}
