//! Logging, the Prometheus recorder, and the HTTP endpoints.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use scanner_core::ScanStatus;
use tokio::sync::watch;
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
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    scanner_core::telemetry::describe();
    metrics::describe_gauge!("gleaner_build_info", "Always 1; labels carry the version.");
    metrics::gauge!("gleaner_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
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
    status: watch::Receiver<ScanStatus>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr`; returns the bound address.
///
/// * `/healthz` answers 200 while the process serves requests (liveness).
/// * `/readyz` answers 200 once state is loaded and the last scan succeeded, else 503 with the
///   last error (readiness: an unreachable store or missing watch directory shows here).
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    status: watch::Receiver<ScanStatus>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve metrics on {addr} (choose another --metrics-addr, or `off`)")
    })?;
    let bound = listener
        .local_addr()
        .context("reading the metrics address")?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(Endpoints { metrics, status });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        endpoints.metrics.render(),
    )
}

async fn readiness(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let status = endpoints.status.borrow().clone();
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
