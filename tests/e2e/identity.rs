//! Identities meeting the real world: a watch root and the source id that collects it must
//! find each other again across Pods and runs, and two of either must never be taken for one
//! (every file would be processed twice).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::{Fixture, OLD, assert_exactly_once, gleaner, write_aged};

/// `gleaner run --once --snapshot-every 1` over `watch` with the fixture's state and outputs, as
/// `source_id` (a snapshot after every commit forgets at once what the walk did not find).
fn once_over(fx: &Fixture, watch: &Path, source_id: &str, extra: &[&str]) -> Output {
    gleaner()
        .args([
            "run",
            "--once",
            "--metrics-addr",
            "off",
            "--snapshot-every",
            "1",
        ])
        .args(["--source-id", source_id, "--watch"])
        .arg(watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two Pods of the same name in two clusters (or namespaces), given one state location: each
/// has its own `emptyDir` at the same path, with its own root id, under the same host name.
/// They take turns here as they would after each other's fencing exits. Before, the host name
/// and directory made them one root: each snapshot forgot the other's files, and every file was
/// processed again. Now the second takes over (as a Pod recreated with a fresh emptyDir does),
/// and the first, coming back, is refused: the two are never the same root.
#[test]
fn two_roots_with_different_ids_under_one_host_and_directory_never_take_turns() {
    let fx = Fixture::new();
    let parked = fx.root.join("parked");
    let mut expected = BTreeMap::new();
    let mut emit = |dir: &Path, name: &str| {
        let data = format!("{name}\n").into_bytes();
        write_aged(&dir.join(name), &data, OLD);
        expected.insert(name.to_string(), data);
    };

    emit(&fx.watch, "a1.log");
    let first = once_over(&fx, &fx.watch, &fx.source_id, &[]);
    assert!(first.status.success(), "{}", stderr(&first));

    // The twin: another directory at the same path.
    std::fs::rename(&fx.watch, &parked).unwrap();
    emit(&fx.watch, "b1.log");
    let twin = once_over(&fx, &fx.watch, &fx.source_id, &[]);
    assert!(twin.status.success(), "{}", stderr(&twin));

    // The first one's turn again.
    std::fs::rename(&fx.watch, fx.root.join("twin")).unwrap();
    std::fs::rename(&parked, &fx.watch).unwrap();
    write_aged(&fx.watch.join("a2.log"), b"a2\n", OLD);
    let back = once_over(&fx, &fx.watch, &fx.source_id, &[]);
    let text = stderr(&back);
    assert_eq!(back.status.code(), Some(3), "refused: {text}");
    assert!(
        text.contains("taken over") && text.contains("--source-id"),
        "says why and what to do: {text}"
    );
    assert_exactly_once(&fx.outputs(), &expected);
}

/// Runs `gleaner` (with `args`) as a Job's Pod would: under host name `host` (a UTS namespace of
/// its own). `None` where the namespace cannot be made (not root).
fn as_host(host: &str, args: &[&std::ffi::OsStr]) -> Option<Output> {
    let script = r#"hostname "$0" && exec "$@""#;
    let out = Command::new("unshare")
        .arg("--uts")
        .args(["sh", "-c", script, host])
        .arg(env!("CARGO_BIN_EXE_gleaner"))
        .args(args)
        .env_remove("GLEANER_LOG")
        .output()
        .ok()?;
    if String::from_utf8_lossy(&out.stderr).contains("unshare failed") {
        return None;
    }
    Some(out)
}

/// A CronJob over a read-only volume: no root id can be written into it, and every Job runs in
/// a new Pod, under a new host name. Before, the root was known only by host name and
/// directory: from the second run on, every Job stopped with exit 3 ("belongs to another watch
/// root"). Now the root is known by its volume, whoever mounts it.
#[test]
fn a_cronjob_over_a_read_only_root_runs_every_time() {
    let fx = Fixture::new();
    let data_dir = fx.root.join("data");
    let read_only = fx.root.join("ro");
    std::fs::create_dir_all(&read_only).unwrap();
    let mut expected = BTreeMap::new();
    let mut add = |name: &str| {
        let data = format!("{name}\n").into_bytes();
        write_aged(&data_dir.join(name), &data, OLD);
        expected.insert(name.to_string(), data);
    };
    add("first.log");
    let mounted = Command::new("mount")
        .arg("--bind")
        .arg(&data_dir)
        .arg(&read_only)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(&read_only)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot make a read-only bind mount here (not root?): case not run");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&read_only);
    for run in 1..=3 {
        if run > 1 {
            add(&format!("run{run}.log"));
        }
        let args: Vec<&std::ffi::OsStr> = [
            "run".as_ref(),
            "--once".as_ref(),
            "--metrics-addr".as_ref(),
            "off".as_ref(),
            "--source-id".as_ref(),
            "nightly".as_ref(),
            "--watch".as_ref(),
            read_only.as_os_str(),
            "--state".as_ref(),
            fx.state.as_os_str(),
            "--output".as_ref(),
            fx.output.as_os_str(),
        ]
        .to_vec();
        let Some(out) = as_host(&format!("nightly-2926{run}-x{run}k"), &args) else {
            eprintln!("cannot make a UTS namespace here (not root?): case not run");
            return;
        };
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !read_only.join(".gleaner-root").exists(),
        "nothing written into it"
    );
    assert_exactly_once(&fx.outputs(), &expected);
}

/// The same directory under another source id (a Deployment's new Pod, named anew, over the
/// same persistent volume; a second replica on a ReadWriteMany volume): before, every file was
/// processed again under the new id, exit 0, without a word. Now the root remembers the source
/// id that collects it, and another one is refused, naming both.
#[test]
fn a_second_source_id_on_a_collected_root_is_refused() {
    let fx = Fixture::new();
    let mut expected = BTreeMap::new();
    for name in ["a.log", "b.log"] {
        let data = format!("{name}\n").into_bytes();
        fx.write(name, &data, OLD);
        expected.insert(name.to_string(), data);
    }
    let first = once_over(&fx, &fx.watch, &fx.source_id, &[]);
    assert!(first.status.success(), "{}", stderr(&first));

    let second = once_over(&fx, &fx.watch, "web-7d9f-2", &[]);
    let text = stderr(&second);
    assert_eq!(second.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&fx.source_id) && text.contains("web-7d9f-2"),
        "names both: {text}"
    );
    assert_exactly_once(&fx.outputs(), &expected);

    // The first goes on.
    let again = once_over(&fx, &fx.watch, &fx.source_id, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
}
