//! Logging, the Prometheus recorder, and the HTTP endpoints.

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{PoisonError, RwLock};

use scanner_core::{ErrorChain, Heartbeat, Liveness, ScanError, ScanStatus, Scanner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Sends logs to standard error, at the level GLEANER_LOG (or RUST_LOG) asks for.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = std::env::var("GLEANER_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Installs the global Prometheus recorder and describes every metric.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(scanner_core::telemetry::COMMIT_DELAY.into()),
                &scanner_core::telemetry::COMMIT_DELAY_BUCKETS,
            )
        })
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    scanner_core::telemetry::describe();
    metrics::describe_gauge!(
        "gleaner_build_info",
        "Always 1; labels carry the version and the commit."
    );
    metrics::describe_counter!(
        HTTP_REJECTED,
        "Connections to the HTTP endpoints closed at once because the connection cap was reached."
    );
    metrics::counter!(HTTP_REJECTED).increment(0);
    metrics::gauge!(
        "gleaner_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("GLEANER_COMMIT")
    )
    .set(1.0);
    PROCESS.describe();
    // Histograms are only folded into the rendered view by upkeep; without the exporter's own
    // HTTP listener, that is our job.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct Endpoints {
    metrics: PrometheusHandle,
    health: Health,
}

/// What `/readyz` and `/livez` report on: a stand-in while the scanner starts (the endpoints
/// answer from the moment the port is bound: a slow start is not a dead process), then the
/// scanner's own status and heartbeat.
#[derive(Clone)]
pub struct Health(Arc<RwLock<(watch::Receiver<ScanStatus>, Heartbeat)>>);

impl Health {
    /// Not ready, alive: the scanner is starting.
    pub fn starting(stall_timeout: Duration) -> Self {
        let status = watch::channel(ScanStatus::default()).1;
        Self(Arc::new(RwLock::new((
            status,
            Heartbeat::new(stall_timeout),
        ))))
    }

    /// The start failed with `error`: not ready, with the error; alive, since the attempt
    /// ended (it is tried again, or the process stops).
    pub fn start_failed(&self, error: &ScanError, stall_timeout: Duration) {
        let mut status = ScanStatus::default();
        status.last_error = Some(format!("cannot start: {}", ErrorChain(error)));
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            (watch::channel(status).1, Heartbeat::new(stall_timeout));
    }

    /// From now on, the scanner's status and heartbeat.
    pub fn attach(&self, scanner: &Scanner) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            (scanner.status(), scanner.heartbeat());
    }

    fn status(&self) -> ScanStatus {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .borrow()
            .clone()
    }

    fn liveness(&self) -> Liveness {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .check()
    }
}

/// At most this many HTTP connections at once (fewer under a low open-file limit): the
/// endpoints must never take the descriptors that scans need.
const MAX_CONNECTIONS: usize = 8;
/// A connection that sends or receives nothing for this long is closed (a client that never
/// finishes its request headers, an idle keep-alive).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this (a client that trickles its request).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Binds the address of the endpoints; done before anything is written, so that a taken port
/// fails the start with nothing written.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve metrics on {addr} (choose another --metrics-addr, or `off`)")
    })
}

/// Serves `/metrics`, `/healthz`, `/readyz` and `/livez` on `listener`; returns the bound
/// address.
///
/// * `/healthz` answers 200 while the process serves requests.
/// * `/livez` answers 200 while the scan loop makes progress, and 503 once it has shown none
///   for `--stall-timeout` beyond its wait for the next scan (a liveness probe: a restart
///   helps a stuck loop; a failing store is not stuck, its scans fail and are retried).
/// * `/readyz` answers 200 once state is loaded and the last scan succeeded, else 503 with the
///   last error (an unreachable store or missing watch directory shows here; not a probe for
///   a sidecar, whose readiness would take the emitter's Pod out of its Service).
///
/// Connections are capped (at most [`MAX_CONNECTIONS`], and one per eight descriptors of the
/// open-file limit; one more is closed at once), and each is closed after [`IDLE_TIMEOUT`]
/// without progress or after [`CONNECTION_LIFETIME`]: slow or half-open clients cannot starve
/// the scans of descriptors.
pub fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Health,
) -> anyhow::Result<SocketAddr> {
    let bound = listener
        .local_addr()
        .context("reading the metrics address")?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .route("/livez", get(liveness))
        .with_state(Endpoints { metrics, health });
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let capped = CappedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(connection_cap(open_files))),
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(capped, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

/// How many connections the endpoints take, under an open-file limit of `open_files`.
fn connection_cap(open_files: u64) -> usize {
    usize::try_from(open_files / 8)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS)
}

/// Accepts connections while a permit is free; closes the others at once.
struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for CappedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(permit) => return (GuardedStream::new(stream, permit), addr),
                    Err(_) => {
                        metrics::counter!(HTTP_REJECTED).increment(1);
                        drop(stream);
                    }
                },
                // Out of descriptors (or a connection reset before it was accepted): wait
                // rather than spin; the scans come first.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Connections refused because the cap was reached.
const HTTP_REJECTED: &str = "gleaner_http_connections_rejected_total";

/// A connection that fails with `TimedOut` once idle for [`IDLE_TIMEOUT`] or older than
/// [`CONNECTION_LIFETIME`]; it holds its permit until dropped.
struct GuardedStream {
    inner: TcpStream,
    idle: Pin<Box<Sleep>>,
    lifetime: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl GuardedStream {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            lifetime: Box::pin(tokio::time::sleep(CONNECTION_LIFETIME)),
            _permit: permit,
        }
    }

    /// Fails once a deadline has passed; otherwise arranges to be woken when one does.
    fn check_deadlines(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if self.idle.as_mut().poll(cx).is_ready() || self.lifetime.as_mut().poll(cx).is_ready() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "metrics connection idle or too old",
            ));
        }
        Ok(())
    }

    fn progressed(&mut self) {
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check_deadlines(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.progressed();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.check_deadlines(cx)?;
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if written > 0 {
            this.progressed();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check_deadlines(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The process metrics (CPU, memory, descriptors, threads, start time), read from /proc at
/// each scrape.
static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
    std::sync::LazyLock::new(metrics_process::Collector::default);

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    PROCESS.collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        endpoints.metrics.render(),
    )
}

async fn readiness(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let status = endpoints.health.status();
    if status.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = status
            .last_error
            .unwrap_or_else(|| "no scan has completed yet".into());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    }
}

async fn liveness(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let live = endpoints.health.liveness();
    let since = humantime::format_duration(whole_seconds(live.since_progress));
    match live.stalled_for {
        None => (
            StatusCode::OK,
            format!("alive: {}, last progress {since} ago\n", live.phase),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: no progress for {since} while {} (--stall-timeout {})\n",
                live.phase,
                humantime::format_duration(live.stall_timeout)
            ),
        ),
    }
}

fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_descriptors_to_the_scans() {
        assert_eq!(connection_cap(64), 8);
        assert_eq!(connection_cap(32), 4);
        assert_eq!(connection_cap(4), 1);
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
    }
}
