//! `gleaner run`: configuration to a running scanner, signals to a drained exit.

use anyhow::Context;
use scanner_core::processor::{CountBy, CountByConfig, Grep, KeySource};
use scanner_core::{
    BatchLimits, CleanupRules, Compression, DynProcessor, EventTrigger, NameFilter, ReadLimits,
    Readiness, ReadyMarker, ScanReport, Scanner, ScannerConfig, ShutdownTrigger, Stats,
    shutdown_channel,
};
use state_store::Location;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::cli::{CompressArg, MetricsAddr, ProcessorArgs, ProcessorKind, RunArgs};
use crate::telemetry;

/// Runs `gleaner run` to completion.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let source_id = match args.source_id {
        Some(id) => id,
        None => default_source_id()?,
    };
    let storage = args.storage.options();
    let state = Location::parse_with(&args.state, &storage).context("--state")?;
    let output = Location::parse_with(&args.output, &storage).context("--output")?;

    let mut config = ScannerConfig::new(&args.watch, source_id);
    config.readiness = Readiness {
        min_age: args.min_age,
        names: NameFilter::new(&args.include, &args.exclude).context("--include/--exclude")?,
        marker: args
            .ready_marker
            .as_deref()
            .map(ReadyMarker::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--ready-marker: {e}"))?,
        stable_for: args.require_stable,
        ..Readiness::default()
    };
    config.limits = BatchLimits {
        max_files: usize::try_from(args.max_files).unwrap_or(usize::MAX),
        max_bytes: args.max_bytes,
    };
    config.cleanup = CleanupRules {
        after: args.after.clone(),
        quarantine: args.quarantine.clone(),
    };
    config.on_change = args.on_change;
    config.identity = args.identity;
    config.min_free = args.min_free;
    if args.identity == scanner_core::Identity::Content
        && args.after != scanner_core::AfterCommit::Keep
    {
        anyhow::bail!(
            "--identity content cannot be combined with --after delete or move: a new file \
             whose size and first KiB equal those of a file cleaned up earlier would be taken \
             for it and not processed"
        );
    }
    config.snapshot_every = args.snapshot_every;
    config.allow_rescan = args.allow_rescan;
    if let Some(workers) = args.workers {
        config.workers = workers as usize;
    }
    config.compression = match args.compress {
        CompressArg::None => Compression::None,
        CompressArg::Gzip => Compression::Gzip,
    };
    let processor = build_processor(args.processor, &args.processing)?;
    config.read_limits = ReadLimits {
        max_decoded_bytes: args.max_decoded_bytes,
    };

    // Signals first: a SIGTERM while a large state loads must still end in a drained exit 0.
    let (trigger, shutdown) = shutdown_channel();
    tokio::spawn(forward_signals(trigger, args.shutdown_timeout));
    let metrics = telemetry::install_metrics()?;
    let mut scanner = Scanner::open(config, processor, &state, &output).await?;
    let metrics_url = match args.metrics_addr {
        MetricsAddr::On(addr) => {
            let bound = telemetry::serve(addr, metrics, scanner.status()).await?;
            format!("http://{bound}/metrics")
        }
        MetricsAddr::Off => "off".to_string(),
    };
    info!(
        watch = %scanner.config().watch_dir.display(),
        state = %scanner.state_location(),
        output = %output,
        source_id = %scanner.config().source_id,
        metrics = %metrics_url,
        once = args.once,
        interval = %humantime::format_duration(args.interval),
        "gleaner started"
    );

    if args.once {
        // `--once` drains by definition: a SIGTERM does not cut it short (a second one does).
        let mut report = scanner.scan(None).await?;
        // Stability needs a second listing: one more scan once the files seen for the first
        // time can be confirmed (files still changing then stay for the next run).
        if let (Some(_), Some(at), true) = (
            args.require_stable,
            report.next_ready_at,
            report.unstable > 0,
        ) {
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait + std::time::Duration::from_millis(10)).await;
            let second = scanner.scan(None).await?;
            report = merge_reports(report, second);
        }
        let files: usize = report.batches.iter().map(|b| b.files).sum();
        let failed: usize = report.batches.iter().map(|b| b.failed).sum();
        let bytes: u64 = report.batches.iter().map(|b| b.bytes).sum();
        println!(
            "committed {} batch(es): {files} file(s), {failed} failed, {bytes} bytes; \
             {} not ready yet; generation {}",
            report.batches.len(),
            report.in_progress
                + report.too_young
                + report.no_marker
                + report.unstable
                + report.partial_line,
            scanner.state().generation()
        );
    } else {
        let _events = if args.events {
            match EventTrigger::start(&args.watch, args.debounce, scanner.waker()).await {
                Ok(trigger) => Some(trigger),
                Err(e) => {
                    warn!(error = %e, interval = %humantime::format_duration(args.interval),
                        "file-system events unavailable; scanning every interval only");
                    None
                }
            }
        } else {
            None
        };
        scanner.run(args.interval, shutdown).await?;
    }
    Ok(())
}

/// Two consecutive scans as one: the batches of both, what the second left waiting.
fn merge_reports(first: ScanReport, mut second: ScanReport) -> ScanReport {
    let mut batches = first.batches;
    batches.append(&mut second.batches);
    second.batches = batches;
    second
}

/// The processor `--processor` names, configured by its flags; flags of another processor are
/// an error rather than silently ignored.
fn build_processor(kind: ProcessorKind, flags: &ProcessorArgs) -> anyhow::Result<DynProcessor> {
    let given: Vec<(&str, bool, &[ProcessorKind])> = vec![
        ("--pattern", flags.pattern.is_some(), &[ProcessorKind::Grep]),
        ("--sample", flags.sample.is_some(), &[ProcessorKind::Grep]),
        (
            "--key-regex",
            flags.key_regex.is_some(),
            &[ProcessorKind::CountBy],
        ),
        (
            "--key-json",
            flags.key_json.is_some(),
            &[ProcessorKind::CountBy],
        ),
        (
            "--key-column",
            flags.key_column.is_some(),
            &[ProcessorKind::CountBy],
        ),
        (
            "--delimiter",
            flags.delimiter.is_some(),
            &[ProcessorKind::CountBy],
        ),
        ("--top", flags.top.is_some(), &[ProcessorKind::CountBy]),
        ("--sum", flags.sum.is_some(), &[ProcessorKind::CountBy]),
    ];
    let name = |k: ProcessorKind| match k {
        ProcessorKind::Stats => "stats",
        ProcessorKind::Grep => "grep",
        ProcessorKind::CountBy => "count-by",
    };
    for (flag, set, for_kinds) in given {
        if set && !for_kinds.contains(&kind) {
            anyhow::bail!(
                "{flag} is a flag of --processor {}, not of --processor {}",
                name(for_kinds[0]),
                name(kind)
            );
        }
    }
    Ok(match kind {
        ProcessorKind::Stats => DynProcessor::splittable(Stats),
        ProcessorKind::Grep => {
            let pattern = flags
                .pattern
                .as_deref()
                .context("--processor grep needs --pattern")?;
            let grep = Grep::new(pattern, flags.sample.unwrap_or(0))
                .with_context(|| format!("--pattern {pattern:?}"))?;
            DynProcessor::splittable(grep)
        }
        ProcessorKind::CountBy => {
            let key = match (&flags.key_regex, &flags.key_json, flags.key_column) {
                (Some(regex), None, None) => KeySource::Regex(regex.clone()),
                (None, Some(pointer), None) => KeySource::Json(pointer.clone()),
                (None, None, Some(index)) => KeySource::Column {
                    index,
                    delimiter: flags.delimiter.unwrap_or(b','),
                },
                _ => anyhow::bail!(
                    "--processor count-by needs one of --key-regex, --key-json or --key-column"
                ),
            };
            if flags.delimiter.is_some() && flags.key_column.is_none() {
                anyhow::bail!("--delimiter only applies to --key-column");
            }
            DynProcessor::splittable(CountBy::new(CountByConfig {
                key,
                top: flags.top.unwrap_or(100),
                sum: flags.sum.clone(),
            })?)
        }
    })
}

/// The host name, which in Kubernetes is the Pod's name.
fn default_source_id() -> anyhow::Result<String> {
    let host = gethostname::gethostname();
    let host = host
        .to_str()
        .context("the host name is not UTF-8; pass --source-id")?
        .to_string();
    state_store::validate_source_id(&host)
        .with_context(|| "the host name cannot be a source id; pass --source-id".to_string())?;
    Ok(host)
}

/// First SIGTERM or SIGINT: finish the batch, drain, exit 0. A second one: exit at once, which
/// is safe at any moment (an interrupted batch is redone at the next start).
pub async fn forward_signals(trigger: ShutdownTrigger, deadline: std::time::Duration) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; SIGTERM will stop the process without draining");
        return;
    };
    let name = next_signal(&mut term, &mut int).await;
    info!(
        signal = name,
        deadline = %humantime::format_duration(deadline),
        "shutdown requested: finishing the current batch, then draining"
    );
    trigger.request();
    let code = |name: &str| if name == "SIGTERM" { 143 } else { 130 };
    tokio::select! {
        second = next_signal(&mut term, &mut int) => {
            warn!(
                signal = second,
                "second signal: exiting now; an interrupted batch is redone at the next start"
            );
            std::process::exit(code(second));
        }
        () = tokio::time::sleep(deadline) => {
            warn!(
                deadline = %humantime::format_duration(deadline),
                "the drain did not finish within --shutdown-timeout: exiting now; an \
                 interrupted batch is redone at the next start"
            );
            std::process::exit(code(name));
        }
    }
}

async fn next_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
