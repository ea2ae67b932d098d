//! Helpers shared by the end-to-end tests: a scratch directory laid out like a deployment, the
//! real `gleaner` binary, an independent reference for the `stats` processor, and output
//! readers.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use state_store::{Location, PlannedFile, StateLog};

/// An age at which a file is ready under the default `--min-age` (5s), with room to spare.
pub const OLD: Duration = Duration::from_secs(3600);

/// The `gleaner` binary built by Cargo for these tests.
pub fn gleaner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gleaner"))
}

/// A watch directory, a state location and an output location in one temporary directory.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub watch: PathBuf,
    pub state: PathBuf,
    pub output: PathBuf,
    pub source_id: String,
    /// Environment variables set for every command (say, an `AWS_ENDPOINT` through a proxy).
    pub env: Vec<(&'static str, String)>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().to_path_buf();
        let watch = root.join("watch");
        fs::create_dir_all(&watch).unwrap();
        Fixture {
            _dir: dir,
            watch,
            state: root.join("state"),
            output: root.join("output"),
            root,
            source_id: "test-source".into(),
            env: Vec::new(),
        }
    }

    /// `gleaner run` with this fixture's locations, and `extra` flags (no metrics endpoint
    /// unless `extra` asks for one).
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = gleaner();
        cmd.arg("run")
            .arg("--watch")
            .arg(&self.watch)
            .arg("--state")
            .arg(&self.state)
            .arg("--output")
            .arg(&self.output)
            .args(["--source-id", &self.source_id])
            .args(extra);
        if !extra.contains(&"--metrics-addr") {
            cmd.args(["--metrics-addr", "off"]);
        }
        cmd.env_remove("GLEANER_LOG").env_remove("RUST_LOG");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `gleaner run --once` and asserts it succeeded.
    pub fn run_once(&self, extra: &[&str]) -> Output {
        let out = self
            .command(&[&["--once"], extra].concat())
            .output()
            .expect("running gleaner");
        assert!(
            out.status.success(),
            "gleaner --once failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `gleaner run` in the background, logging to `log`.
    pub fn spawn(&self, extra: &[&str], log: &Path) -> Child {
        let log = File::create(log).expect("log file");
        self.command(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting gleaner")
    }

    /// Writes a complete file under the watch root, modified `age` ago.
    pub fn write(&self, rel: &str, bytes: &[u8], age: Duration) -> PathBuf {
        write_aged(&self.watch.join(rel), bytes, age)
    }

    /// Every output line, parsed, with the object it came from.
    pub fn outputs(&self) -> Vec<(PathBuf, Value)> {
        Place::Local(self.output.clone()).outputs()
    }

    /// Output objects (`.ndjson` and `.ndjson.gz`) under the output location.
    pub fn output_objects(&self) -> Vec<PathBuf> {
        files_with(&self.output, is_output_object)
    }

    /// `gleaner state inspect --json` for this fixture's source.
    pub fn inspect(&self) -> Value {
        inspect_state(&self.state.display().to_string(), &self.source_id)
    }

    /// Asserts that the outputs are exactly one object per committed generation, that no
    /// interrupted batch is left, and that `gleaner state verify` passes.
    pub fn assert_outputs_match_commits(&self) {
        let inspection = self.inspect();
        let generation = inspection["generation"].as_u64().unwrap();
        assert_eq!(
            self.output_objects().len() as u64,
            generation,
            "{inspection}"
        );
        assert!(inspection["interrupted_batch"].is_null(), "{inspection}");
        assert_state_verifies(&self.state.display().to_string());
    }

    /// Objects of this source's state log with the given extension (`delta`, `plan`).
    pub fn state_objects(&self, ext: &str) -> Vec<PathBuf> {
        let suffix = format!(".{ext}");
        files_with(&self.state.join(&self.source_id), |n| n.ends_with(&suffix))
    }
}

/// Records the plan of generation `generation` for the one file `file`, flat layout, as a
/// process killed mid-batch leaves it (at the fixture's state location, local or `s3://`).
pub fn leave_interrupted_plan(fx: &Fixture, generation: u64, file: &str) {
    let key = format!("{}/{generation:020}.ndjson", fx.source_id);
    leave_interrupted_plan_at(fx, generation, file, key);
}

/// [`leave_interrupted_plan`] with the output key `key` (relative to the output location).
pub fn leave_interrupted_plan_at(fx: &Fixture, generation: u64, file: &str, key: String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let location = Location::parse(fx.state.to_str().unwrap()).unwrap();
        let log = StateLog::new(&location, &fx.source_id.parse().unwrap());
        let meta = std::fs::metadata(fx.watch.join(file)).unwrap();
        use std::os::unix::fs::MetadataExt;
        let files = vec![PlannedFile {
            path: file.into(),
            size: meta.len(),
            mtime_ns: 0,
            inode: meta.ino(),
            btime_ns: 0,
            start: 0,
        }];
        log.create_plan(&log.plan(generation, key, files))
            .await
            .unwrap();
    });
}

/// `gleaner state inspect --json` of one source id at a state location.
pub fn inspect_state(state: &str, source_id: &str) -> Value {
    let out = gleaner()
        .args([
            "state",
            "inspect",
            "--json",
            "--source-id",
            source_id,
            "--state",
            state,
        ])
        .output()
        .expect("running gleaner state inspect");
    assert!(
        out.status.success(),
        "state inspect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("inspect prints JSON")
}

/// Asserts that `gleaner state verify` finds every object of a state location sound.
pub fn assert_state_verifies(state: &str) {
    let verify = gleaner()
        .args(["state", "verify", "--state", state])
        .output()
        .expect("running gleaner state verify");
    assert!(
        verify.status.success(),
        "state verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A `gleaner run` in the background serving `/metrics` on a free port of 127.0.0.1, its log
/// read as it goes (so that it never blocks on a full pipe).
pub struct Served {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: std::thread::JoinHandle<Vec<String>>,
}

impl Served {
    /// Starts `gleaner run` with the fixture's locations and `extra` flags, and waits for the
    /// address it serves on.
    pub fn start(fx: &Fixture, extra: &[&str]) -> Served {
        use std::io::BufRead;
        let mut child = fx
            .command(&[extra, &["--metrics-addr", "127.0.0.1:0"]].concat())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting gleaner");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("no \"gleaner started\" line: {seen:?}"))
                .unwrap();
            if let Some(rest) = line.split("metrics=http://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
            seen.push(line);
        };
        let log = std::thread::spawn(move || {
            seen.extend(lines.map_while(Result::ok));
            seen
        });
        Served { child, addr, log }
    }

    /// Waits for the process to exit (killing it after `timeout`); returns its exit status
    /// and its log lines.
    pub fn wait(mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, Vec<String>) {
        let status = wait_with_timeout(&mut self.child, timeout);
        (status, self.log.join().unwrap())
    }
}

/// Writes a file the way a well-behaved emitter does: under a temporary name (`.tmp`), then
/// renamed to `rel` below `watch`, an hour old.
pub fn emit(watch: &Path, rel: &str, bytes: &[u8]) {
    let staged = write_aged(&watch.join(format!("{rel}.tmp")), bytes, OLD);
    fs::rename(&staged, watch.join(rel)).unwrap();
}

/// Writes `bytes` to `path` (creating directories) and sets its mtime to `age` ago.
pub fn write_aged(path: &Path, bytes: &[u8], age: Duration) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    set_age(path, age);
    path.to_path_buf()
}

/// Sets a file's mtime to `age` ago.
pub fn set_age(path: &Path, age: Duration) {
    let file = File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// All files under `dir` (recursively) whose name passes `keep`, sorted.
pub fn files_with(dir: &Path, keep: impl Fn(&str) -> bool + Copy) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_with(&path, keep));
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(keep) {
            out.push(path);
        }
    }
    out.sort();
    out
}

impl Drop for Fixture {
    /// Keeps the outputs for the schema check of `tests/run.sh`, read by a test or not.
    fn drop(&mut self) {
        for object in files_with(&self.output, |name| {
            is_output_object(name) || is_commit_record(name)
        }) {
            if let (Ok(rel), Ok(bytes)) = (object.strip_prefix(&self.output), fs::read(&object)) {
                archive_output(&rel.display().to_string(), &bytes);
            }
        }
    }
}

/// Copies an output object to `$GLEANER_OUTPUT_ARCHIVE`, when it is set: `tests/run.sh` then
/// checks every line the suite wrote against the JSON Schemas in `schema/`. Named by a hash of
/// its bytes, so that an object read many times (a campaign reads the outputs after every kill)
/// is kept once. Best effort: a copy that fails is not the test's failure.
fn archive_output(name: &str, bytes: &[u8]) {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let Some(dir) = std::env::var_os("GLEANER_OUTPUT_ARCHIVE") else {
        return;
    };
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let base = name.rsplit('/').next().unwrap_or(name);
    // A commit record keeps its path (`.committed/<source-id>/<generation>.json`), which the
    // check compares with its fields.
    let copy = match name.find(".committed/") {
        Some(at) if is_commit_record(base) => {
            PathBuf::from(dir).join(format!("{:016x}/{}", hasher.finish(), &name[at..]))
        }
        _ => PathBuf::from(dir).join(format!("{:016x}-{base}", hasher.finish())),
    };
    if !copy.exists() {
        let _ = fs::create_dir_all(copy.parent().unwrap()).and_then(|()| fs::write(&copy, bytes));
    }
}

/// A storage location for a test: a local directory, or a fresh prefix on the S3 server that
/// `tests/run.sh` starts (`GLEANER_TEST_S3`).
#[derive(Clone, Debug)]
pub enum Place {
    /// A directory on local disk.
    Local(PathBuf),
    /// An `s3://bucket/prefix` URL.
    S3(String),
}

impl Place {
    /// A fresh prefix on the test S3 server.
    pub fn s3(name: &str) -> Place {
        let base = std::env::var("GLEANER_TEST_S3")
            .expect("GLEANER_TEST_S3 is not set: run tests/run.sh, which starts moto");
        Place::S3(format!("{base}/{name}-{:016x}", fastrand::u64(..)))
    }

    /// The `--state`/`--output` argument.
    pub fn arg(&self) -> String {
        match self {
            Place::Local(dir) => dir.display().to_string(),
            Place::S3(url) => url.clone(),
        }
    }

    /// Every object under this place whose name passes `keep`: (path below the place, bytes).
    pub fn objects(&self, keep: impl Fn(&str) -> bool + Copy) -> Vec<(String, Vec<u8>)> {
        match self {
            Place::Local(dir) => files_with(dir, keep)
                .into_iter()
                .map(|p| {
                    let rel = p.strip_prefix(dir).unwrap().display().to_string();
                    (rel, fs::read(&p).unwrap())
                })
                .collect(),
            Place::S3(url) => {
                use futures::TryStreamExt;
                use object_store::ObjectStoreExt;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let location = state_store::Location::parse(url).unwrap();
                    let store = location.store();
                    let metas: Vec<_> = store
                        .list(Some(location.prefix()))
                        .try_collect()
                        .await
                        .unwrap();
                    let mut out = Vec::new();
                    for meta in metas {
                        if !meta.location.filename().is_some_and(keep) {
                            continue;
                        }
                        let bytes = store
                            .get(&meta.location)
                            .await
                            .unwrap()
                            .bytes()
                            .await
                            .unwrap();
                        let rel: Vec<String> = meta
                            .location
                            .prefix_match(location.prefix())
                            .unwrap()
                            .map(|p| p.as_ref().to_string())
                            .collect();
                        out.push((rel.join("/"), bytes.to_vec()));
                    }
                    out.sort();
                    out
                })
            }
        }
    }

    /// The place of a `--state` or `--output` argument: an `s3://` URL or a local directory.
    pub fn of(arg: &Path) -> Place {
        match arg.to_str() {
            Some(url) if url.starts_with("s3://") => Place::S3(url.to_string()),
            _ => Place::Local(arg.to_path_buf()),
        }
    }

    /// The commit records under this place, parsed, by their path below it
    /// (`.committed/<source-id>/<generation>.json`).
    pub fn commit_records(&self) -> BTreeMap<String, Value> {
        self.objects(is_commit_record)
            .into_iter()
            .filter(|(name, _)| name.starts_with(".committed/"))
            .map(|(name, raw)| {
                archive_output(&name, &raw);
                let record = serde_json::from_slice(&raw)
                    .unwrap_or_else(|e| panic!("bad JSON in commit record {name}: {e}"));
                (name, record)
            })
            .collect()
    }

    /// The output lines of the objects that commit records name: what a reader that trusts the
    /// manifest reads. Panics if a record names an object that is not there.
    pub fn committed_outputs(&self) -> Vec<(PathBuf, Value)> {
        let objects: BTreeMap<String, Vec<u8>> =
            self.objects(is_output_object).into_iter().collect();
        let mut lines = Vec::new();
        for (name, record) in self.commit_records() {
            let key = record["key"].as_str().expect("a record names its object");
            let raw = objects
                .get(key)
                .unwrap_or_else(|| panic!("{name} names {key}, which is not there"));
            lines.extend(parse_output(Path::new(key), raw));
        }
        lines
    }

    /// Writes `bytes` at `rel` below this place.
    pub fn put(&self, rel: &str, bytes: &[u8]) {
        self.with_store(
            |store, path| async move {
                use object_store::ObjectStoreExt;
                store.put(&path, bytes.to_vec().into()).await.map(|_| ())
            },
            rel,
        );
    }

    /// Deletes the object at `rel` below this place.
    pub fn delete(&self, rel: &str) {
        self.with_store(
            |store, path| async move {
                use object_store::ObjectStoreExt;
                store.delete(&path).await
            },
            rel,
        );
    }

    /// Runs `op` on this place's store and the path of `rel`, and asserts it succeeded.
    fn with_store<F, Fut>(&self, op: F, rel: &str)
    where
        F: FnOnce(std::sync::Arc<dyn object_store::ObjectStore>, object_store::path::Path) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<()>>,
    {
        let location = state_store::Location::parse(&self.arg()).unwrap();
        let path = rel
            .split('/')
            .fold(location.prefix().clone(), |path, part| path.join(part));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(op(location.store().clone(), path))
            .unwrap_or_else(|e| panic!("{rel} under {}: {e}", self.arg()));
    }

    /// Every output line under this place, parsed (`.ndjson.gz` decompressed), with the
    /// object it came from (its full path, for a local place): the one reader of outputs in
    /// these tests.
    pub fn outputs(&self) -> Vec<(PathBuf, Value)> {
        let mut lines = Vec::new();
        for (name, raw) in self.objects(is_output_object) {
            archive_output(&name, &raw);
            let object = match self {
                Place::Local(dir) => dir.join(&name),
                Place::S3(_) => PathBuf::from(name),
            };
            lines.extend(parse_output(&object, &raw));
        }
        lines
    }
}

/// True for the names of output objects: `<generation>.ndjson` or `.ndjson.gz`.
fn is_output_object(name: &str) -> bool {
    name.ends_with(".ndjson") || name.ends_with(".ndjson.gz")
}

/// True for the names of commit records: `<generation, 20 digits>.json`.
fn is_commit_record(name: &str) -> bool {
    name.strip_suffix(".json")
        .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_output(object: &Path, raw: &[u8]) -> Vec<(PathBuf, Value)> {
    let text = if object.to_string_lossy().ends_with(".gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(raw)
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(raw.to_vec()).expect("outputs are UTF-8")
    };
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON in {}: {e}: {line}", object.display()));
            (object.to_path_buf(), value)
        })
        .collect()
}

/// How many output lines each path has.
pub fn path_counts(lines: &[(PathBuf, Value)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, line) in lines {
        let path = line["path"]
            .as_str()
            .expect("every line has a path")
            .to_string();
        *counts.entry(path).or_default() += 1;
    }
    counts
}

/// The `stats` result of `data`, computed independently of the processor: whole-buffer splits
/// instead of streaming state.
pub fn reference_stats(data: &[u8]) -> Value {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let unterminated = !data.is_empty() && *data.last().unwrap() != b'\n';
    let words = data.split(is_space).filter(|w| !w.is_empty()).count();
    let max_line = data
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    serde_json::json!({
        "bytes": data.len(),
        "lines": newlines + usize::from(unterminated),
        "words": words,
        "max_line_bytes": max_line,
    })
}

/// Random file contents that exercise the edge cases: CRLF, blank lines, runs of whitespace,
/// NUL and non-UTF-8 bytes, sometimes no trailing newline.
pub fn random_content(rng: &mut fastrand::Rng, max_len: usize) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"GET /api/cart 200 ",
        b"level=INFO ",
        b"word ",
        b"\n",
        b"\r\n",
        b"\t",
        b"  ",
        b"\x00",
        b"\xff\xfe",
        b"caf\xc3\xa9 ",
        b"\x0b\x0c",
    ];
    let target = rng.usize(..=max_len);
    let mut out = Vec::with_capacity(target + 32);
    while out.len() < target {
        out.extend_from_slice(PIECES[rng.usize(..PIECES.len())]);
    }
    out.truncate(target);
    out
}

/// A seeded generator; the seed comes from `GLEANER_TEST_SEED` when set, so that a failure can
/// be replayed, and is printed either way.
pub fn seeded_rng(test: &str) -> (fastrand::Rng, u64) {
    let seed = std::env::var("GLEANER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {seed} (replay with GLEANER_TEST_SEED={seed})");
    (fastrand::Rng::with_seed(seed), seed)
}

/// True if the Prometheus text `metrics` has the sample line `sample` (name, labels and value)
/// exactly. A search for the words would also find them in a `# HELP` line: `gleaner_fenced`'s
/// help begins "1 once this process lost its writer fence".
pub fn has_sample(metrics: &str, sample: &str) -> bool {
    metrics.lines().any(|line| line == sample)
}

/// Polls `check` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Sends SIGTERM to a child through `kill(1)` (the workspace forbids `unsafe`).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Asserts that every file in `expected` (relative path → contents) has exactly one output
/// line, with the reference stats, and that no other line exists.
pub fn assert_exactly_once(lines: &[(PathBuf, Value)], expected: &BTreeMap<String, Vec<u8>>) {
    let counts = path_counts(lines);
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|p| !counts.contains_key(*p))
        .collect();
    let unexpected: Vec<_> = counts
        .keys()
        .filter(|p| !expected.contains_key(*p))
        .collect();
    assert!(
        duplicated.is_empty(),
        "duplicated in outputs: {duplicated:?}"
    );
    assert!(missing.is_empty(), "missing from outputs: {missing:?}");
    assert!(
        unexpected.is_empty(),
        "unexpected in outputs: {unexpected:?}"
    );
    for (object, line) in lines {
        let path = line["path"].as_str().unwrap();
        let data = &expected[path];
        assert_eq!(
            line["result"],
            reference_stats(data),
            "stats of {path} in {}",
            object.display()
        );
        assert_eq!(line["size"], data.len(), "size of {path}");
        assert!(line.get("error").is_none(), "{path} failed: {line}");
    }
}

/// A small tmpfs, unmounted on drop; `None` where mounting is not allowed (not root). Declare
/// it after the [`Fixture`] it lives in, so that it is unmounted first.
pub struct SmallVolume(pub PathBuf);

impl SmallVolume {
    pub fn mount(at: PathBuf, size: &str) -> Option<Self> {
        fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .ok()?
            .status
            .success();
        ok.then_some(Self(at))
    }

    /// Fills the volume to its last byte with a file called `name`; returns its path.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Smaller writes take the last partial block.
        while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A control group of its own for a child process: a CPU quota or a memory limit, as a
/// container runtime sets them. cgroup v1 (the `cpu` and `memory` controllers mounted under
/// `/sys/fs/cgroup/<controller>`) or v2 (`/sys/fs/cgroup` unified, with `cpu.max` and
/// `memory.max`); `None` where neither can be written (not root). Removed on drop (its process
/// must have exited by then).
pub struct Cgroup {
    dir: PathBuf,
    /// cgroup v2: `cpu.max`, `memory.max`…; v1: `cpu.cfs_quota_us`, `memory.limit_in_bytes`.
    v2: bool,
}

impl Cgroup {
    fn create(controller: &str) -> Option<Cgroup> {
        let name = format!("gleaner-test-{}-{}", std::process::id(), fastrand::u64(..));
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let base = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            Path::new("/sys/fs/cgroup").join(controller)
        };
        if v2 {
            // The controller must be enabled for the children of the root.
            let _ = fs::write(
                base.join("cgroup.subtree_control"),
                format!("+{controller}"),
            );
        }
        let dir = base.join(name);
        fs::create_dir(&dir).ok()?;
        Some(Cgroup { dir, v2 })
    }

    /// A group whose processes get `percent` % of one core (periods of 100 ms).
    pub fn cpu_quota(percent: u32) -> Option<Cgroup> {
        let group = Self::create("cpu")?;
        let quota = (100_000 * percent / 100).max(1000);
        let written = if group.v2 {
            fs::write(group.dir.join("cpu.max"), format!("{quota} 100000"))
        } else {
            fs::write(group.dir.join("cpu.cfs_period_us"), "100000")
                .and_then(|()| fs::write(group.dir.join("cpu.cfs_quota_us"), quota.to_string()))
        };
        written.ok().map(|()| group)
    }

    /// A group whose processes may use `bytes` of memory (page cache included), no swap: past
    /// it the kernel's OOM killer kills them, as the kubelet's limit does.
    pub fn memory_limit(bytes: u64) -> Option<Cgroup> {
        let group = Self::create("memory")?;
        let written = if group.v2 {
            fs::write(group.dir.join("memory.max"), bytes.to_string())
                .and_then(|()| fs::write(group.dir.join("memory.swap.max"), "0").or(Ok(())))
        } else {
            fs::write(group.dir.join("memory.limit_in_bytes"), bytes.to_string()).and_then(|()| {
                // Without swap accounting the file is missing: nothing to limit there.
                match fs::write(
                    group.dir.join("memory.memsw.limit_in_bytes"),
                    bytes.to_string(),
                ) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            })
        };
        written.ok().map(|()| group)
    }

    /// `command`, run inside the group from its first instruction (a shell joins the group,
    /// then executes it with the same arguments and environment).
    pub fn command(&self, command: &mut Command) -> Command {
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg(r#"echo $$ > "$0" && shift && exec "$@""#)
            .arg(self.dir.join("cgroup.procs"))
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }

    /// Moves the process `pid` (all its threads) into the group.
    pub fn add(&self, pid: u32) {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }

    /// The peak memory use of the group, in bytes (v1 `memory.max_usage_in_bytes`, v2
    /// `memory.peak`), if the kernel reports it.
    pub fn memory_peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// How many times the group's processes were killed for memory (v1 `memory.oom_control`'s
    /// `oom_kill`, v2 `memory.events`' `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `GET path` over HTTP/1.0 with `timeout` for all of it: the status code and the body, or why
/// there is none (nothing listening, a timeout).
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        timeout,
    )
    .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let code = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
