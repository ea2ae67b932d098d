//! Guards at start-up: outputs that would feed on themselves, and secrets that would be echoed.
//! Each refusal is exit 2, one line on standard error, before anything is written.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{Fixture, OLD, gleaner, http_get, wait_with_timeout, write_aged};

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

/// The variables of `object_store`'s `from_env` builders (and their aliases) that hold a URL:
/// endpoints, metadata and credential services, authority hosts. A value with user info or a
/// query is refused.
const ENDPOINT_VARIABLES: [(&str, &str); 17] = [
    ("AWS_ENDPOINT", "s3"),
    ("AWS_ENDPOINT_URL", "s3"),
    ("AWS_ENDPOINT_URL_S3", "s3"),
    ("AWS_ENDPOINT_URL_STS", "s3"),
    ("AWS_METADATA_ENDPOINT", "s3"),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "s3"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "s3"),
    ("GOOGLE_BASE_URL", "gs"),
    ("AZURE_STORAGE_ENDPOINT", "az"),
    ("AZURE_ENDPOINT", "az"),
    ("AZURE_MSI_ENDPOINT", "az"),
    ("AZURE_IDENTITY_ENDPOINT", "az"),
    ("IDENTITY_ENDPOINT", "az"),
    ("AZURE_STORAGE_AUTHORITY_HOST", "az"),
    ("AZURE_AUTHORITY_HOST", "az"),
    ("AZURE_FABRIC_TOKEN_SERVICE_URL", "az"),
    ("AZURE_FABRIC_WORKLOAD_HOST", "az"),
];

/// Proxy URLs: their user info is the proxy's credentials, which the client sends (so they
/// are allowed), and never shows.
const PROXY_VARIABLES: [(&str, &str); 3] = [
    ("AWS_PROXY_URL", "s3"),
    ("GOOGLE_PROXY_URL", "gs"),
    ("AZURE_PROXY_URL", "az"),
];

/// A closed port on this machine: every request fails at once, with its URL in the error.
const NOWHERE: &str = "127.0.0.1:9";

/// `cmd` with a clean cloud environment (whatever the test runner exported: moto's, Azurite's)
/// and the settings that make a `scheme` location build, plus `name=value`.
fn cloud_env(cmd: &mut Command, scheme: &str, name: &str, value: &str) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if ["AWS_", "AZURE_", "GOOGLE_"]
            .iter()
            .any(|p| key.starts_with(p))
            || key == "IDENTITY_ENDPOINT"
        {
            cmd.env_remove(key);
        }
    }
    // Static keys, unless the variable is where credentials would come from without them.
    let keys = ![
        "METADATA",
        "CONTAINER",
        "STS",
        "MSI",
        "IDENTITY",
        "AUTHORITY",
        "FABRIC",
    ]
    .iter()
    .any(|part| name.contains(part));
    match scheme {
        "s3" => {
            cmd.envs([
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT", &format!("http://{NOWHERE}")),
            ]);
            if keys {
                cmd.envs([("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")]);
            }
        }
        "az" => {
            cmd.envs([
                ("AZURE_ALLOW_HTTP", "true"),
                ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1"),
                (
                    "AZURE_STORAGE_ENDPOINT",
                    &format!("http://{NOWHERE}/devstoreaccount1"),
                ),
            ]);
            if keys {
                cmd.env("AZURE_STORAGE_ACCOUNT_KEY", "a2V5");
            }
        }
        _ => {
            cmd.env("GOOGLE_BASE_URL", format!("http://{NOWHERE}"));
        }
    }
    cmd.env(name, value).env_remove("RUST_BACKTRACE");
}

/// A free port on 127.0.0.1.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// The commands that build a store from `location`: `run --once`, `run` as a sidecar serving
/// on `addr`, and each `state` command.
fn commands(fx: &Fixture, location: &str, addr: &str) -> Vec<(&'static str, Command)> {
    let run = |extra: &[&str]| {
        let mut cmd = gleaner();
        cmd.args(["run", "--source-id", "s", "--storage-retries", "0"])
            .arg("--watch")
            .arg(&fx.watch)
            .args(["--state", location])
            .arg("--output")
            .arg(&fx.output)
            .args(extra);
        cmd
    };
    let state = |sub: &str, extra: &[&str]| {
        let mut cmd = gleaner();
        cmd.args(["state", sub, "--state", location, "--storage-retries", "0"])
            .args(extra);
        cmd
    };
    let mut repair = state("repair", &["--source-id", "s"]);
    repair
        .arg("--output")
        .arg(&fx.output)
        .arg("--watch")
        .arg(&fx.watch);
    vec![
        ("run --once", run(&["--once"])),
        ("run", run(&["--metrics-addr", addr, "--interval", "1s"])),
        ("state inspect", state("inspect", &[])),
        ("state verify", state("verify", &[])),
        ("state repair", repair),
    ]
}

/// Runs `cmd` for at most `within`: its standard output and error, and what `/readyz`,
/// `/metrics`, `/livez` and `/healthz` on `addr` answered after 1.2 s, if it served them; and its exit code (None: still running at `within`, then stopped).
fn everything_it_shows(mut cmd: Command, addr: &str, within: Duration) -> (String, Option<i32>) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut shown = String::new();
    let started = std::time::Instant::now();
    let mut asked = false;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        // A sidecar that cannot start tries again after 1 s: by then /readyz has said why.
        if !asked && started.elapsed() > Duration::from_millis(1200) {
            for path in ["/readyz", "/metrics", "/livez", "/healthz"] {
                if let Ok((_, body)) = http_get(addr, path, Duration::from_secs(2)) {
                    shown.push_str(&body);
                }
            }
            asked = true;
        }
        if started.elapsed() > within {
            let _ = wait_with_timeout(&mut child, Duration::ZERO);
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    shown.push_str(&String::from_utf8_lossy(&out.stdout));
    shown.push_str(&std::fs::read_to_string(log.path()).unwrap_or_default());
    (shown, code)
}

#[test]
fn a_secret_planted_in_any_storage_endpoint_variable_is_shown_nowhere() {
    // Before: `AWS_ENDPOINT=http://user:pass@host` was used as it was, and every storage error
    // showed it (`Error performing GET http://user:SECRETPLANTED@127.0.0.1:9/bucket?…`) on
    // standard error, in the log and on /readyz.
    let fx = Fixture::new();
    fx.write("a.log", b"a\n", OLD);
    let location = |scheme: &str| match scheme {
        "s3" => "s3://bucket/state",
        "az" => "az://container/state",
        _ => "gs://bucket/state",
    };
    let addr = free_addr();
    let mut checked = 0;
    for (name, scheme) in ENDPOINT_VARIABLES {
        // User info in each; a query too in the most used one (every form and variable is in
        // the unit tests of `Location`).
        let mut values = vec![format!("http://planted-user:SECRETPLANTED@{NOWHERE}/")];
        if name == "AWS_ENDPOINT" {
            values.push(format!("http://{NOWHERE}/?sig=SECRETPLANTED"));
        }
        for value in values {
            for (what, mut cmd) in commands(&fx, location(scheme), &addr) {
                cloud_env(&mut cmd, scheme, name, &value);
                let (shown, code) = everything_it_shows(cmd, &addr, Duration::from_secs(4));
                assert!(
                    !shown.contains("PLANTED"),
                    "{what} with {name}={value} shows the secret: {shown}"
                );
                assert_eq!(code, Some(USAGE), "{what} with {name}: {shown}");
                assert!(
                    shown.lines().count() == 1
                        && shown.contains(&format!("{name} carries credentials"))
                        && shown.contains("REDACTED"),
                    "{what} with {name}: {shown}"
                );
                checked += 1;
            }
        }
    }
    // Proxy URLs may carry the proxy's user and password (the client authenticates with
    // them); they are shown nowhere, the sidecar's /readyz and log included.
    for (name, scheme) in PROXY_VARIABLES {
        // A well-formed one, and one the client cannot parse.
        for value in [
            format!("http://planted-user:SECRETPLANTED@{NOWHERE}"),
            format!("http://planted-user:SECRET PLANTED@{NOWHERE}"),
        ] {
            for (what, mut cmd) in commands(&fx, location(scheme), &addr) {
                cloud_env(&mut cmd, scheme, name, &value);
                let (shown, _) = everything_it_shows(cmd, &addr, Duration::from_millis(1500));
                assert!(
                    !shown.contains("PLANTED") && !shown.is_empty(),
                    "{what} with {name}={value} shows the secret: {shown}"
                );
                checked += 1;
            }
        }
    }
    eprintln!("{checked} commands checked");
    assert!(!fx.state.exists() && !fx.output.exists(), "nothing written");
}
