//! The bad-input corpus: each case has an expected outcome — processed with the right result,
//! skipped, or failed with a reason — and never a crash, a hang or a stalled pipeline. A good
//! file written next to each bad one must always come through.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Fixture, OLD, reference_stats, wait_until, wait_with_timeout};

/// Runs `--once` (with a timeout: a hang is a failure) and returns each path's output line.
fn run(fx: &Fixture, extra: &[&str]) -> BTreeMap<String, Value> {
    let base: &[&str] = if extra.contains(&"--min-age") {
        &["--once"]
    } else {
        &["--once", "--min-age", "0s"]
    };
    let mut child = fx
        .command(&[base, extra].concat())
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(fx.root.join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(120)).expect("no hang");
    let log = std::fs::read_to_string(fx.root.join("run.log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    fx.outputs()
        .into_iter()
        .map(|(_, line)| (line["path"].as_str().unwrap().to_string(), line))
        .collect()
}

fn good_file(fx: &Fixture) {
    fx.write("good.log", b"all good\n", OLD);
}

fn assert_good_came_through(lines: &BTreeMap<String, Value>) {
    assert_eq!(lines["good.log"]["result"], reference_stats(b"all good\n"));
}

#[test]
fn odd_contents_are_processed_with_exact_results() {
    let fx = Fixture::new();
    good_file(&fx);
    let cases: &[(&str, &[u8])] = &[
        ("empty.log", b""),
        ("no-trailing-newline.log", b"one\ntwo"),
        ("crlf.log", b"a b\r\nc d\r\n\r\n"),
        ("nul-bytes.log", b"\x00\x00 a\x00b\n\x00\n"),
        (
            "invalid-utf8.log",
            b"\xff\xfe\xfd caf\xc3\xa9 \xc3\x28\n\x80\n",
        ),
        (
            "binary.bin",
            &[0u8, 1, 2, 255, 10, 13, 9, 11, 12, 200, 10, 0],
        ),
    ];
    for (name, data) in cases {
        fx.write(name, data, OLD);
    }
    let lines = run(&fx, &[]);
    for (name, data) in cases {
        assert_eq!(lines[*name]["result"], reference_stats(data), "{name}");
    }
    assert_good_came_through(&lines);
}

#[test]
fn a_two_gib_single_line_is_processed_in_bounded_memory() {
    let fx = Fixture::new();
    good_file(&fx);
    // Sparse: 2 GiB of NUL bytes without a newline, without using the disk.
    let file = std::fs::File::create(fx.watch.join("huge-line.bin")).unwrap();
    file.set_len(2 << 30).unwrap();
    crate::support::set_age(&fx.watch.join("huge-line.bin"), OLD);
    let mut child = fx
        .command(&[
            "--once",
            "--min-age",
            "0s",
            "--processor",
            "grep",
            "--pattern",
            "x",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Peak resident memory, as the kernel counts it, sampled until the process exits.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    eprintln!("2 GiB single line: peak RSS {} MiB", peak_kib / 1024);
    assert!(
        peak_kib > 0 && peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB"
    );
    let lines: BTreeMap<String, Value> = fx
        .outputs()
        .into_iter()
        .map(|(_, line)| (line["path"].as_str().unwrap().to_string(), line))
        .collect();
    let huge = &lines["huge-line.bin"]["result"];
    assert_eq!(huge["matches"], 0, "{huge}");
    assert_eq!(
        huge["long_lines"], 1,
        "the line is read on its first 8 MiB: {huge}"
    );
    assert_eq!(lines["huge-line.bin"]["size"], 2u64 << 30);
    assert_eq!(lines["good.log"]["result"]["matches"], 0);
}

#[test]
fn odd_names_and_deep_nesting_are_processed_and_reported_exactly() {
    let fx = Fixture::new();
    good_file(&fx);
    let long_name = format!("{}.log", "n".repeat(251)); // a 255-byte component
    let deep: String = (0..50).map(|i| format!("l{i}/")).collect();
    let names: Vec<Vec<u8>> = vec![
        b"with\nnewline.log".to_vec(),
        b"with spaces  and\ttab.log".to_vec(),
        b"latin1-\xe9t\xe9.log".to_vec(),
        long_name.clone().into_bytes(),
        format!("{deep}deep.log").into_bytes(),
        "emoji-📦.log".as_bytes().to_vec(),
    ];
    for name in &names {
        let path = fx.watch.join(std::ffi::OsStr::from_bytes(name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        crate::support::write_aged(&path, b"named\n", OLD);
    }
    run(&fx, &[]);
    let outputs: Vec<Value> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(outputs.len(), names.len() + 1);
    for name in &names {
        let line = outputs
            .iter()
            .find(|l| match l.get("path_bytes") {
                Some(bytes) => serde_json::from_value::<Vec<u8>>(bytes.clone()).unwrap() == *name,
                None => l["path"].as_str().unwrap().as_bytes() == name.as_slice(),
            })
            .unwrap_or_else(|| panic!("{:?} missing", String::from_utf8_lossy(name)));
        assert_eq!(line["result"], reference_stats(b"named\n"));
    }
    // The non-UTF-8 name is escaped in `path` and exact in `path_bytes`.
    assert!(
        outputs
            .iter()
            .any(|l| l["path"] == "latin1-\\xe9t\\xe9.log")
    );
}

#[test]
fn a_name_with_a_backslash_and_a_name_with_a_byte_never_share_a_path() {
    // `caf\xe9.log` typed as text, and `caf` + the byte 0xE9 + `.log`: before, both showed as
    // the same `path` in the outputs and in `state inspect --entries`.
    let fx = Fixture::new();
    let typed: &[u8] = b"caf\\xe9.log";
    let byte: &[u8] = b"caf\xe9.log";
    for (name, data) in [(typed, &b"typed\n"[..]), (byte, &b"byte 0xe9\n"[..])] {
        crate::support::write_aged(&fx.watch.join(std::ffi::OsStr::from_bytes(name)), data, OLD);
    }
    run(&fx, &[]);
    let outputs: Vec<Value> = fx.outputs().into_iter().map(|(_, l)| l).collect();
    let shown = |name: &[u8]| -> (String, Vec<u8>) {
        let line = outputs
            .iter()
            .find(|l| {
                serde_json::from_value::<Vec<u8>>(l["path_bytes"].clone())
                    .ok()
                    .as_deref()
                    == Some(name)
            })
            .unwrap_or_else(|| panic!("{name:?} not in {outputs:?}"));
        (line["path"].as_str().unwrap().to_string(), name.to_vec())
    };
    assert_eq!(shown(typed).0, "caf\\\\xe9.log");
    assert_eq!(shown(byte).0, "caf\\xe9.log");

    // `state inspect --entries` says the same, with the exact bytes beside.
    let out = crate::support::gleaner()
        .args(["state", "inspect", "--entries", "--state"])
        .arg(&fx.state)
        .output()
        .unwrap();
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{entries:?}");
    assert!(
        paths.contains("caf\\\\xe9.log") && paths.contains("caf\\xe9.log"),
        "{paths:?}"
    );
    for entry in &entries {
        let bytes: Vec<u8> = serde_json::from_value(entry["path_bytes"].clone()).unwrap();
        assert!(bytes == typed || bytes == byte, "{entry}");
    }
}

#[test]
fn special_files_and_symlinks_are_skipped_without_blocking() {
    let fx = Fixture::new();
    good_file(&fx);
    let outside = fx.root.join("outside.log");
    std::fs::write(&outside, b"secret\n").unwrap();
    std::os::unix::fs::symlink(&outside, fx.watch.join("link-out.log")).unwrap();
    std::os::unix::fs::symlink("loop-b", fx.watch.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", fx.watch.join("loop-b")).unwrap();
    std::os::unix::fs::symlink(&fx.watch, fx.watch.join("dir-loop")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(fx.watch.join("pipe.log"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let _socket = std::os::unix::net::UnixListener::bind(fx.watch.join("socket.log")).unwrap();
    let lines = run(&fx, &[]);
    assert_eq!(
        lines.keys().collect::<Vec<_>>(),
        vec!["good.log"],
        "links, the FIFO and the socket are skipped (a link out of the root is never followed)"
    );
    assert_good_came_through(&lines);
}

#[test]
fn corrupt_and_oversized_compressed_files_fail_alone_with_a_reason() {
    let fx = Fixture::new();
    good_file(&fx);
    let mut corrupt = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    corrupt.extend_from_slice(&[0x55; 200]);
    fx.write("corrupt.gz", &corrupt, OLD);
    let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap();
    assert!(bomb.len() < 64 << 10, "a small file that decodes to 64 MiB");
    fx.write("bomb.zst", &bomb, OLD);
    let lines = run(&fx, &["--max-decoded-bytes", "8MiB"]);
    assert!(
        lines["corrupt.gz"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot decode gzip"),
        "{}",
        lines["corrupt.gz"]
    );
    assert!(
        lines["bomb.zst"]["error"]
            .as_str()
            .unwrap()
            .contains("more than the limit of 8388608 bytes"),
        "{}",
        lines["bomb.zst"]
    );
    assert_good_came_through(&lines);
}

#[test]
fn a_file_still_being_appended_to_waits_and_is_processed_once() {
    let fx = Fixture::new();
    let path = fx.watch.join("growing.log");
    std::fs::write(&path, b"first\n").unwrap();
    let lines = run(&fx, &["--min-age", "3s"]);
    assert!(lines.is_empty(), "too young while it is written");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"second\n").unwrap();
    drop(file);
    crate::support::set_age(&path, Duration::from_secs(10));
    let lines = run(&fx, &["--min-age", "3s"]);
    assert_eq!(
        lines["growing.log"]["result"],
        reference_stats(b"first\nsecond\n")
    );
    assert_eq!(run(&fx, &["--min-age", "3s"]).len(), 1, "once");
}

/// Runs the collector as an unprivileged user when the tests run as root (root reads
/// everything, so permissions could not be tested otherwise).
fn unprivileged(fx: &Fixture) -> Option<Vec<String>> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Some(Vec::new());
    }
    let setpriv = Command::new("setpriv").arg("--version").output().ok()?;
    if !setpriv.status.success() {
        return None;
    }
    // The unprivileged user must reach the fixture (temporary directories are private).
    for dir in [&fx.root, &fx.watch] {
        set_mode(dir, 0o777);
    }
    Some(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]
        .map(String::from)
        .to_vec(),
    )
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unreadable_files_and_directories_fail_or_wait_without_stopping_the_rest() {
    let fx = Fixture::new();
    let Some(prefix) = unprivileged(&fx) else {
        eprintln!("setpriv is missing: cannot drop root privileges; permission cases not run");
        return;
    };
    crate::support::write_aged(&fx.watch.join("good.log"), b"all good\n", OLD);
    crate::support::write_aged(&fx.watch.join("secret.log"), b"no access\n", OLD);
    set_mode(&fx.watch.join("secret.log"), 0o000);
    std::fs::create_dir(fx.watch.join("closed")).unwrap();
    crate::support::write_aged(&fx.watch.join("closed/inside.log"), b"inside\n", OLD);
    set_mode(&fx.watch.join("closed"), 0o000);
    set_mode(&fx.watch.join("good.log"), 0o644);

    let gleaner = env!("CARGO_BIN_EXE_gleaner");
    let mut command = Command::new(prefix.first().map_or(gleaner, String::as_str));
    command
        .args(prefix.iter().skip(1))
        .args(prefix.first().map(|_| gleaner))
        .args(["run", "--once", "--min-age", "0s", "--metrics-addr", "off"])
        .args(["--source-id", "s", "--watch"])
        .arg(&fx.watch)
        .arg("--state")
        .arg(fx.root.join("state"))
        .arg("--output")
        .arg(fx.root.join("output"));
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: BTreeMap<String, Value> = fx
        .outputs()
        .into_iter()
        .map(|(_, l)| (l["path"].as_str().unwrap().to_string(), l))
        .collect();
    assert_eq!(lines["good.log"]["result"], reference_stats(b"all good\n"));
    assert!(
        lines["secret.log"]["error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{}",
        lines["secret.log"]
    );
    // The attempts of the unreadable file that were held back for another try committed
    // nothing: no empty output object, no empty delta (one batch for the good file, one for
    // the failure once final).
    let empty: Vec<_> = fx
        .output_objects()
        .into_iter()
        .filter(|object| std::fs::metadata(object).unwrap().len() == 0)
        .collect();
    assert!(empty.is_empty(), "empty output objects: {empty:?}");
    assert_eq!(fx.output_objects().len(), 2, "{:?}", fx.output_objects());
    let deltas =
        crate::support::files_with(&fx.root.join("state"), |name| name.ends_with(".delta"));
    assert_eq!(deltas.len(), 2, "{deltas:?}");
    // The unreadable directory is reported, not guessed about: its file is neither processed
    // nor forgotten, and comes through once it can be read.
    assert!(!lines.contains_key("closed/inside.log"));
    assert!(
        stderr.contains("closed"),
        "the listing problem is logged: {stderr}"
    );
    set_mode(&fx.watch.join("closed"), 0o755);
    let out = command.output().unwrap();
    assert!(out.status.success());
    let lines = fx.outputs();
    assert!(lines.iter().any(|(_, l)| l["path"] == "closed/inside.log"));
    assert_eq!(lines.len(), 3);
}

/// Starts `--once --workers 1` on the fixture (grep, so that a 2 GiB sparse file takes seconds)
/// and returns the running child.
fn start_slow_once(fx: &Fixture) -> std::process::Child {
    fx.command(&[
        "--once",
        "--min-age",
        "0s",
        "--workers",
        "1",
        "--processor",
        "grep",
        "--pattern",
        "x",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(fx.root.join("slow.log")).unwrap())
    .spawn()
    .unwrap()
}

/// Waits until process `pid` has `path` open and has read part of it (its file offset, from
/// /proc, is past 0): the moment to pull the file from under it.
fn wait_until_reading(pid: u32, path: &Path) {
    let found = crate::support::wait_until(Duration::from_secs(60), || {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target == path)
                && std::fs::read_to_string(format!(
                    "/proc/{pid}/fdinfo/{}",
                    fd.file_name().to_string_lossy()
                ))
                .is_ok_and(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("pos:"))
                        .and_then(|p| p.trim().parse::<u64>().ok())
                        .is_some_and(|pos| pos > 0)
                })
        })
    });
    assert!(found, "{} was never being read", path.display());
}

fn sparse(fx: &Fixture, rel: &str, size: u64, age: Duration) {
    let path = fx.watch.join(rel);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    crate::support::set_age(&path, age);
}

fn lines_by_path(fx: &Fixture) -> BTreeMap<String, Vec<Value>> {
    let mut by_path: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, line) in fx.outputs() {
        by_path
            .entry(line["path"].as_str().unwrap().to_string())
            .or_default()
            .push(line);
    }
    by_path
}

#[test]
fn files_truncated_or_deleted_while_a_batch_reads_fail_alone() {
    let fx = Fixture::new();
    // Oldest first: the big file is read first, the others wait their turn in the same batch.
    // Sparse and 64 GiB: its read lasts seconds, so the shrink below lands during it however
    // long this thread waits for a core (2 GiB of holes are read in a few hundred ms).
    sparse(&fx, "big.bin", 64 << 30, Duration::from_secs(3 * 3600));
    fx.write(
        "victim.log",
        b"deleted before its turn\n",
        Duration::from_secs(2 * 3600),
    );
    fx.write("good.log", b"all good\n", OLD);
    let mut child = start_slow_once(&fx);
    wait_until_reading(child.id(), &fx.watch.join("big.bin"));
    // While big.bin is being read, victim.log goes away, and then big.bin shrinks (in this
    // order: the shrink ends the read of big.bin at once, and the batch moves on).
    std::fs::remove_file(fx.watch.join("victim.log")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(fx.watch.join("big.bin"))
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(120)).expect("no hang");
    let log = std::fs::read_to_string(fx.root.join("slow.log")).unwrap();
    assert!(status.success(), "{log}");
    let lines = lines_by_path(&fx);
    let error = |rel: &str| {
        lines[rel][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        error("big.bin").contains("shrank"),
        "{:?}",
        lines["big.bin"]
    );
    assert!(
        error("victim.log").contains("vanished"),
        "{lines:#?}\n{log}"
    );
    assert_eq!(lines["good.log"][0]["result"]["matches"], 0);
    assert!(log.contains("file failed; recorded and skipped"), "{log}");
}

#[test]
fn a_file_replaced_while_being_read_is_processed_as_listed_then_as_new() {
    let fx = Fixture::new();
    sparse(&fx, "big.bin", 8 << 30, OLD);
    let mut child = start_slow_once(&fx);
    wait_until_reading(child.id(), &fx.watch.join("big.bin"));
    // Another file is renamed over it: the open file is still the one listed.
    let staged = fx.watch.join(".staged");
    std::fs::write(&staged, b"x marks the spot\n").unwrap();
    std::fs::rename(&staged, fx.watch.join("big.bin")).unwrap();
    crate::support::set_age(&fx.watch.join("big.bin"), OLD);
    let status = wait_with_timeout(&mut child, Duration::from_secs(120)).expect("no hang");
    assert!(status.success());
    let lines = lines_by_path(&fx);
    assert_eq!(lines["big.bin"].len(), 1);
    assert_eq!(lines["big.bin"][0]["size"], 8u64 << 30, "the listed file");
    assert_eq!(lines["big.bin"][0]["result"]["matches"], 0);
    // The next run sees another file under the name: a new file, processed.
    run(&fx, &["--processor", "grep", "--pattern", "x"]);
    let lines = lines_by_path(&fx);
    assert_eq!(lines["big.bin"].len(), 2);
    assert_eq!(lines["big.bin"][1]["size"], 17);
    assert_eq!(lines["big.bin"][1]["result"]["matches"], 1);
}

#[test]
fn a_permission_denied_file_is_tried_again_and_collected_once_it_can_be_read() {
    // Before: the failure was final at once, and the file was never tried again after
    // `chmod`. Now it is held back (no output line), tried again after 1 s, 2 s, 4 s…, and
    // collected once readable: one output line, with its result.
    let fx = Fixture::new();
    let Some(prefix) = unprivileged(&fx) else {
        eprintln!("setpriv is missing: cannot drop root privileges; permission case not run");
        return;
    };
    crate::support::write_aged(&fx.watch.join("good.log"), b"all good\n", OLD);
    crate::support::write_aged(&fx.watch.join("secret.log"), b"no access yet\n", OLD);
    set_mode(&fx.watch.join("secret.log"), 0o000);
    set_mode(&fx.watch.join("good.log"), 0o644);
    let gleaner = env!("CARGO_BIN_EXE_gleaner");
    let log = fx.root.join("gleaner.log");
    let mut child = Command::new(prefix.first().map_or(gleaner, String::as_str))
        .args(prefix.iter().skip(1))
        .args(prefix.first().map(|_| gleaner))
        .args([
            "run",
            "--interval",
            "1h",
            "--metrics-addr",
            "off",
            "--retries",
            "6",
        ])
        .args(["--source-id", "s", "--watch"])
        .arg(&fx.watch)
        .arg("--state")
        .arg(fx.root.join("state"))
        .arg("--output")
        .arg(fx.root.join("output"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(&log).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || fx.outputs().len() == 1),
        "{}",
        logged()
    );
    assert!(
        wait_until(Duration::from_secs(10), || logged()
            .contains("tried again later")),
        "{}",
        logged()
    );
    assert_eq!(fx.outputs().len(), 1, "no line for the held-back file");
    set_mode(&fx.watch.join("secret.log"), 0o644);
    let collected = wait_until(Duration::from_secs(40), || fx.outputs().len() == 2);
    crate::support::sigterm(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(collected, "{}", logged());
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", logged());
    crate::support::assert_exactly_once(
        &fx.outputs(),
        &BTreeMap::from([
            ("good.log".to_string(), b"all good\n".to_vec()),
            ("secret.log".to_string(), b"no access yet\n".to_vec()),
        ]),
    );
}
