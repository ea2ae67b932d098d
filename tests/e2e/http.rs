//! The metrics endpoint serves Prometheus text, and the health endpoints answer.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Fixture, OLD, Place, Served, has_sample, inspect_state, sigterm, wait_until};

/// A minimal HTTP/1.0 GET; returns the status code and body.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn metrics_healthz_and_readyz_are_served() {
    let fx = Fixture::new();
    for i in 0..5 {
        fx.write(&format!("{i}.log"), b"a b c\n", Duration::from_secs(60));
    }
    let served = Served::start(
        &fx,
        &[
            "--interval",
            "1h",
            "--min-age",
            "0s",
            // More than any disk: the low-space warning and gauge must show.
            "--min-free",
            "1000000TiB",
        ],
    );
    let addr = served.addr.clone();
    // The output object is written before the commit, and the counters follow the commit:
    // wait for both.
    assert!(crate::support::wait_until(Duration::from_secs(20), || {
        fx.outputs().len() == 5
            && get(&addr, "/metrics")
                .1
                .contains("gleaner_files_total{outcome=\"done\"} 5")
    }));

    let (code, body) = get(&addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(&addr, "/readyz");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (code, body) = get(&addr, "/livez");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("alive: "), "{body}");
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    for expected in [
        "# TYPE gleaner_files_total counter",
        "gleaner_files_total{outcome=\"done\"} 5",
        "gleaner_files_total{outcome=\"failed\"} 0",
        "gleaner_files_failed_total{reason=\"vanished\"} 0",
        "gleaner_committed_generation 1",
        "gleaner_ready 1",
        "gleaner_scan_duration_seconds_bucket",
        "gleaner_build_info{version=",
        "gleaner_watch_low_space 1",
        "# TYPE gleaner_watch_free_bytes gauge",
        "gleaner_pending_bytes 0",
        "gleaner_oldest_pending_age_seconds 0",
        "gleaner_not_ready_files{reason=\"unstable\"} 0",
        "gleaner_events_lost_total{reason=\"overflow\"} 0",
        "gleaner_cleanup_total{action=\"delete\",result=\"done\"} 0",
        "gleaner_renamed_files_total 0",
        "gleaner_scan_interval_seconds 3600",
        "gleaner_last_successful_scan_timestamp_seconds 1",
        "gleaner_oldest_pending_timestamp_seconds 0",
        "gleaner_commit_delay_seconds_bucket{le=\"7200\"} 5",
        "gleaner_commit_delay_seconds_count 5",
        "gleaner_scan_phase_duration_seconds_count{phase=\"list\"}",
        "gleaner_scan_phase_duration_seconds_count{phase=\"diff\"}",
        "gleaner_scan_phase_duration_seconds_count{phase=\"process\"} 1",
        "gleaner_scan_phase_duration_seconds_count{phase=\"flush\"} 1",
        "gleaner_scan_phase_duration_seconds_count{phase=\"commit\"} 1",
        "gleaner_fenced 0",
        "gleaner_source_info{source_id=\"test-source\"} 1",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "gleaner_build_info{version=\"",
        "commit=\"",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected:?} not in:\n{metrics}"
        );
    }
    let (code, _) = get(&addr, "/nope");
    assert_eq!(code, 404);

    sigterm(&served.child);
    let (status, logged) = served.wait(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{logged:?}");
    assert!(
        logged.iter().any(|l| l.contains("running out of space")),
        "{logged:?}"
    );
}

/// `gleaner run` with the fixture's locations and `extra` flags, and no `--metrics-addr` unless
/// `extra` has one (the fixture's own command always adds one).
fn run_without_metrics_flag(fx: &Fixture, extra: &[&str]) -> std::process::Output {
    crate::support::gleaner()
        .arg("run")
        .args(["--source-id", &fx.source_id, "--min-age", "0s"])
        .arg("--watch")
        .arg(&fx.watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .args(extra)
        .env_remove("GLEANER_METRICS_ADDR")
        .output()
        .unwrap()
}

#[test]
fn once_binds_no_port_unless_asked_and_a_taken_port_fails_before_anything_is_written() {
    // Another process (another `--once` job, say) holds the default port.
    let held = std::net::TcpListener::bind("127.0.0.1:9464");
    let fx = Fixture::new();
    fx.write("a.log", b"a\n", Duration::from_secs(60));
    let out = run_without_metrics_flag(&fx, &["--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fx.outputs().len(), 1);

    // Asked for a port that is taken: one line, before any state or output is written.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let fresh = Fixture::new();
    let out = run_without_metrics_flag(&fresh, &["--interval", "1h", "--metrics-addr", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot serve metrics on"), "{stderr}");
    assert!(
        !fresh.state.exists() && !fresh.output.exists(),
        "nothing written"
    );
    drop(held);
}

#[test]
fn half_open_connections_cannot_starve_the_scans() {
    let fx = Fixture::new();
    // 64 descriptors for the whole process, and 200 clients that connect and send nothing.
    let Ok(mut child) = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_gleaner"))
        .args([
            "run",
            "--interval",
            "200ms",
            // The default --min-age: no file is read while the test is still writing it.
            "--source-id",
            "fds",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--watch"])
        .arg(&fx.watch)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("prlimit is missing: descriptor case not run");
        return;
    };
    use std::io::{BufRead, BufReader};
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("gleaner started line").unwrap();
        if let Some(rest) = line.split("metrics=http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let log = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let opened = std::time::Instant::now();
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Every half-open connection is closed by the server: evicted by a later one, or after the
    // 2 s it has for a request head. Watched from now on, while the scans go on, so that how
    // long the commits take does not count.
    let closing = std::thread::spawn(move || {
        for mut client in clients {
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut byte = [0u8; 1];
            match client.read(&mut byte) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => return Err(format!("connection still open: {other:?}")),
            }
        }
        Ok(opened.elapsed())
    });

    // The scans go on: 300 files, each needing a descriptor to be read, all committed.
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..300 {
        let data = format!("file {i}\n").into_bytes();
        fx.write(&format!("f{i:03}.log"), &data, Duration::from_secs(60));
        expected.insert(format!("f{i:03}.log"), data);
    }
    assert!(
        crate::support::wait_until(Duration::from_secs(30), || fx.outputs().len() == 300),
        "committed {} of 300 with 200 half-open connections",
        fx.outputs().len()
    );
    crate::support::assert_exactly_once(&fx.outputs(), &expected);

    let closed_within = closing.join().unwrap().unwrap();
    eprintln!("200 half-open connections: the last closed {closed_within:?} after they opened");
    assert!(
        closed_within < Duration::from_secs(15),
        "closed after {closed_within:?}"
    );
    // And the endpoint still answers.
    let (code, _) = get(&addr, "/healthz");
    assert_eq!(code, 200);
    sigterm(&child);
    let status = crate::support::wait_with_timeout(&mut child, Duration::from_secs(20));
    let logged = log.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{logged:#?}");
    assert!(
        !logged.iter().any(|l| l.contains("Too many open files")),
        "{logged:#?}"
    );
}

/// A slowloris next to the probes, as a reviewer ran it on the real binary (issue 21): eight
/// clients each open a connection and trickle a request header one byte every 4 s (less than
/// the 5 s the endpoints allow without progress), and open a new one at once whenever theirs
/// is closed; meanwhile `/livez` and `/healthz` are probed every 500 ms the way kubelet does
/// (one request per connection, a 1 s timeout). Every probe must get its 200: a refused
/// liveness probe restarts the container, and a native sidecar that never passes its startup
/// probe keeps the application from starting.
#[test]
fn slow_clients_cannot_starve_the_probes() {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    const TRICKLERS: usize = 8;
    const TRICKLE_EVERY: Duration = Duration::from_secs(4);
    const PROBE_EVERY: Duration = Duration::from_millis(500);
    const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
    const PROBING_FOR: Duration = Duration::from_secs(15);

    let fx = Fixture::new();
    let served = Served::start(&fx, &[]);
    let addr = served.addr.clone();
    let answers = || probe(&addr, "/livez", PROBE_TIMEOUT) == Ok(200);
    assert!(
        wait_until(Duration::from_secs(10), answers),
        "/livez never answered"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicUsize::new(0));
    let tricklers: Vec<_> = (0..TRICKLERS)
        .map(|_| {
            let (addr, stop, cut) = (addr.clone(), Arc::clone(&stop), Arc::clone(&cut));
            std::thread::spawn(move || trickle(&addr, TRICKLE_EVERY, &stop, &cut))
        })
        .collect();
    // Let every trickler hold a connection before the first probe.
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let mut failed = Vec::new();
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    let mut sent = 0u32;
    while started.elapsed() < PROBING_FOR {
        let path = if sent % 2 == 0 { "/livez" } else { "/healthz" };
        let sent_at = Instant::now();
        match probe(&addr, path, PROBE_TIMEOUT) {
            Ok(200) => {
                answered += 1;
                slowest = slowest.max(sent_at.elapsed());
            }
            other => failed.push(format!("{:.1?} {path}: {other:?}", started.elapsed())),
        }
        sent += 1;
        if let Some(wait) = (started + PROBE_EVERY * sent).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for trickler in tricklers {
        trickler.join().unwrap();
    }
    // The connections closed to make room, or for a request head that never came, are counted.
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let closed = |reason: &str| -> u64 {
        let prefix = format!("gleaner_http_connections_rejected_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.parse().unwrap())
    };
    eprintln!(
        "probes: {sent} sent, {answered} answered 200 (slowest in {slowest:.1?}), {} failed; \
         trickling connections closed by the server: {}; closed by reason: evicted {}, \
         head_timeout {}, full {}",
        failed.len(),
        cut.load(Ordering::SeqCst),
        closed("evicted"),
        closed("head_timeout"),
        closed("full"),
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} probes failed: {failed:#?}",
        failed.len()
    );
    assert!(
        closed("evicted") + closed("head_timeout") > 0,
        "no slow connection counted:\n{metrics}"
    );

    sigterm(&served.child);
    let (status, logged) = served.wait(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{logged:#?}");
}

/// One probe as kubelet sends it: a fresh connection, one HTTP/1.1 request with
/// `Connection: close`, and `timeout` for all of it; the status code, or why there is none.
fn probe(addr: &str, path: &str, timeout: Duration) -> Result<u16, String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), timeout)
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_write_timeout(Some(timeout)).unwrap();
    // In one write, as kubelet's client sends it (`write!` would send it piece by piece).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.31\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("timed out after {} bytes", response.len()))?;
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read: {e} after {} bytes", response.len())),
        }
    }
    let head = String::from_utf8_lossy(&response);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))
}

/// A slow client until `stop`: opens a connection and sends a request header one byte every
/// `every`, never finishing it; once the server closes the connection (or answers), counts it
/// in `cut` and opens another at once.
fn trickle(addr: &str, every: Duration, stop: &AtomicBool, cut: &std::sync::atomic::AtomicUsize) {
    let header = b"GET /livez HTTP/1.1\r\nHost: gleaner\r\nX-Slow: ";
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        // The read timeout paces the loop: it notices a close within 100 ms.
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut sent = 0;
        let mut next_byte = std::time::Instant::now();
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if std::time::Instant::now() >= next_byte {
                let byte = header.get(sent).copied().unwrap_or(b'a');
                if stream.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                next_byte += every;
            }
            match stream.read(&mut [0u8; 1]) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                // Closed, reset, or answered (a timeout response): the server let go.
                _ => break,
            }
        }
        cut.fetch_add(1, Ordering::SeqCst);
    }
}

/// A free address on 127.0.0.1 (its port released for the caller to bind).
fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A fixture whose state and output live on the test S3 server (moto), reached through a
/// [`StoreProxy`] in front of it.
pub(crate) fn s3_fixture_behind_proxy(name: &str) -> (Fixture, StoreProxy) {
    let upstream = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT (moto) from tests/run.sh");
    let proxy = StoreProxy::start(upstream.trim_start_matches("http://").to_string());
    let mut fx = Fixture::new();
    fx.state = Place::s3(&format!("{name}-state")).arg().into();
    fx.output = Place::s3(&format!("{name}-output")).arg().into();
    fx.env
        .push(("AWS_ENDPOINT", format!("http://{}", proxy.addr)));
    (fx, proxy)
}

/// A TCP proxy to `upstream` that can hold every byte in flight (`hold`: requests hang, as on
/// a stuck store) or close every connection (`refuse`: requests fail, as in an outage).
pub(crate) struct StoreProxy {
    pub(crate) addr: String,
    pub(crate) hold: Arc<AtomicBool>,
    pub(crate) refuse: Arc<AtomicBool>,
}

impl StoreProxy {
    fn start(upstream: String) -> StoreProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hold = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let (h, r) = (Arc::clone(&hold), Arc::clone(&refuse));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if r.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (h, r) = (Arc::clone(&h), Arc::clone(&r));
                    std::thread::spawn(move || pump(from, to, &h, &r));
                }
            }
        });
        StoreProxy { addr, hold, refuse }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, hold: &AtomicBool, refuse: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0; 1 << 16];
    loop {
        if refuse.load(Ordering::SeqCst) {
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
            return;
        }
        if hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// `/livez` for a liveness probe: 200 while the loop moves, through an outage of the store
/// (its scans fail and are retried: a restart would not help), and 503 once a storage
/// request hangs past `--stall-timeout`; back to 200 when it returns.
#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn livez_fails_only_when_the_loop_is_stuck() {
    let (fx, proxy) = s3_fixture_behind_proxy("livez");
    fx.write("first.log", b"one\n", OLD);
    let served = Served::start(
        &fx,
        &[
            "--interval",
            "300ms",
            "--stall-timeout",
            "3s",
            "--storage-retries",
            "1",
            "--storage-retry-timeout",
            "1s",
        ],
    );
    let addr = served.addr.clone();
    let committed = |n: usize| wait_until(Duration::from_secs(20), || committed_files(&fx) == n);
    assert!(committed(1), "the first file was not committed");
    let (code, body) = get(&addr, "/livez");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("alive: "), "{body}");

    // An outage: every scan fails fast and is retried; not ready, but alive.
    proxy.refuse.store(true, Ordering::SeqCst);
    fx.write("during-outage.log", b"two\n", OLD);
    assert!(
        wait_until(Duration::from_secs(20), || get(&addr, "/readyz").0 == 503),
        "/readyz never reported the outage"
    );
    for _ in 0..5 {
        let (code, body) = get(&addr, "/livez");
        assert_eq!(code, 200, "an outage is not a stall: {body}");
        std::thread::sleep(Duration::from_secs(1));
    }
    proxy.refuse.store(false, Ordering::SeqCst);
    assert!(
        committed(2),
        "the file written during the outage was not committed"
    );

    // A stuck store: a request that never returns stalls the loop.
    proxy.hold.store(true, Ordering::SeqCst);
    fx.write("while-stuck.log", b"three\n", OLD);
    let mut last = (0, String::new());
    let stalled = wait_until(Duration::from_secs(30), || {
        last = get(&addr, "/livez");
        last.0 == 503
    });
    assert!(stalled, "/livez never reported the stall: {last:?}");
    assert!(
        last.1.starts_with("stalled: no progress for ") && last.1.contains("--stall-timeout 3s"),
        "{}",
        last.1
    );
    assert_eq!(
        get(&addr, "/healthz").0,
        200,
        "the process itself still serves"
    );

    proxy.hold.store(false, Ordering::SeqCst);
    assert!(
        committed(3),
        "the file written while stuck was not committed"
    );
    assert!(
        wait_until(Duration::from_secs(10), || get(&addr, "/livez").0 == 200),
        "/livez did not recover"
    );

    sigterm(&served.child);
    let (status, log) = served.wait(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log:#?}");
}

/// Files committed so far, read from the fixture's state.
fn committed_files(fx: &Fixture) -> usize {
    let state = inspect_state(&fx.state.display().to_string(), &fx.source_id);
    state["done"].as_u64().unwrap_or(0) as usize
}

/// A start refused because another watch root owns the source id stops with exit 3, but first
/// serves `/metrics` (default `--fatal-linger`) so that Prometheus sees `gleaner_fenced 1`;
/// SIGTERM ends the wait at once.
#[test]
fn a_fenced_start_is_scraped_before_it_exits() {
    let fx = Fixture::new();
    fx.write("a.log", b"one\n", OLD);
    fx.run_once(&[]);
    let other = fx.root.join("another-watch");
    std::fs::create_dir_all(&other).unwrap();
    let addr = free_addr();
    let mut child = crate::support::gleaner()
        .arg("run")
        .arg("--watch")
        .arg(&other)
        .arg("--state")
        .arg(&fx.state)
        .arg("--output")
        .arg(&fx.output)
        .args(["--source-id", &fx.source_id, "--metrics-addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut metrics = String::new();
    let scraped = wait_until(Duration::from_secs(20), || {
        metrics = TcpStream::connect(&addr)
            .map(|_| get(&addr, "/metrics").1)
            .unwrap_or_default();
        has_sample(&metrics, "gleaner_fenced 1")
    });
    assert!(scraped, "gleaner_fenced 1 never served:\n{metrics}");
    assert!(
        has_sample(&metrics, "gleaner_errors_total{stage=\"state\"} 1"),
        "{metrics}"
    );
    let (code, body) = get(&addr, "/readyz");
    assert_eq!(code, 503);
    assert!(body.contains("belongs to another watch root"), "{body}");
    sigterm(&child);
    let status = crate::support::wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(3));
}

/// A store that cannot be reached when a sidecar starts: the process stays up and answers its
/// probes from the moment the port is bound (`/livez` 200, `/readyz` 503 saying why), tries
/// again with backoff, and starts once the store answers. Exiting instead would restart it,
/// and a native sidecar that never passes its startup probe keeps the emitter from starting.
#[test]
#[ignore = "needs moto (S3): run tests/run.sh"]
fn a_store_unreachable_at_start_is_waited_for_while_the_probes_answer() {
    let (fx, proxy) = s3_fixture_behind_proxy("start");
    proxy.refuse.store(true, Ordering::SeqCst);
    fx.write("a.log", b"one\n", OLD);
    let addr = free_addr();
    let mut child = fx
        .command(&[
            "--metrics-addr",
            &addr,
            "--storage-retries",
            "0",
            "--interval",
            "2s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(20), || {
            ready = TcpStream::connect(&addr)
                .map(|_| get(&addr, "/readyz"))
                .unwrap_or_default();
            ready.1.contains("cannot start")
        }),
        "/readyz never said why: {ready:?}"
    );
    assert_eq!(ready.0, 503);
    for _ in 0..3 {
        let (code, body) = get(&addr, "/livez");
        assert_eq!(code, 200, "starting is alive: {body}");
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(child.try_wait().unwrap(), None, "the process stayed up");

    proxy.refuse.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(30), || committed_files(&fx) == 1),
        "the file was not committed once the store answered"
    );
    assert_eq!(get(&addr, "/readyz").0, 200);
    sigterm(&child);
    let status = crate::support::wait_with_timeout(&mut child, Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}
