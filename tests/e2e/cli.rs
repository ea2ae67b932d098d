//! The command line as people use it: output piped into a reader that stops early, and
//! refusals that leave everything as it was.

use std::process::{Command, Stdio};

use crate::support::{Fixture, OLD, gleaner};

/// Runs `cmd` with its standard output a pipe whose reader is gone before anything is written
/// (as `| head` is once it has its lines): the exit status and standard error.
fn into_a_closed_pipe(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .unwrap();
    // The reader goes at once: the process is still starting (it loads the state before it
    // prints), so its first write meets the closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_the_commands_own_status() {
    // Before: `gleaner state inspect --entries | head` (and `--json`, and the others) panicked
    // with "failed printing to stdout: Broken pipe" and exit 101.
    let fx = Fixture::new();
    for i in 0..2000 {
        fx.write(&format!("d{}/file-{i:05}.log", i % 7), b"a line\n", OLD);
    }
    fx.run_once(&[]);
    let state = fx.state.display().to_string();
    let commands: [&[&str]; 6] = [
        &["state", "inspect", "--entries"],
        &["state", "inspect", "--entries", "--json"],
        &["state", "inspect", "--json"],
        &["state", "inspect"],
        &["state", "verify"],
        &["state", "verify", "--json"],
    ];
    for args in commands {
        let (code, stderr) = into_a_closed_pipe(gleaner().args(args).args(["--state", &state]));
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: quiet, but: {stderr}");
    }
    // `run --once` prints its summary last: the work is done and committed, the exit is 0.
    fx.write("late.log", b"late\n", OLD);
    let (code, stderr) = into_a_closed_pipe(&mut fx.command(&["--once"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(fx.inspect()["generation"], 2);

    // A closed pipe does not hide what the command found: verify still fails on damage.
    let delta = fx.state_objects("delta").pop().unwrap();
    let mut bytes = std::fs::read(&delta).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&delta, bytes).unwrap();
    let (code, stderr) = into_a_closed_pipe(gleaner().args(["state", "verify", "--state", &state]));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("gleaner: error: state verification failed")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn a_refused_cleanup_directory_is_not_created() {
    // Before: `--after move:<inside>` and `--quarantine <inside>` created the directory in the
    // watched directory, then refused (exit 2), and left it there.
    let fx = Fixture::new();
    fx.write("a.log", b"a\n", OLD);
    for flags in [
        ["--after", "move:watch/archive"],
        ["--quarantine", "watch/bad/nested"],
        ["--after", "move:watch/../watch/done"],
    ] {
        let out = gleaner()
            .args(["run", "--once", "--metrics-addr", "off", "--source-id", "s"])
            .args(["--watch", "watch", "--state", "state", "--output", "output"])
            .args(flags)
            .current_dir(&fx.root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains("is inside the watched directory"),
            "{flags:?}: {stderr}"
        );
        let mut left: Vec<String> = std::fs::read_dir(&fx.root)
            .unwrap()
            .chain(std::fs::read_dir(&fx.watch).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.log", "watch"], "{flags:?}: nothing created");
    }
    // A hidden directory inside is still accepted (never listed), and created.
    let out = gleaner()
        .args(["run", "--once", "--metrics-addr", "off", "--source-id", "s"])
        .args(["--watch", "watch", "--state", "state", "--output", "output"])
        .args(["--after", "move:watch/.done"])
        .current_dir(&fx.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fx.watch.join(".done/a.log").exists());
}
