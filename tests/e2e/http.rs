//! The metrics endpoint serves Prometheus text, and the health endpoints answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Fixture, Served, sigterm};

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
    assert!(crate::support::wait_until(Duration::from_secs(20), || fx
        .outputs()
        .len()
        == 5));

    let (code, body) = get(&addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, body) = get(&addr, "/readyz");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
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
