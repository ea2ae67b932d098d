//! Storage faults: an `ObjectStore` wrapper injects errors, latency, timeouts (a request that
//! hangs, then fails as a client timeout would), and failures after a write landed (the answer
//! lost on the way back), under both the state and the output location, while
//! a running scanner collects files an emitter keeps writing. The scanner retries with backoff,
//! reports the trouble through its status (what `/readyz` serves), and in the end every file is
//! in the outputs exactly once and the state log verifies. A total outage of a minute
//! (`GLEANER_OUTAGE_SECS`, default 60) is survived by the same scanner, without a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use scanner_core::{DynProcessor, Scanner, ScannerConfig, Stats, shutdown_channel};
use state_store::{Location, StateLog};

/// How the wrapped store behaves now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Healthy = 0,
    /// Random errors, latency, and writes that land but report failure.
    Flaky = 1,
    /// Every call fails.
    Outage = 2,
}

/// Switches and counters shared by the test and the wrapped stores.
#[derive(Debug, Default)]
struct Faults {
    mode: AtomicU8,
    rng: Mutex<Option<fastrand::Rng>>,
    errors: AtomicU64,
    landed_then_failed: AtomicU64,
    delayed: AtomicU64,
    timed_out: AtomicU64,
}

impl Faults {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            0 => Mode::Healthy,
            1 => Mode::Flaky,
            _ => Mode::Outage,
        }
    }

    fn roll(&self, below: u32) -> bool {
        self.rng
            .lock()
            .unwrap()
            .get_or_insert_with(|| fastrand::Rng::with_seed(7))
            .u32(0..100)
            < below
    }

    fn injected(&self, what: &str) -> object_store::Error {
        self.errors.fetch_add(1, Ordering::SeqCst);
        object_store::Error::Generic {
            store: "faulty",
            source: format!("injected fault: {what}").into(),
        }
    }

    /// Before a call: latency, and maybe an error instead of the call.
    async fn before(&self, what: &str) -> object_store::Result<()> {
        match self.mode() {
            Mode::Healthy => Ok(()),
            Mode::Outage => Err(self.injected(what)),
            Mode::Flaky => {
                // A request that hangs until the client's timeout gives up on it (what
                // `--storage-timeout` does for the HTTP stores).
                if self.roll(3) {
                    self.timed_out.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return Err(self.injected(&format!("{what} timed out")));
                }
                if self.roll(30) {
                    self.delayed.fetch_add(1, Ordering::SeqCst);
                    let ms = self.rng.lock().unwrap().as_mut().unwrap().u64(1..40);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                if self.roll(10) {
                    Err(self.injected(what))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// After a write landed: maybe the answer is lost.
    fn after_write(&self, what: &str) -> object_store::Result<()> {
        if self.mode() == Mode::Flaky && self.roll(25) {
            self.landed_then_failed.fetch_add(1, Ordering::SeqCst);
            return Err(self.injected(&format!("{what} landed, answer lost")));
        }
        Ok(())
    }
}

/// An `ObjectStore` that misbehaves as `faults` says.
#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.faults.before("put").await?;
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.faults.after_write("put")?;
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.faults.before("put_multipart").await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.faults.before("get").await?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if self.faults.mode() == Mode::Outage {
            let error = self.faults.injected("delete");
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let failing = match self.faults.mode() {
            Mode::Healthy => false,
            Mode::Flaky => self.faults.roll(10),
            Mode::Outage => true,
        };
        if failing {
            let error = self.faults.injected("list");
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.faults.before("list_with_delimiter").await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.faults.before("copy").await?;
        self.inner.copy_opts(from, to, options).await?;
        self.faults.after_write("copy")
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    watch: std::path::PathBuf,
    faults: Arc<Faults>,
    state_inner: Arc<InMemory>,
    output_inner: Arc<InMemory>,
    state: Location,
    output: Location,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir(&watch).unwrap();
    let faults = Arc::new(Faults::default());
    let state_inner = Arc::new(InMemory::new());
    let output_inner = Arc::new(InMemory::new());
    let wrap = |inner: &Arc<InMemory>, name: &str| {
        let store: Arc<dyn ObjectStore> = Arc::new(FaultyStore {
            inner: Arc::clone(inner) as Arc<dyn ObjectStore>,
            faults: Arc::clone(&faults),
        });
        Location::from_store(store, Path::from(name), format!("faulty://{name}"))
    };
    let state = wrap(&state_inner, "state");
    let output = wrap(&output_inner, "output");
    Setup {
        _dir: dir,
        watch,
        faults,
        state_inner,
        output_inner,
        state,
        output,
    }
}

/// Every output line under the (healthy) output store, by path.
async fn output_counts(store: &Arc<InMemory>) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut counts: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let objects: Vec<ObjectMeta> = store
        .list(Some(&Path::from("output")))
        .map(|m| m.unwrap())
        .collect()
        .await;
    for meta in objects {
        if !meta.location.as_ref().ends_with(".ndjson") {
            continue;
        }
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line: serde_json::Value = serde_json::from_slice(line).unwrap();
            counts
                .entry(line["path"].as_str().unwrap().to_string())
                .or_default()
                .push(line);
        }
    }
    counts
}

fn write_files(watch: &std::path::Path, from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .map(|i| {
            let rel = format!("f{i:05}.log");
            let data = format!("line {i}\nsecond line of {i}\n").into_bytes();
            let staged = watch.join(format!("{rel}.tmp"));
            std::fs::write(&staged, &data).unwrap();
            std::fs::rename(&staged, watch.join(&rel)).unwrap();
            (rel, data)
        })
        .collect()
}

/// Runs a scanner over faulty storage: `phases` lists (mode, how long, files written in it).
async fn campaign(phases: &[(Mode, Duration, usize)]) {
    let s = setup();
    let mut config = ScannerConfig::new(&s.watch, "faulty-source".parse().unwrap());
    config.readiness.min_age = Duration::ZERO;
    config.limits.max_files = 7;
    config.snapshot_every = 4;
    let mut scanner = Scanner::open(config, DynProcessor::splittable(Stats), &s.state, &s.output)
        .await
        .expect("opens while storage is healthy");
    let mut status = scanner.status();
    let (trigger, shutdown) = shutdown_channel();
    let running =
        tokio::spawn(async move { scanner.run(Duration::from_millis(30), shutdown).await });

    let mut expected = Vec::new();
    let mut saw_not_ready = false;
    let mut total = 0;
    for &(mode, lasting, files) in phases {
        s.faults.set(mode);
        let base = total;
        total += files;
        let started = tokio::time::Instant::now();
        loop {
            // The emitter writes the phase's files evenly over it.
            let share = (started.elapsed().as_secs_f64() / lasting.as_secs_f64()).min(1.0);
            let due = base + (files as f64 * share) as usize;
            if due > expected.len() {
                let from = expected.len();
                expected.extend(write_files(&s.watch, from, due - from));
            }
            let now = status.borrow_and_update().clone();
            if !now.ready && now.last_error.is_some() {
                saw_not_ready = true;
            }
            if started.elapsed() >= lasting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    s.faults.set(Mode::Healthy);
    // Healthy again: wait until everything written is committed, with the same scanner.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let counts = output_counts(&s.output_inner).await;
        let ready = status.borrow().ready;
        if ready && expected.iter().all(|(rel, _)| counts.contains_key(rel)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not everything committed after healing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    trigger.request();
    running
        .await
        .unwrap()
        .expect("the scanner never stopped on storage faults");

    // Exactly once, with the right results; only committed generations have outputs.
    let counts = output_counts(&s.output_inner).await;
    for (rel, data) in &expected {
        let lines = &counts[rel];
        assert_eq!(lines.len(), 1, "{rel} appears {} times", lines.len());
        assert_eq!(lines[0]["result"]["bytes"], data.len());
        assert_eq!(lines[0]["result"]["lines"], 2);
    }
    assert_eq!(counts.len(), expected.len());
    let healthy = Location::from_store(
        Arc::clone(&s.state_inner) as Arc<dyn ObjectStore>,
        Path::from("state"),
        "memory://state",
    );
    let log = StateLog::new(&healthy, &"faulty-source".parse().unwrap());
    let verification = log.verify().await.expect("the state log verifies");
    let loaded = log.load().await.unwrap();
    assert!(loaded.pending.is_none(), "no interrupted batch left");
    assert_eq!(loaded.state.len(), expected.len());
    eprintln!(
        "faults: {} files exactly once; {} errors injected ({} timeouts), {} writes landed but \
         reported failed, {} calls delayed; status went not-ready: {saw_not_ready}; \
         {verification:?}",
        expected.len(),
        s.faults.errors.load(Ordering::SeqCst),
        s.faults.timed_out.load(Ordering::SeqCst),
        s.faults.landed_then_failed.load(Ordering::SeqCst),
        s.faults.delayed.load(Ordering::SeqCst),
    );
    assert!(s.faults.errors.load(Ordering::SeqCst) > 0);
    assert!(
        saw_not_ready,
        "failures show in the status (and so in /readyz)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_errors_latency_and_lost_answers_lose_and_duplicate_nothing() {
    campaign(&[
        (Mode::Healthy, Duration::from_millis(500), 40),
        (Mode::Flaky, Duration::from_secs(20), 600),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_a_minute_is_survived_without_a_restart() {
    let outage: u64 = std::env::var("GLEANER_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    campaign(&[
        (Mode::Healthy, Duration::from_secs(1), 50),
        (Mode::Outage, Duration::from_secs(outage), 100),
    ])
    .await;
}
