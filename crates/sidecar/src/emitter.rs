//! The demo's emitter: writes realistic service logs the way well-behaved programs do, under a
//! temporary name, renamed when complete. `gleaner demo` runs it beside a scanner; `gleaner
//! emit` runs it alone (the emitter container of the Helm chart's example).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::cli::EmitArgs;
use crate::run::next_signal;

const SERVICES: [&str; 5] = ["checkout", "payments", "search", "inventory", "auth"];
const PATHS: [&str; 6] = [
    "/api/cart",
    "/api/orders",
    "/api/search",
    "/api/items",
    "/login",
    "/healthz",
];

/// Counters the emitter updates as it completes files.
#[derive(Debug, Default)]
pub struct EmitterProgress {
    /// Files completed (renamed to their final name).
    pub files: AtomicU64,
    /// Bytes in completed files.
    pub bytes: AtomicU64,
}

/// A running emitter thread.
pub struct Emitter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<std::io::Result<Vec<String>>>,
    /// Live counters.
    pub progress: Arc<EmitterProgress>,
}

impl Emitter {
    /// Starts writing about `rate` files per second under `root`, calling `completed` with the
    /// relative path of each file once it has its final name.
    pub fn start(root: PathBuf, rate: f64, completed: impl Fn(&str) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(EmitterProgress::default());
        let thread = {
            let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
            std::thread::Builder::new()
                .name("demo-emitter".into())
                .spawn(move || emit(&root, rate, &stop, &progress, &completed))
                .expect("spawning the emitter thread")
        };
        Self {
            stop,
            thread,
            progress,
        }
    }

    /// Stops after the file in progress; returns the relative paths of all completed files.
    pub fn stop(self) -> std::io::Result<Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the emitter thread panicked")))
    }
}

/// `gleaner emit`: writes files until SIGTERM, SIGINT or `--duration`, printing each completed
/// file's relative path on standard output; completes the file in progress before it exits.
pub async fn run(args: EmitArgs) -> anyhow::Result<()> {
    fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the emit directory {}", args.dir.display()))?;
    let (mut term, mut int) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?,
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the SIGINT handler")?,
    );
    let emitter = Emitter::start(args.dir.clone(), args.rate, |rel| {
        // One line per file, flushed at once: a reader sees every completed file even if the
        // process is killed right after.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{rel}").and_then(|()| out.flush());
    });
    let progress = Arc::clone(&emitter.progress);
    tracing::info!(dir = %args.dir.display(), rate = args.rate, "emitting files");
    let stopped_by = tokio::select! {
        signal = next_signal(&mut term, &mut int) => signal,
        () = sleep_or_forever(args.duration) => "--duration",
    };
    let written = tokio::task::spawn_blocking(move || emitter.stop())
        .await
        .context("waiting for the emitter")?
        .with_context(|| format!("writing into {}", args.dir.display()))?;
    tracing::info!(
        stopped_by,
        files = written.len(),
        bytes = progress.bytes.load(Ordering::Relaxed),
        "emitter stopped; every file it started is complete"
    );
    Ok(())
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

fn emit(
    root: &Path,
    rate: f64,
    stop: &AtomicBool,
    progress: &EmitterProgress,
    completed: &dyn Fn(&str),
) -> std::io::Result<Vec<String>> {
    let pause = Duration::from_secs_f64(1.0 / rate.clamp(0.01, 1000.0));
    let mut rng = fastrand::Rng::new();
    let run_id = format!("{:06x}", rng.u32(..1 << 24));
    let mut written = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let service = SERVICES[rng.usize(..SERVICES.len())];
        // Mostly small files, now and then a large one.
        let lines = if seq % 12 == 0 {
            rng.usize(60_000..150_000)
        } else {
            rng.usize(200..3_000)
        };
        let rel = format!("{service}/{service}-{run_id}-{seq:06}.log");
        let bytes = write_log(root, &rel, service, lines, &mut rng)?;
        progress.files.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        completed(&rel);
        written.push(rel);
        std::thread::sleep(pause);
    }
    Ok(written)
}

/// Writes `<rel>.tmp`, then renames it to `rel`: readers never see a partial file under its
/// final name.
fn write_log(
    root: &Path,
    rel: &str,
    service: &str,
    lines: usize,
    rng: &mut fastrand::Rng,
) -> std::io::Result<u64> {
    let target = root.join(rel);
    let temporary = root.join(format!("{rel}.tmp"));
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut out = BufWriter::with_capacity(1 << 16, fs::File::create(&temporary)?);
    let mut at = SystemTime::now() - Duration::from_secs(60);
    for _ in 0..lines {
        at += Duration::from_millis(rng.u64(1..40));
        let level = match rng.u8(..100) {
            0..5 => "ERROR",
            5..15 => "WARN",
            _ => "INFO",
        };
        let status = match level {
            "ERROR" => 500,
            "WARN" => 429,
            _ => 200,
        };
        writeln!(
            out,
            "{} level={level} service={service} request_id={:016x} method={} path={} status={status} latency_ms={} msg=\"{}\"",
            humantime::format_rfc3339_millis(at),
            rng.u64(..),
            if rng.bool() { "GET" } else { "POST" },
            PATHS[rng.usize(..PATHS.len())],
            rng.u32(1..900),
            match level {
                "ERROR" => "upstream timed out",
                "WARN" => "rate limited, retrying",
                _ => "request served",
            },
        )?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    fs::rename(&temporary, &target)?;
    Ok(bytes)
}
