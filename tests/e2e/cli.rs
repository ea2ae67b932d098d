//! The command line as people use it: refusals that leave everything as it was.

use crate::support::{Fixture, OLD, gleaner};

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
