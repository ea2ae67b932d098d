//! `gleaner run`: configuration to a running scanner, signals to a drained exit.

use anyhow::Context;
use scanner_core::processor::{CountBy, CountByConfig, Grep, KeySource};
use std::time::Duration;

use scanner_core::{
    Baseline, BatchLimits, CleanupRules, Compression, ConfigError, DynProcessor, ErrorChain,
    EventTrigger, Labels, NameFilter, ReadLimits, Readiness, ReplaySelection, RetryPolicy,
    ScanError, Scanner, ScannerConfig, Shutdown, ShutdownTrigger, Stats, shutdown_channel,
};
use state_store::{Location, RelPath, SourceId};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::cli::{CompressArg, MetricsAddr, ProcessorArgs, ProcessorKind, ReplayArgs, RunArgs};
use crate::display::say;
use crate::telemetry::Health;
use crate::{Usage, telemetry};

/// Runs `gleaner run` to completion.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let source_id = match &args.state.source_id {
        Some(id) => id.clone(),
        None => default_source_id()?,
    };
    let (config, processor) = configure(&args, source_id).map_err(|e| e.context(Usage))?;
    let (state, output) = locations(&args)?;
    // Signals first: a SIGTERM while a large state loads must still end in a drained exit 0.
    let (trigger, shutdown) = shutdown_channel();
    forward_signals(trigger, args.runtime.shutdown_timeout);
    let endpoints = Endpoints::start(&args, &shutdown).await?;
    let mut scanner = endpoints
        .open_scanner(&args, &config, &processor, &state, &output, &shutdown)
        .await?;
    endpoints.health.attach(&scanner);
    // A refused baseline leaves this process's lease to age: it may have replaced the lease of
    // the live writer it was refused for, which renews its own within 30 seconds.
    if args.state.baseline {
        baseline(&mut scanner, args.state.baseline_older_than).await?;
    }
    if !args.runtime.once {
        tokio::spawn(crate::memory::trim_after_scans(scanner.status()));
    }
    info!(
        watch = %scanner.config().watch_dir.display(),
        state = %scanner.state_location(),
        output = %output,
        source_id = %scanner.config().source_id,
        metrics = %endpoints.metrics_url,
        once = args.runtime.once,
        interval = %humantime::format_duration(args.runtime.interval),
        "gleaner started"
    );
    let result = if args.runtime.once {
        run_once(&mut scanner).await
    } else {
        endpoints
            .run_until_drained(&args, &mut scanner, shutdown)
            .await
    };
    // The source has no writer from now on: `state gc` need not wait for the lease to age.
    if let Err(error) = scanner.release_lease().await {
        warn!(error = %ErrorChain(&error), "cannot remove the writer's lease; it ages out in 5 minutes");
    }
    result
}

/// Runs `gleaner state replay`: opens the source as `gleaner run` does, replays the selected
/// files, and prints what was committed.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let source_id = match &args.run.state.source_id {
        Some(id) => id.clone(),
        None => default_source_id()?,
    };
    let (config, processor) = configure(&args.run, source_id).map_err(|e| e.context(Usage))?;
    let (state, output) = locations(&args.run)?;
    let mut scanner = Scanner::open(config, processor, &state, &output).await?;
    let result = match replay_selection(&args, &scanner.config().watch_dir) {
        Ok(selection) => scanner
            .replay(&selection)
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    // The lease this process took goes, unless the replay was refused for another writer's:
    // it may have replaced that lease, which its writer renews within 30 seconds.
    let refused_for_a_writer = result.as_ref().is_err_and(|e| {
        matches!(
            e.downcast_ref::<ScanError>(),
            Some(ScanError::LiveWriter { .. })
        )
    });
    if !refused_for_a_writer {
        if let Err(error) = scanner.release_lease().await {
            warn!(error = %ErrorChain(&error), "cannot remove the writer's lease; it ages out in 5 minutes");
        }
    }
    let report = result?;
    if let Some(batch) = &report.recovered {
        say!(
            "first redid the interrupted generation {}: {} file(s), {}",
            batch.generation,
            batch.files,
            batch.output
        );
    }
    for (path, why) in &report.skipped {
        say!("skipped {path}: {why}");
    }
    for batch in &report.batches {
        say!(
            "replayed {} file(s) as generation {} ({} failed, {} bytes): {}",
            batch.files,
            batch.generation,
            batch.failed,
            batch.bytes,
            batch.output
        );
    }
    Ok(())
}

/// The files `gleaner state replay` names, relative to the watch root, and its filters.
fn replay_selection(
    args: &ReplayArgs,
    watch_dir: &std::path::Path,
) -> anyhow::Result<ReplaySelection> {
    use std::os::unix::ffi::OsStrExt;
    let mut selection = ReplaySelection::default();
    for file in &args.files {
        let relative = if file.is_absolute() {
            // The watch root is resolved (links followed): so is the file's directory.
            let parent = file.parent().unwrap_or(file);
            let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
            let full = parent.join(file.file_name().unwrap_or_default());
            full.strip_prefix(watch_dir)
                .map(std::path::Path::to_path_buf)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{} is not inside the watched directory {}",
                        file.display(),
                        watch_dir.display()
                    )
                })
                .context(Usage)?
        } else {
            file.clone()
        };
        selection
            .paths
            .push(RelPath::new(relative.as_os_str().as_bytes()));
    }
    selection.generation = args.generation;
    selection.modified_after = args.modified_after;
    selection.modified_before = args.modified_before;
    Ok(selection)
}

/// `--state` and `--output` as locations (a mistake in them is a usage error), after a warning
/// when `--stall-timeout` is shorter than one storage request may take.
fn locations(args: &RunArgs) -> anyhow::Result<(Location, Location)> {
    let storage = args.state.storage.options();
    let slowest_request = storage
        .retry_timeout
        .saturating_add(storage.request_timeout);
    if args.runtime.stall_timeout <= slowest_request {
        warn!(
            stall_timeout = %humantime::format_duration(args.runtime.stall_timeout),
            slowest_request = %humantime::format_duration(slowest_request),
            "--stall-timeout is not longer than one storage request may take \
             (--storage-retry-timeout plus --storage-timeout): a slow store will count as stalled"
        );
    }
    let state = Location::parse_with(&args.state.state, &storage)
        .context("--state")
        .context(Usage)?;
    let output = Location::parse_with(&args.output.output, &storage)
        .context("--output")
        .context(Usage)?;
    Ok((state, output))
}

/// `--baseline`: the files already there recorded as not processed, at the first start only.
async fn baseline(scanner: &mut Scanner, older_than: Option<Duration>) -> anyhow::Result<()> {
    match scanner.baseline(older_than).await? {
        Baseline::Committed {
            generation,
            files,
            bytes,
            younger,
            ..
        } => say!(
            "baselined {files} file(s), {bytes} bytes, as generation {generation}: recorded as \
             seen, not processed; {younger} younger file(s) left to process"
        ),
        Baseline::Skipped { generation } => {
            info!(
                generation,
                "--baseline: the source already has committed state; nothing baselined"
            );
            say!(
                "baseline skipped: the source is at generation {generation} (a baseline is taken \
                 at the first start only)"
            );
        }
        _ => {}
    }
    Ok(())
}

/// `--once`: everything ready now, then a summary on standard output.
async fn run_once(scanner: &mut Scanner) -> anyhow::Result<()> {
    // `--once` drains by definition: a SIGTERM does not cut it short (a second one does).
    let report = scanner.run_once().await?;
    say!(
        "committed {} batch(es): {} file(s), {} failed, {} bytes; {} not ready yet; \
         generation {}",
        report.batches.len(),
        report.committed_files(),
        report.failed_files(),
        report.bytes(),
        report.not_ready(),
        scanner.state().generation()
    );
    Ok(())
}

/// The HTTP endpoints of a run, and what they report on and how long they stay up.
struct Endpoints {
    health: Health,
    /// `http://ADDR/metrics`, or `off`.
    metrics_url: String,
    linger: FatalLinger,
}

impl Endpoints {
    /// Binds the port (before anything is written: a taken one fails the start cleanly) and
    /// serves from then on: a probe sees a slow start (a big state, a store not reachable yet)
    /// as starting, not as a dead process.
    async fn start(args: &RunArgs, shutdown: &Shutdown) -> anyhow::Result<Self> {
        let metrics = telemetry::install_metrics()?;
        let listener = match args.runtime.metrics.resolve(args.runtime.once) {
            MetricsAddr::On(addr) => Some(telemetry::bind(addr).await?),
            MetricsAddr::Off => None,
        };
        let linger = FatalLinger {
            period: if args.runtime.once {
                Duration::ZERO
            } else {
                args.runtime.fatal_linger
            },
            shutdown: shutdown.clone(),
        };
        let health = Health::starting(args.runtime.stall_timeout);
        let metrics_url = match listener {
            Some(listener) => {
                let bound = telemetry::serve(listener, metrics, health.clone())?;
                format!("http://{bound}/metrics")
            }
            None => "off".to_string(),
        };
        Ok(Self {
            health,
            metrics_url,
            linger,
        })
    }

    fn serving(&self) -> bool {
        self.metrics_url != "off"
    }

    /// Opens the scanner. A run that ends by itself (a Job) fails, and is retried as a whole; a
    /// sidecar waits for what may pass (a store not reachable yet), since exiting would
    /// restart it, and at a Pod's start keep the emitter from starting.
    async fn open_scanner(
        &self,
        args: &RunArgs,
        config: &ScannerConfig,
        processor: &DynProcessor,
        state: &Location,
        output: &Location,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Scanner> {
        let mut starts = StartAttempts::new(args.runtime.interval);
        loop {
            let error = match Scanner::open(config.clone(), processor.clone(), state, output).await
            {
                Ok(scanner) => return Ok(scanner),
                Err(error) => error,
            };
            self.health.start_failed(&error, args.runtime.stall_timeout);
            if self.serving() && self.linger.applies_to(&error) {
                self.linger.clone().wait(&error).await;
                return Err(error.into());
            }
            if args.runtime.once || error.is_fatal() {
                return Err(error.into());
            }
            let retry_in = starts.next_wait();
            warn!(error = %ErrorChain(&error), retry_in = ?retry_in,
                "cannot start yet; trying again");
            let mut waiting = shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(retry_in) => {}
                () = waiting.requested() => return Err(error.into()),
            }
        }
    }

    /// Scans until SIGTERM, drains, and ends as the drain did: 0 when complete, exit 4
    /// ([`DrainIncomplete`]) when it left files.
    async fn run_until_drained(
        &self,
        args: &RunArgs,
        scanner: &mut Scanner,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let interval = args.runtime.interval;
        let _events = if args.runtime.events {
            let watch = &scanner.config().watch_dir;
            match EventTrigger::start(watch, args.runtime.debounce, scanner.touched()).await {
                Ok(trigger) => Some(trigger),
                Err(e) => {
                    warn!(error = %e, interval = %humantime::format_duration(interval),
                        "file-system events unavailable; scanning every interval only");
                    None
                }
            }
        } else {
            None
        };
        let requested = shutdown.clone();
        let drained = match scanner.run(interval, shutdown).await {
            Ok(drained) => drained,
            Err(error) => {
                if self.serving() && self.linger.applies_to(&error) {
                    self.linger.clone().wait(&error).await;
                }
                return Err(error.into());
            }
        };
        if drained.complete {
            return Ok(());
        }
        if self.serving() {
            self.serve_leftovers(
                &requested,
                args.runtime.shutdown_timeout,
                drained.leftovers.len(),
            )
            .await;
        }
        Err(DrainIncomplete {
            leftovers: drained.leftovers.len(),
            last_error: drained.last_error,
        }
        .into())
    }

    /// The leftovers gauge lives only as long as the drain: keeps it scrapeable for what
    /// remains of --shutdown-timeout (at most --fatal-linger), so that the alert on leftovers
    /// sees it before the Pod is gone.
    async fn serve_leftovers(&self, requested: &Shutdown, timeout: Duration, leftovers: usize) {
        let deadline = requested
            .requested_at()
            .map(|at| at + timeout)
            .unwrap_or_else(std::time::Instant::now);
        let remaining = deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(Duration::from_secs(1))
            .min(self.linger.period);
        if !remaining.is_zero() {
            info!(
                leftovers,
                serving_for = ?remaining,
                "drain incomplete; serving /metrics until shortly before the shutdown \
                 deadline so that the leftovers are scraped"
            );
            tokio::time::sleep(remaining).await;
        }
    }
}

/// Waits between attempts to start: 1 s, doubling, at most the scan interval or a minute.
struct StartAttempts {
    next: Duration,
    max: Duration,
}

impl StartAttempts {
    fn new(interval: Duration) -> Self {
        Self {
            next: Duration::from_secs(1),
            max: interval.clamp(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// How long the endpoints stay up after an error that stops the process, so that Prometheus
/// scrapes the failure (`gleaner_fenced`, `gleaner_errors_total`) before the process is gone.
#[derive(Clone)]
struct FatalLinger {
    period: Duration,
    shutdown: Shutdown,
}

impl FatalLinger {
    /// Errors that stop the process for good (fenced, damaged state), not mistakes in the
    /// command line, which show at once.
    fn applies_to(&self, error: &ScanError) -> bool {
        !self.period.is_zero() && error.is_fatal() && error.stage() != "config"
    }

    /// Waits out the period, or until SIGTERM/SIGINT.
    async fn wait(mut self, error: &ScanError) {
        warn!(
            error = %ErrorChain(error),
            linger = %humantime::format_duration(self.period),
            "stopping; serving /metrics until then (--fatal-linger) so that the failure is scraped"
        );
        tokio::select! {
            () = tokio::time::sleep(self.period) => {}
            () = self.shutdown.requested() => {}
        }
    }
}

/// The drain at shutdown left files in the watched directory (each is named in the log):
/// exit code 4.
#[derive(Debug)]
pub struct DrainIncomplete {
    /// How many files were left.
    pub leftovers: usize,
    /// Why the drain's last scan failed, if it did.
    pub last_error: Option<String>,
}

impl std::fmt::Display for DrainIncomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the drain left {} file(s) in the watched directory, not committed (each is named in \
             the log above)",
            self.leftovers
        )?;
        match &self.last_error {
            Some(error) => write!(f, "; its scans failed until the deadline: {error}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for DrainIncomplete {}

/// The scanner's configuration and processor, from the flags. Every error here is a mistake
/// in the command line.
fn configure(args: &RunArgs, source_id: SourceId) -> anyhow::Result<(ScannerConfig, DynProcessor)> {
    let mut config = ScannerConfig::new(&args.input.watch, source_id);
    config.readiness = Readiness {
        min_age: args.readiness.min_age,
        names: NameFilter::new(&args.input.include, &args.input.exclude)
            .context("--include/--exclude")?,
        marker: args.readiness.ready_marker.clone(),
        stable_for: args.readiness.require_stable,
        max_clock_skew: args.readiness.max_clock_skew,
        ..Readiness::default()
    };
    config.limits = BatchLimits {
        max_files: usize::try_from(args.output.max_files).unwrap_or(usize::MAX),
        max_bytes: args.output.max_bytes,
        max_output_bytes: args.output.max_output_bytes,
    };
    config.cleanup = CleanupRules {
        after: args.lifecycle.after.clone(),
        quarantine: args.lifecycle.quarantine.clone(),
    };
    config.on_change = args.lifecycle.on_change;
    config.identity = args.lifecycle.identity;
    config.min_free = args.lifecycle.min_free;
    config.watch_capacity = args.lifecycle.watch_capacity;
    config.snapshot_every = args.state.snapshot_every;
    config.allow_rescan = args.state.allow_rescan;
    config.adopt_source = args.state.adopt_source;
    config.share_root = args.state.share_root;
    if let Some(workers) = args.runtime.workers {
        config.workers = workers as usize;
    }
    config.compression = match args.output.compress {
        CompressArg::None => Compression::None,
        CompressArg::Gzip => Compression::Gzip,
    };
    config.output_layout = args.output.output_layout.layout();
    config.labels = Labels::new(args.output.labels.iter().cloned()).map_err(ConfigError::from)?;
    config.partition_labels = args.output.partition_labels.clone();
    config.read_limits = ReadLimits {
        max_decoded_bytes: args.processing.max_decoded_bytes,
    };
    config.retry = RetryPolicy::new(args.processing.retries, args.processing.retry_backoff);
    config.drain = args.runtime.drain;
    config.drain_settle = args.runtime.drain_settle;
    config.ship_leftovers = args.runtime.ship_leftovers;
    config.shutdown_timeout = args.runtime.shutdown_timeout;
    config.stall_timeout = args.runtime.stall_timeout;
    config.validate()?;
    let processor = build_processor(&args.processing)?;
    Ok((config, processor))
}

/// The processor `--processor` names, configured by its flags; flags of another processor are
/// an error rather than silently ignored.
fn build_processor(flags: &ProcessorArgs) -> anyhow::Result<DynProcessor> {
    let kind = flags.processor;
    use ProcessorKind::{CountBy as CountByKind, Grep as GrepKind};
    let owners = [
        ("--pattern", flags.pattern.is_some(), GrepKind),
        ("--sample", flags.sample.is_some(), GrepKind),
        ("--key-regex", flags.key_regex.is_some(), CountByKind),
        ("--key-json", flags.key_json.is_some(), CountByKind),
        ("--key-column", flags.key_column.is_some(), CountByKind),
        ("--delimiter", flags.delimiter.is_some(), CountByKind),
        ("--top", flags.top.is_some(), CountByKind),
        ("--sum", flags.sum.is_some(), CountByKind),
    ];
    for (flag, given, owner) in owners {
        if given && owner != kind {
            anyhow::bail!(
                "{flag} is a flag of --processor {}, not of --processor {}",
                owner.name(),
                kind.name()
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
fn default_source_id() -> anyhow::Result<SourceId> {
    let host = gethostname::gethostname();
    let host = host
        .to_str()
        .context("the host name is not UTF-8; pass --source-id")?;
    SourceId::new(host).context("the host name cannot be a source id; pass --source-id")
}

/// First SIGTERM or SIGINT: finish the batch, drain, exit 0. A second one: exit at once, which
/// is safe at any moment (an interrupted batch is redone at the next start).
///
/// The handlers are installed before this returns, not in the task it spawns: a task may not
/// run for a while on a loaded machine, and a SIGTERM that came before its handler would kill
/// the process undrained even though the start-up log line was already written.
pub fn forward_signals(trigger: ShutdownTrigger, deadline: std::time::Duration) {
    let (Ok(term), Ok(int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; SIGTERM will stop the process without draining");
        return;
    };
    tokio::spawn(drain_on_signal(trigger, deadline, term, int));
}

/// What [`forward_signals`] does with the signals once they come.
async fn drain_on_signal(
    trigger: ShutdownTrigger,
    deadline: std::time::Duration,
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
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

/// The next SIGTERM or SIGINT, by name.
pub async fn next_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
