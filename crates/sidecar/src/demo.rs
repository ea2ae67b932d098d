//! `gleaner demo`: an emitter and a collector on local disk, with a running summary and a final
//! exactly-once check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use scanner_core::{DynProcessor, Readiness, Scanner, ScannerConfig, Stats, shutdown_channel};
use state_store::Location;

use crate::cli::{DemoArgs, MetricsAddr};
use crate::display::{human_bytes, say};
use crate::emitter::Emitter;
use crate::telemetry;

const SOURCE_ID: &str = "demo";

/// Runs the demo until Ctrl-C or `--duration`, then drains and checks the outputs.
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let base = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the demo directory {}", dir.display()))?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("gleaner-demo-")
            .tempdir()
            .context("creating a temporary demo directory")?
            .keep(),
    };
    let watch = base.join("incoming");
    let state_dir = base.join("state");
    let output_dir = base.join("output");
    std::fs::create_dir_all(&watch).context("creating the demo's incoming directory")?;

    let mut config = ScannerConfig::new(&watch, SOURCE_ID.parse()?);
    // The emitter renames files when they are complete, so the in-progress-name rule alone keeps
    // partial files out; no minimum age is needed.
    config.readiness = Readiness {
        min_age: Duration::ZERO,
        ..Readiness::default()
    };
    let metrics = telemetry::install_metrics()?;
    let listener = match args.metrics.resolve(false) {
        MetricsAddr::On(addr) => Some(telemetry::bind(addr).await?),
        MetricsAddr::Off => None,
    };
    let state = Location::parse(path_str(&state_dir)?)?;
    let output = Location::parse(path_str(&output_dir)?)?;
    let mut scanner =
        Scanner::open(config, DynProcessor::splittable(Stats), &state, &output).await?;
    let metrics_line = match listener {
        Some(listener) => {
            let health = telemetry::Health::starting(std::time::Duration::from_secs(600));
            health.attach(&scanner);
            let bound = telemetry::serve(listener, metrics, health)?;
            format!("http://{bound}/metrics   (also /healthz, /readyz)")
        }
        None => "off".into(),
    };

    say!("Gleaner demo: an emitter writes service logs, Gleaner collects them.\n");
    say!("  emitter writes  {}", watch.display());
    say!("  state           {}", scanner.state_location());
    say!("  outputs         {}/{SOURCE_ID}/", output);
    say!("  metrics         {metrics_line}");
    match args.duration {
        Some(d) => say!(
            "\nRunning for {}; Ctrl-C stops earlier.\n",
            humantime::format_duration(d)
        ),
        None => say!("\nPress Ctrl-C to stop (Gleaner drains, then checks its outputs).\n"),
    }

    let wake = scanner.waker();
    let emitter = Emitter::start(watch.clone(), args.rate, move |_| wake.notify_one());
    let progress = std::sync::Arc::clone(&emitter.progress);
    let (trigger, shutdown) = shutdown_channel();
    let status = scanner.status();
    let started = Instant::now();
    let summary = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = status.borrow().clone();
            // A reader gone is quiet (see `say!`); nothing else can stop a ticker.
            let _ = crate::display::write_line(format_args!(
                "[{:>5}s] emitted {:>4} files {:>9} | committed generation {:>4}: {:>4} files {:>9}, {} failed{}",
                started.elapsed().as_secs(),
                progress.files.load(Ordering::Relaxed),
                human_bytes(progress.bytes.load(Ordering::Relaxed)),
                s.generation,
                s.files_done + s.files_failed,
                human_bytes(s.bytes),
                s.files_failed,
                s.last_error
                    .map(|e| format!(" | error: {e}"))
                    .unwrap_or_default(),
            ));
        }
    });

    let stop_after = args.duration;
    let signals = tokio::spawn(async move {
        match stop_after {
            Some(d) => tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = wait_for_interrupt() => {}
            },
            None => wait_for_interrupt().await,
        }
        trigger
    });
    let mut wait_shutdown = shutdown.clone();
    let run = scanner.run(args.interval, shutdown);
    tokio::pin!(run);
    // Stop the emitter first, so that the drain sees every file it completed.
    let trigger = tokio::select! {
        result = &mut run => { result?; None }
        trigger = signals => Some(trigger.context("waiting for Ctrl-C")?),
    };
    say!("\nStopping the emitter, then draining…");
    let emitted = tokio::task::spawn_blocking(move || emitter.stop())
        .await
        .context("stopping the emitter")??;
    if let Some(trigger) = trigger {
        trigger.request();
        wait_shutdown.requested().await;
        run.await?;
    }
    summary.abort();

    let report = check_outputs(&output_dir.join(SOURCE_ID), &emitted)?;
    say!(
        "\nEmitted {} files; the outputs hold {} lines in {} objects: {} emitted files missing, \
         {} duplicated.",
        emitted.len(),
        report.lines,
        report.objects,
        report.missing,
        report.duplicated
    );
    say!("\nLook around:");
    say!("  ls {}", output_dir.join(SOURCE_ID).display());
    say!(
        "  jq -c '{{path, lines: .result.lines, words: .result.words}}' {}/*.ndjson | head",
        output_dir.join(SOURCE_ID).display()
    );
    say!(
        "  gleaner run --once --watch {} --state {} --output {} --source-id {SOURCE_ID}",
        watch.display(),
        state_dir.display(),
        output_dir.display()
    );
    if report.missing > 0 || report.duplicated > 0 {
        anyhow::bail!("the outputs do not hold every emitted file exactly once");
    }
    Ok(())
}

struct OutputCheck {
    objects: usize,
    lines: usize,
    missing: usize,
    duplicated: usize,
}

/// Counts, for every emitted file, its lines in the outputs.
fn check_outputs(dir: &Path, emitted: &[String]) -> anyhow::Result<OutputCheck> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut objects = 0;
    let mut lines = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path: PathBuf = entry.path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        objects += 1;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("parsing a line of {}", path.display()))?;
            lines += 1;
            if let Some(p) = value["path"].as_str() {
                *seen.entry(p.to_string()).or_default() += 1;
            }
        }
    }
    let missing = emitted.iter().filter(|p| !seen.contains_key(*p)).count();
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    Ok(OutputCheck {
        objects,
        lines,
        missing,
        duplicated,
    })
}

async fn wait_for_interrupt() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}
