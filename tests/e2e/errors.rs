//! Configuration mistakes end the process with one line that names the problem, and a non-zero
//! exit code: 2 for a mistake in the command line (a flag's value, flags that contradict each
//! other), 1 for surroundings that do not work; never a panic or a backtrace.

use std::process::Output;

use crate::support::Fixture;

/// Exit code of a failure of the surroundings (directories, storage, state).
const FAILED: i32 = 1;
/// Exit code of a mistake in the command line.
const USAGE: i32 = 2;

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got: {stderr}"
    );
    assert!(lines[0].starts_with("gleaner: error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in: {stderr}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{bad} in: {stderr}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
}

fn run(fx: &Fixture, watch: &str, state: &str, output: &str) -> Output {
    crate::support::gleaner()
        .args(["run", "--once", "--metrics-addr", "off", "--source-id", "s"])
        .args(["--watch", watch, "--state", state, "--output", output])
        .env("RUST_BACKTRACE", "1")
        .current_dir(&fx.root)
        .output()
        .unwrap()
}

#[test]
fn a_nonexistent_watch_directory() {
    let fx = Fixture::new();
    let out = run(&fx, "no-such-dir", "state", "output");
    assert_one_line_error(&out, FAILED, "watch directory no-such-dir: does not exist");
    assert!(!fx.root.join("state").exists(), "nothing written");
}

#[test]
fn a_watch_path_that_is_a_file() {
    let fx = Fixture::new();
    std::fs::write(fx.root.join("file"), b"x").unwrap();
    let out = run(&fx, "file", "state", "output");
    assert_one_line_error(&out, FAILED, "is not a directory");
}

#[test]
fn an_unwritable_state_location() {
    // Under a regular file nothing can be created, whoever runs the test (root included).
    let fx = Fixture::new();
    std::fs::write(fx.root.join("blocker"), b"x").unwrap();
    let out = run(&fx, "watch", "blocker/state", "output");
    assert_one_line_error(&out, FAILED, "file:///");
    assert_one_line_error(&out, FAILED, "blocker/state/s");
    assert_one_line_error(&out, FAILED, "Not a directory");
    assert!(!fx.root.join("output").exists(), "nothing written");
}

#[test]
fn an_unwritable_output_location() {
    let fx = Fixture::new();
    std::fs::write(fx.root.join("blocker"), b"x").unwrap();
    let out = run(&fx, "watch", "state", "blocker/out");
    assert_one_line_error(&out, FAILED, "blocker/out/s");
}

#[test]
fn malformed_urls() {
    let fx = Fixture::new();
    for (state, needle) in [
        (
            "bogus://x/y",
            "--state: invalid storage location \"bogus://x/y\": unsupported scheme",
        ),
        (
            "file://host/x",
            "file URLs name an absolute path and no host",
        ),
        ("http://[::1", "not a valid URL"),
        ("", "the location is empty"),
    ] {
        let out = run(&fx, "watch", state, "output");
        assert_one_line_error(&out, USAGE, needle);
    }
    let out = run(&fx, "watch", "state", "s3:/");
    assert_one_line_error(&out, USAGE, "--output: invalid storage location");
}

#[test]
fn state_inside_the_watched_directory_is_refused() {
    let fx = Fixture::new();
    let out = run(&fx, "watch", "watch/state", "output");
    assert_one_line_error(&out, USAGE, "is inside the watched directory");
}

#[test]
fn outputs_that_would_land_inside_the_watched_directory_are_refused() {
    // `--output` itself is outside, but objects go to <output>/<source-id>/, which is watched.
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.root.join("data/s")).unwrap();
    let out = run(&fx, "data/s", "state", "data");
    assert_one_line_error(&out, USAGE, "output location file://");
    assert_one_line_error(&out, USAGE, "is inside the watched directory");
}

#[test]
fn invalid_flags_are_usage_errors() {
    let fx = Fixture::new();
    let out = crate::support::gleaner()
        .args([
            "run",
            "--watch",
            "w",
            "--state",
            "s",
            "--output",
            "o",
            "--interval",
            "soon",
        ])
        .current_dir(&fx.root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'soon' for '--interval"));
    let out = crate::support::gleaner()
        .args(["run", "--state", "s", "--output", "o"])
        .current_dir(&fx.root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--watch <DIR>"));
}

#[test]
fn contradicting_flags_exit_2_with_one_line_before_anything_is_written() {
    let fx = Fixture::new();
    for (flags, needle) in [
        (
            &["--on-change", "append", "--after", "delete"][..],
            "invalid arguments: --on-change append keeps files in place",
        ),
        (
            &["--identity", "content", "--after", "move:/tmp/done"][..],
            "invalid arguments: --identity content cannot be combined with --after delete or move",
        ),
        (
            &[
                "--processor",
                "count-by",
                "--key-regex",
                "x",
                "--delimiter",
                ";",
            ][..],
            "invalid arguments: --delimiter only applies to --key-column",
        ),
        (
            &["--processor", "stats", "--top", "3"][..],
            "invalid arguments: --top is a flag of --processor count-by, not of --processor stats",
        ),
    ] {
        let out = crate::support::gleaner()
            .args(["run", "--once", "--metrics-addr", "off", "--source-id", "s"])
            .args(["--watch", "watch", "--state", "state", "--output", "output"])
            .args(flags)
            .current_dir(&fx.root)
            .output()
            .unwrap();
        assert_one_line_error(&out, USAGE, needle);
        assert!(
            !fx.root.join("state").exists() && !fx.root.join("output").exists(),
            "{flags:?}: nothing written"
        );
    }
}

#[test]
fn a_secret_planted_in_a_storage_url_is_shown_nowhere() {
    let fx = Fixture::new();
    let planted = [
        "s3://AKIAPLANTED:SECRETPLANTED@bucket/state",
        "az://container/state?sv=2022-11-02&sig=SECRETPLANTED",
        "https://account.blob.core.windows.net/container/state?sig=SECRETPLANTED",
    ];
    let assert_hidden = |what: &str, text: &str| {
        assert!(!text.contains("PLANTED"), "{what} shows the secret: {text}");
    };
    for url in planted {
        // As --state, as --output, and as `state inspect --state`: refused, with one line that
        // says where credentials go instead, and does not show them.
        for (state, output) in [(url, "output"), ("state", url)] {
            let out = run(&fx, "watch", state, output);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_hidden("gleaner run", &stderr);
            assert_one_line_error(&out, USAGE, "credentials in a storage URL are refused");
            assert!(stderr.contains("REDACTED"), "{stderr}");
        }
        let out = crate::support::gleaner()
            .args(["state", "inspect", "--state", url])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_hidden("state inspect", &text);
        assert_eq!(out.status.code(), Some(2), "{text}");
        // Set through the environment, the value is not echoed by --help either.
        for help in [&["run", "--help"][..], &["state", "inspect", "--help"][..]] {
            let out = crate::support::gleaner()
                .args(help)
                .env("GLEANER_STATE", url)
                .env("GLEANER_OUTPUT", url)
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_hidden("--help", &String::from_utf8_lossy(&out.stdout));
        }
    }
}
