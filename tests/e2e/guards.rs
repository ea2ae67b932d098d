//! Guards at start-up: outputs that would feed on themselves. Each refusal is exit 2, one line
//! on standard error, before anything is written.

use std::path::Path;
use std::process::Output;

use crate::support::{Fixture, OLD, gleaner, write_aged};

/// Exit code of a mistake in the command line.
const USAGE: i32 = 2;

/// Every file and directory below `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `gleaner run --once` over `watch` (relative to the fixture's root) with outputs in `out`,
/// and `extra` flags.
fn run_over(fx: &Fixture, watch: &str, extra: &[&str]) -> Output {
    gleaner()
        .args(["run", "--once", "--metrics-addr", "off", "--source-id", "s"])
        .args(["--watch", watch, "--state", "state", "--output", "out"])
        .args(extra)
        .current_dir(&fx.root)
        .output()
        .unwrap()
}

/// Checks that a start over `watch` with `extra` flags is refused as a feedback loop, with
/// nothing written anywhere.
fn assert_refused_as_a_loop(fx: &Fixture, watch: &str, extra: &[&str], folder: &str) {
    let before = tree(&fx.root);
    let out = run_over(fx, watch, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(USAGE),
        "{watch} {extra:?}: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("gleaner: error: ")
            && stderr.contains("watched directory")
            && stderr.contains(folder)
            && stderr.contains("would be collected as input"),
        "{watch} {extra:?}: {stderr}"
    );
    assert_eq!(tree(&fx.root), before, "{watch} {extra:?}: nothing written");
}

/// The UTC day of now, as the hive layout names its partitions.
fn today() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_string()
}

#[test]
fn a_flat_output_folder_overlapping_the_watched_directory_is_refused() {
    let fx = Fixture::new();
    for watch in ["out/s", "out"] {
        write_aged(&fx.root.join(watch).join("a.log"), b"a\n", OLD);
        assert_refused_as_a_loop(&fx, watch, &[], "out/s");
    }
    // Flat objects land directly in <output>/<source-id>/: a folder below it collects none.
    write_aged(&fx.root.join("out/s/deeper/a.log"), b"a\n", OLD);
    let out = run_over(&fx, "out/s/deeper", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fx.outputs().len(),
        0,
        "no output under the fixture's own location"
    );
    assert!(fx.root.join("out/s/00000000000000000001.ndjson").exists());
}

#[test]
fn a_hive_output_folder_overlapping_the_watched_directory_is_refused() {
    // Before: only the flat layout's folder (<output>/<source-id>) was checked. With
    // `--output-layout hive` and `--watch <output>/source=<id>`, every output object was
    // collected as input: one input file made 34 generations in 6 s, without end.
    let fx = Fixture::new();
    let day = format!("out/source=s/date={}", today());
    for watch in ["out/source=s", day.as_str(), "out"] {
        write_aged(&fx.root.join(watch).join("a.log"), b"a\n", OLD);
        assert_refused_as_a_loop(&fx, watch, &["--output-layout", "hive"], "out/source=s");
    }
    // The flat layout's folder is no longer a concern under hive, and the other way round.
    write_aged(&fx.root.join("elsewhere/s/a.log"), b"a\n", OLD);
    let out = gleaner()
        .args(["run", "--once", "--metrics-addr", "off", "--source-id", "s"])
        .args([
            "--watch",
            "elsewhere/s",
            "--state",
            "state",
            "--output",
            "elsewhere",
        ])
        .args(["--output-layout", "hive"])
        .current_dir(&fx.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_leftovers_landing_in_the_watched_directory_are_refused() {
    // Before: `--ship-leftovers` copied what a drain left to <output>/.leftovers/<source-id>/,
    // unchecked: a watch there collected the copies at the next start.
    let fx = Fixture::new();
    for watch in [
        "out/.leftovers/s",
        "out/.leftovers",
        "out/.leftovers/s/00000000000000000001",
    ] {
        write_aged(&fx.root.join(watch).join("a.log"), b"a\n", OLD);
        assert_refused_as_a_loop(&fx, watch, &["--ship-leftovers"], "out/.leftovers/s");
    }
    // Without --ship-leftovers nothing goes there.
    let out = run_over(&fx, "out/.leftovers/s", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
