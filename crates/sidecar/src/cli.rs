//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use scanner_core::{AfterCommit, DrainMode, Identity, Label, OnChange, ReadyMarker};
use state_store::SourceId;

/// Collects new text files from a directory another program writes, reduces each to a small
/// result, ships the results to storage, and never loses or repeats a file.
#[derive(Debug, Parser)]
#[command(
    name = "gleaner",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GLEANER_COMMIT"), ")"),
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Log format on standard error. The level comes from GLEANER_LOG (or RUST_LOG), for
    /// example `info` or `scanner_core=debug,info`.
    #[arg(
        long,
        global = true,
        env = "GLEANER_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect a directory: scan it every interval (or once), process new complete files,
    /// write one output object per batch, commit.
    Run(Box<RunArgs>),
    /// Run a local demonstration: a built-in emitter writes log files, Gleaner collects them.
    Demo(DemoArgs),
    /// Write log files the way a well-behaved program does (under a temporary name, renamed
    /// when complete), as the demo's emitter, on its own: the emitter of the Helm chart's
    /// example. Prints each completed file's path (relative to --dir) on standard output; at
    /// SIGTERM or SIGINT, completes the file in progress and exits 0.
    Emit(EmitArgs),
    /// Look at the state: what it holds, and whether every object of it is sound.
    #[command(subcommand)]
    State(StateCommand),
}

/// `gleaner state …`
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Generation, tracked files (done, failed), the log's objects and sizes, the last commit.
    Inspect(InspectArgs),
    /// Read and check every state object; exit 0 when all are sound, 1 otherwise.
    Verify(StateArgs),
    /// Every source id under --state, one line each: generation, last commit, tracked files,
    /// its writer (live or gone) and how long nothing happened to it.
    List(FleetArgs),
    /// Remove the state of source ids whose writer is gone and that were idle for longer than
    /// --idle-for (a Deployment's Pods each leave one). A dry run unless --delete is given.
    Gc(GcArgs),
    /// Repair the end of the log from the outputs: set damaged last deltas aside, write the
    /// commit records the commits lack, and commit each generation whose output exists beyond
    /// the state again, from that output. Run it with no gleaner of this source running.
    Repair(RepairArgs),
    /// Process committed files again, on purpose (after a processor bug): the named files, or
    /// those of one generation or time range, under new generations marked as replays, whose
    /// output lines say `"replay":true`. Every other file's record is untouched. Takes the
    /// flags and GLEANER_* variables of `gleaner run` (processor, storage, source id); run it
    /// while no other gleaner of this source commits (the loser of a race is fenced, exit 3).
    Replay(Box<ReplayArgs>),
}

/// Flags of `gleaner state replay`: `gleaner run`'s, and which files.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Files to replay, relative to --watch (or absolute, inside it). Each must be a committed
    /// file still there as it was committed, or nothing is replayed.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Also replay every file whose last commit was this generation.
    #[arg(long, value_name = "N", help_heading = "Replay")]
    pub generation: Option<u64>,

    /// Also replay every committed file modified at or after this time (RFC 3339, e.g.
    /// 2026-12-01T00:00:00Z); with --modified-before, within both.
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Replay")]
    pub modified_after: Option<std::time::SystemTime>,

    /// Also replay every committed file modified before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time, help_heading = "Replay")]
    pub modified_before: Option<std::time::SystemTime>,

    /// Everything else, as `gleaner run` takes it.
    #[command(flatten)]
    pub run: RunArgs,
}

/// An RFC 3339 time (`2026-12-01T00:00:00Z`; a date and time without a zone is taken as UTC).
fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e}: expected an RFC 3339 time such as 2026-12-01T00:00:00Z"))
}

/// Flags of `gleaner state repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Where state is kept: a local path, or a file://, s3://, gs://, az:// or memory:// URL.
    #[arg(
        long,
        env = "GLEANER_STATE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub state: String,

    /// Where the source's batch outputs are.
    #[arg(
        long,
        env = "GLEANER_OUTPUT",
        value_name = "URL",
        hide_env_values = true
    )]
    pub output: String,

    /// The watched directory: files found there unchanged get back their exact identity.
    #[arg(long, env = "GLEANER_WATCH", value_name = "DIR")]
    pub watch: PathBuf,

    /// The source id to repair.
    #[arg(long, env = "GLEANER_SOURCE_ID", value_name = "ID")]
    pub source_id: SourceId,

    /// How the source's output keys are laid out (as `gleaner run --output-layout`) [default:
    /// found from the outputs].
    #[arg(long, env = "GLEANER_OUTPUT_LAYOUT", value_name = "LAYOUT")]
    pub output_layout: Option<LayoutArg>,

    /// As `gleaner run --identity`: with `content`, a file whose first KiB has the fingerprint
    /// its output line records counts as unchanged even where its status change time moved
    /// (a `chmod`, a rename in place). Otherwise only the same inode, birth time and status
    /// change time do.
    #[arg(
        long,
        env = "GLEANER_IDENTITY",
        value_name = "MODE",
        default_value = "path"
    )]
    pub identity: Identity,

    /// Retries and timeouts of the storage.
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Flags shared by the `state` commands.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Where state is kept: a local path, or a file://, s3://, gs://, az:// or memory:// URL.
    #[arg(
        long,
        env = "GLEANER_STATE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub state: String,

    /// Only this source id [default: every source id found under --state].
    #[arg(long, env = "GLEANER_SOURCE_ID", value_name = "ID")]
    pub source_id: Option<SourceId>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// Retries and timeouts of the storage.
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Flags of `gleaner state list` and `gleaner state gc`: as [`StateArgs`], but the source id is
/// not taken from `GLEANER_SOURCE_ID`, so that in a Gleaner container (which has it set to its
/// own) they still look at every source.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Where state is kept: a local path, or a file://, s3://, gs://, az:// or memory:// URL.
    #[arg(
        long,
        env = "GLEANER_STATE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub state: String,

    /// Only this source id [default: every source id found under --state].
    #[arg(long, value_name = "ID")]
    pub source_id: Option<SourceId>,

    /// Print JSON lines (one per source) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Retries and timeouts of the storage.
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Flags of `gleaner state gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Where, which source, which format.
    #[command(flatten)]
    pub common: FleetArgs,

    /// Remove a source only when nothing happened to it for this long: no plan, commit,
    /// snapshot or renewal of its writer's lease. A source whose writer's lease is live is
    /// never removed, whatever this says.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_for: Duration,

    /// Remove them [default: a dry run, which only prints what would be removed].
    #[arg(long)]
    pub delete: bool,
}

/// Flags of `gleaner state inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Where, which source, which format.
    #[command(flatten)]
    pub common: StateArgs,

    /// Print every tracked file (one JSON object per line) instead of the summary.
    #[arg(long)]
    pub entries: bool,
}

/// How cloud storage is reached (local storage ignores these).
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Retries of one storage request that failed transiently (0: none).
    #[arg(
        long,
        env = "GLEANER_STORAGE_RETRIES",
        value_name = "N",
        default_value_t = 10
    )]
    pub storage_retries: usize,

    /// Stop retrying a storage request after this long since its first attempt.
    #[arg(long, env = "GLEANER_STORAGE_RETRY_TIMEOUT", value_name = "DURATION", default_value = "3m",
          value_parser = parse_duration)]
    pub storage_retry_timeout: Duration,

    /// Timeout of one attempt of one storage request.
    #[arg(long, env = "GLEANER_STORAGE_TIMEOUT", value_name = "DURATION", default_value = "30s",
          value_parser = parse_duration)]
    pub storage_timeout: Duration,
}

impl StorageArgs {
    /// The options of every cloud location.
    pub fn options(&self) -> state_store::StorageOptions {
        state_store::StorageOptions {
            max_retries: self.storage_retries,
            retry_timeout: self.storage_retry_timeout,
            request_timeout: self.storage_timeout,
            ..state_store::StorageOptions::default()
        }
    }
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags of `gleaner run`, in groups as `--help` shows them; every flag can also be set by the
/// environment variable shown.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// What to watch.
    #[command(flatten)]
    pub input: InputArgs,

    /// When a file is ready.
    #[command(flatten)]
    pub readiness: ReadinessArgs,

    /// What happens to files after processing.
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,

    /// How files are reduced.
    #[command(flatten)]
    pub processing: ProcessorArgs,

    /// Where results go, in which batches.
    #[command(flatten)]
    pub output: OutputArgs,

    /// Where state is kept, and how storage is reached.
    #[command(flatten)]
    pub state: StateStoreArgs,

    /// Scheduling, shutdown, threads and metrics.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// What to watch.
#[derive(Debug, Args)]
#[command(next_help_heading = "What to watch")]
pub struct InputArgs {
    /// The directory the emitter writes; walked recursively.
    #[arg(long, env = "GLEANER_WATCH", value_name = "DIR")]
    pub watch: PathBuf,

    /// Collect only paths (relative to --watch) matching one of these globs; `*` also matches
    /// `/` (`*.log` is every .log file at any depth), `{a,b}` is either. Repeatable (the
    /// environment variable holds one glob) [default: every file].
    #[arg(long, env = "GLEANER_INCLUDE", value_name = "GLOB")]
    pub include: Vec<String>,

    /// Never collect paths matching one of these globs. Repeatable (the environment variable
    /// holds one glob) [default: none].
    #[arg(long, env = "GLEANER_EXCLUDE", value_name = "GLOB")]
    pub exclude: Vec<String>,
}

/// When a file is ready.
#[derive(Debug, Args)]
#[command(next_help_heading = "Readiness")]
pub struct ReadinessArgs {
    /// A file modified more recently than this is not ready yet.
    #[arg(long, env = "GLEANER_MIN_AGE", value_name = "DURATION", default_value = "5s",
          value_parser = parse_min_age)]
    pub min_age: Duration,

    /// A file is ready only once two listings at least DURATION apart saw the same size,
    /// mtime and inode [default: off; `--require-stable` alone: 2s].
    #[arg(long, env = "GLEANER_REQUIRE_STABLE", value_name = "DURATION", num_args = 0..=1,
          default_missing_value = "2s", value_parser = parse_min_age)]
    pub require_stable: Option<Duration>,

    /// A modification time further in the future than this comes from a skewed clock: the
    /// file's age counts from the first scan that saw it, with a warning.
    #[arg(long, env = "GLEANER_MAX_CLOCK_SKEW", value_name = "DURATION", default_value = "1m",
          value_parser = parse_min_age)]
    pub max_clock_skew: Duration,

    /// A file is ready only once its marker exists: `{name}.done` (one per file, next to it)
    /// or a per-directory name such as `_SUCCESS`. Markers are never processed [default:
    /// none].
    #[arg(long, env = "GLEANER_READY_MARKER", value_name = "PATTERN")]
    pub ready_marker: Option<ReadyMarker>,
}

/// What happens to files after processing.
#[derive(Debug, Args)]
#[command(next_help_heading = "Lifecycle")]
pub struct LifecycleArgs {
    /// A processed file that changed since: `ignore` it, `reprocess` it whole, or `append`
    /// (process what was appended since the last commit, whole lines only; a file that shrank
    /// or was rewritten is processed again from the start).
    #[arg(
        long,
        env = "GLEANER_ON_CHANGE",
        value_name = "MODE",
        default_value = "ignore"
    )]
    pub on_change: OnChange,

    /// How a file is recognised: by `path` (with inode and birth time), or also by `content`
    /// (a renamed or moved file, recognised by its size and first KiB, is not processed again).
    #[arg(
        long,
        env = "GLEANER_IDENTITY",
        value_name = "MODE",
        default_value = "path"
    )]
    pub identity: Identity,

    /// What happens to a file once its result is committed: `keep`, `delete`, or `move:DIR`
    /// (keeping its path relative to --watch; DIR must be outside --watch).
    #[arg(
        long,
        env = "GLEANER_AFTER",
        value_name = "ACTION",
        default_value = "keep"
    )]
    pub after: AfterCommit,

    /// Move files whose processing failed (once the failure is committed) below this directory
    /// [default: none: failed files stay].
    #[arg(long, env = "GLEANER_QUARANTINE", value_name = "DIR")]
    pub quarantine: Option<PathBuf>,

    /// Warn (log, and `gleaner_watch_low_space` = 1) when the watched volume has less free
    /// space than this, like `1GiB`; `gleaner_watch_free_bytes` is exported either way
    /// [default: off].
    #[arg(long, env = "GLEANER_MIN_FREE", value_name = "SIZE", value_parser = parse_size)]
    pub min_free: Option<u64>,

    /// What the watched directory may hold, like `1GiB`: in a Pod, its emptyDir's `sizeLimit`,
    /// past which the kubelet evicts the Pod without a drain. Exported as
    /// `gleaner_watch_capacity_bytes` next to `gleaner_watch_bytes` (what the directory takes,
    /// measured at every walk of the whole tree); Gleaner warns from 80 % [default: none].
    #[arg(long, env = "GLEANER_WATCH_CAPACITY", value_name = "SIZE", value_parser = parse_size)]
    pub watch_capacity: Option<u64>,
}

/// How files are reduced.
#[derive(Debug, Args)]
#[command(next_help_heading = "Processor")]
pub struct ProcessorArgs {
    /// How each file is reduced (each processor has its own flags, below).
    #[arg(
        long,
        env = "GLEANER_PROCESSOR",
        value_name = "NAME",
        default_value = "stats"
    )]
    pub processor: ProcessorKind,

    /// grep: the regular expression (Rust syntax; a match never spans lines).
    #[arg(
        long,
        env = "GLEANER_PATTERN",
        value_name = "REGEX",
        required_if_eq("processor", "grep")
    )]
    pub pattern: Option<String>,

    /// grep: keep up to N matching lines per file as samples (each cut to 1 KiB) [default: 0].
    #[arg(long, env = "GLEANER_SAMPLE", value_name = "N")]
    pub sample: Option<usize>,

    /// count-by: the key is the first capture group (or the whole match) of this regex.
    #[arg(long, env = "GLEANER_KEY_REGEX", value_name = "REGEX", group = "key")]
    pub key_regex: Option<String>,

    /// count-by: the key is this field (a JSON pointer, like /service) of JSON-lines input.
    #[arg(long, env = "GLEANER_KEY_JSON", value_name = "POINTER", group = "key")]
    pub key_json: Option<String>,

    /// count-by: the key is this column (from 1) of delimited text.
    #[arg(long, env = "GLEANER_KEY_COLUMN", value_name = "N", group = "key")]
    pub key_column: Option<usize>,

    /// count-by: the byte between columns, for --key-column (`,`, `tab`, `space`, `;`, …)
    /// [default: ,].
    #[arg(long, env = "GLEANER_DELIMITER", value_name = "CHAR", value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,

    /// count-by: how many keys to list; the rest are counted as `other` [default: 100].
    #[arg(long, env = "GLEANER_TOP", value_name = "K")]
    pub top: Option<usize>,

    /// count-by: also sum a number per key: a capture group (index or name) with --key-regex,
    /// a JSON pointer with --key-json, a column with --key-column [default: none].
    #[arg(long, env = "GLEANER_SUM", value_name = "FIELD")]
    pub sum: Option<String>,

    /// A file whose reading fails in a way that may pass (permission denied, an IO error) is
    /// tried again this many times, in no output meanwhile, before the failure is final.
    #[arg(long, env = "GLEANER_RETRIES", value_name = "N", default_value_t = 3)]
    pub retries: u32,

    /// The wait before the first such retry; each next one waits twice as long.
    #[arg(long, env = "GLEANER_RETRY_BACKOFF", value_name = "DURATION", default_value = "1s",
          value_parser = parse_min_age)]
    pub retry_backoff: Duration,

    /// A compressed file that decodes to more bytes than this fails (decompression bombs).
    #[arg(long, env = "GLEANER_MAX_DECODED_BYTES", value_name = "SIZE", default_value = "64GiB",
          value_parser = parse_size)]
    pub max_decoded_bytes: u64,
}

/// Where results go, in which batches.
#[derive(Debug, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Where batch outputs are written: a local path, or a file://, s3://, gs://, az:// or
    /// memory:// URL. After each commit, a commit record naming the committed object goes to
    /// `.committed/<source-id>/<generation>.json` there: readers that go by the records never
    /// read the object of a batch that is not committed.
    #[arg(
        long,
        env = "GLEANER_OUTPUT",
        value_name = "URL",
        hide_env_values = true
    )]
    pub output: String,

    /// Compression of output objects.
    #[arg(
        long,
        env = "GLEANER_COMPRESS",
        value_name = "MODE",
        default_value = "none"
    )]
    pub compress: CompressArg,

    /// How output keys are laid out: `flat` (`<source-id>/<generation>.ndjson`) or `hive`
    /// (`source=<source-id>/date=<YYYY-MM-DD>/<generation>.ndjson`, the UTC day the batch was
    /// planned: partitions that DuckDB, Spark, Trino and Athena prune by path).
    #[arg(
        long,
        env = "GLEANER_OUTPUT_LAYOUT",
        value_name = "LAYOUT",
        default_value = "flat"
    )]
    pub output_layout: LayoutArg,

    /// A label written into every output line, `"labels":{"KEY":"VALUE",…}`: where the result
    /// came from (Pod, namespace, node, app). Repeat the flag for several. KEY: a lowercase
    /// letter, then lowercase letters, digits and `_` (up to 63; not a field of the line, nor
    /// `source` or `date`); VALUE: up to 253 ASCII letters, digits, `.`, `_` and `-`, or empty.
    /// GLEANER_LABELS takes them comma-separated (`pod=web-0,namespace=shop`); flags replace it.
    #[arg(
        long = "label",
        env = "GLEANER_LABELS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub labels: Vec<Label>,

    /// A label (given with --label) whose value is also a folder of `--output-layout hive`,
    /// between the source and the date: `source=<id>/<KEY>=<VALUE>/date=<day>/…`, a partition
    /// column for DuckDB, Spark, Trino and Athena. Repeat for several, in order. Name the same
    /// ones for every source under one output root: engines read one set of partition columns
    /// per root.
    #[arg(
        long = "partition-label",
        env = "GLEANER_PARTITION_LABELS",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub partition_labels: Vec<String>,

    /// At most this many files per batch (oldest first; a batch always takes one file).
    #[arg(long, env = "GLEANER_MAX_FILES", value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_files: u64,

    /// At most this many input bytes per batch, like `512MiB`, `4GiB`, `1000000`.
    #[arg(long, env = "GLEANER_MAX_BYTES", value_name = "SIZE", default_value = "4GiB",
          value_parser = parse_size)]
    pub max_bytes: u64,

    /// A batch ends once its results reach this size (as written, about its output object's
    /// size): they are held in memory until it is flushed, and a result can be larger than its
    /// file (`count-by`). The rest of the batch runs next. Bounds a batch's memory.
    #[arg(long, env = "GLEANER_MAX_OUTPUT_BYTES", value_name = "SIZE", default_value = "16MiB",
          value_parser = parse_size)]
    pub max_output_bytes: u64,
}

/// Where state is kept, and how storage is reached.
#[derive(Debug, Args)]
#[command(next_help_heading = "State and storage")]
pub struct StateStoreArgs {
    /// Where state is kept: a local path, or a file://, s3://, gs://, az:// or memory:// URL.
    #[arg(
        long,
        env = "GLEANER_STATE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub state: String,

    /// Names this instance's state and outputs: letters, digits, `.`, `_`, `-` [default: the
    /// host name, which in Kubernetes is the Pod's name].
    #[arg(long, env = "GLEANER_SOURCE_ID", value_name = "ID")]
    pub source_id: Option<SourceId>,

    /// Fold the state log into a snapshot every N generations.
    #[arg(long, env = "GLEANER_SNAPSHOT_EVERY", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,

    /// Start even when the state is empty (or behind) but the output location already holds
    /// batches of this source id: files the state knows stay known, all others are processed
    /// again (those of the batches it does not know included: their results appear twice).
    #[arg(long, env = "GLEANER_ALLOW_RESCAN")]
    pub allow_rescan: bool,

    /// At the source's first start (nothing committed yet), record the files already complete
    /// in the watched directory as seen but not processed, in a generation of their own
    /// (`gleaner state inspect` counts them as baselined), and process only what comes after:
    /// new files, and what is appended to a baselined one as --on-change says. Once the
    /// source has committed state it does nothing, so it may stay in a Pod's arguments.
    #[arg(long, env = "GLEANER_BASELINE")]
    pub baseline: bool,

    /// With --baseline: baseline only files last modified longer ago than this; younger ones
    /// are processed.
    #[arg(long, env = "GLEANER_BASELINE_OLDER_THAN", value_name = "DURATION",
          value_parser = parse_duration, requires = "baseline")]
    pub baseline_older_than: Option<Duration>,

    /// Take the source id over from another watch root that is gone for good (a source id
    /// whose last generation another root wrote is refused otherwise, exit 3: two roots under
    /// one source id would take turns and forget each other's files), and the watch root over
    /// from the source ids recorded in it (its files are processed again under this one).
    #[arg(long, env = "GLEANER_ADOPT_SOURCE")]
    pub adopt_source: bool,

    /// Collect the watch root together with the source ids already recorded in it
    /// (`.gleaner-root.sources`; refused otherwise, exit 3: every file would be processed
    /// again). Only for collectors that divide one directory on purpose, with disjoint
    /// --include/--exclude.
    #[arg(long, env = "GLEANER_SHARE_ROOT")]
    pub share_root: bool,

    /// Retries and timeouts of cloud storage.
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Scheduling, shutdown, threads and metrics.
#[derive(Debug, Args)]
#[command(next_help_heading = "Runtime and metrics")]
pub struct RuntimeArgs {
    /// Time between scans (start to start), like `30s`, `15m`, `1h`.
    #[arg(long, env = "GLEANER_INTERVAL", value_name = "DURATION", default_value = "1h",
          value_parser = parse_interval)]
    pub interval: Duration,

    /// Process everything that is ready now, in as many batches as it takes, then exit.
    #[arg(long, env = "GLEANER_ONCE")]
    pub once: bool,

    /// Scan early on file-system events (`--events=false`: only every --interval).
    #[arg(long, env = "GLEANER_EVENTS", value_name = "BOOL", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub events: bool,

    /// After a file-system event, wait this long for more before scanning.
    #[arg(long, env = "GLEANER_DEBOUNCE", value_name = "DURATION", default_value = "500ms",
          value_parser = parse_min_age)]
    pub debounce: Duration,

    /// At SIGTERM (or SIGINT): `wait` keeps scanning until every file that waits only for time
    /// (--min-age, --require-stable) is committed and the directory has been quiet for
    /// --drain-settle (a writer stopping at the same time may write its last file after the
    /// signal); `writer-gone` takes every file as complete at once, except in-progress names
    /// (for a writer known to have exited: a native sidecar, the end of a Job). Failed scans
    /// are tried again until --shutdown-timeout. Files still left are named in the log, and
    /// the exit code is 4.
    #[arg(
        long,
        env = "GLEANER_DRAIN",
        value_name = "MODE",
        default_value = "wait"
    )]
    pub drain: DrainMode,

    /// With `--drain wait`: the drain ends only once no uncommitted file (in-progress names
    /// included) was modified for this long, counted from the later of the signal and the last
    /// modification; pick it longer than the longest pause of a writer that is stopping.
    #[arg(
        long,
        env = "GLEANER_DRAIN_SETTLE",
        value_name = "DURATION",
        default_value = "2s",
        value_parser = parse_duration
    )]
    pub drain_settle: Duration,

    /// Copy the raw bytes of every file the drain leaves to the output store, under
    /// `.leftovers/<source-id>/<generation>/<path>` (the path's odd bytes percent-encoded), so
    /// that a Pod's last partial file survives its emptyDir. They stay uncommitted.
    #[arg(long, env = "GLEANER_SHIP_LEFTOVERS")]
    pub ship_leftovers: bool,

    /// After SIGTERM (or SIGINT), how long the drain may take: files ready only later are left
    /// (and named), and a batch still running then is cut short (exit 143; it is redone at the
    /// next start). The default fits Kubernetes' 30 s grace period.
    #[arg(long, env = "GLEANER_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "25s",
          value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// `/livez` answers 503 once the scan loop has shown no progress for this long (beyond its
    /// wait for the next scan): a storage request that never returns, a hung read. A failing
    /// scan is progress (it is retried), so an outage does not make a liveness probe restart
    /// the process.
    #[arg(long, env = "GLEANER_STALL_TIMEOUT", value_name = "DURATION", default_value = "10m",
          value_parser = parse_interval)]
    pub stall_timeout: Duration,

    /// After an error that stops the process (exit 3 when fenced: another writer or another
    /// watch root; exit 1 for damaged state), keep serving /metrics this long (SIGTERM ends it
    /// at once), so that Prometheus scrapes `gleaner_fenced` and the error counters before the
    /// process is gone. 0 exits at once. Not with --once.
    #[arg(long, env = "GLEANER_FATAL_LINGER", value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration)]
    pub fatal_linger: Duration,

    /// Files (or ranges of one large file) processed at once [default: the number of cores].
    #[arg(long, env = "GLEANER_WORKERS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: Option<u64>,

    /// Where metrics are served.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Where `/metrics`, `/healthz`, `/readyz` and `/livez` are served.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address serving /metrics, /healthz, /readyz and /livez (`0.0.0.0:9464` in containers; `off` to
    /// serve nothing; port 0 picks a free port) [default: 127.0.0.1:9464; with --once: off].
    #[arg(long = "metrics-addr", env = "GLEANER_METRICS_ADDR", value_name = "ADDR",
          value_parser = parse_metrics_addr)]
    pub addr: Option<MetricsAddr>,
}

impl MetricsArgs {
    /// The address to serve on: as given, else the default (`127.0.0.1:9464`), except for a
    /// run that ends by itself (`--once`), which serves nothing unless asked: two such runs on
    /// one machine must not fight over a port.
    pub fn resolve(&self, ends_by_itself: bool) -> MetricsAddr {
        match self.addr {
            Some(addr) => addr,
            None if ends_by_itself => MetricsAddr::Off,
            None => MetricsAddr::On(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// Flags of `gleaner emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Directory to write into (created if missing).
    #[arg(long, env = "GLEANER_EMIT_DIR", value_name = "DIR")]
    pub dir: PathBuf,

    /// Files completed per second.
    #[arg(long, env = "GLEANER_EMIT_RATE", value_name = "N", default_value_t = 4.0,
          value_parser = parse_rate)]
    pub rate: f64,

    /// Stop after this long [default: run until SIGTERM or SIGINT].
    #[arg(long, env = "GLEANER_EMIT_DURATION", value_name = "DURATION",
          value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Flags of `gleaner demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's input, state and outputs [default: a new temporary directory,
    /// kept afterwards]. Reusing a directory resumes from its state.
    #[arg(long, env = "GLEANER_DEMO_DIR", value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Stop after this long (then drain and verify); without it, run until Ctrl-C.
    #[arg(long, env = "GLEANER_DEMO_DURATION", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Files the emitter completes per second.
    #[arg(long, env = "GLEANER_DEMO_RATE", value_name = "N", default_value_t = 4.0,
          value_parser = parse_rate)]
    pub rate: f64,

    /// Time between scans (file completions also trigger a scan).
    #[arg(long, env = "GLEANER_INTERVAL", value_name = "DURATION", default_value = "2s",
          value_parser = parse_interval)]
    pub interval: Duration,

    /// Where metrics are served.
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// The built-in processors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProcessorKind {
    /// Bytes, lines, words and the longest line of each file.
    Stats,
    /// Lines matching --pattern, counted, with --sample of them.
    Grep,
    /// Lines per key (from --key-regex, --key-json or --key-column), the --top keys.
    CountBy,
}

impl ProcessorKind {
    /// The name `--processor` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProcessorKind::Stats => "stats",
            ProcessorKind::Grep => "grep",
            ProcessorKind::CountBy => "count-by",
        }
    }
}

/// Output key layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// `<source-id>/<generation>.ndjson`
    Flat,
    /// `source=<source-id>/date=<YYYY-MM-DD>/<generation>.ndjson`
    Hive,
}

impl LayoutArg {
    /// The layout it names.
    pub fn layout(self) -> scanner_core::OutputLayout {
        match self {
            LayoutArg::Flat => scanner_core::OutputLayout::Flat,
            LayoutArg::Hive => scanner_core::OutputLayout::Hive,
        }
    }
}

/// Output compression choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// `.ndjson`
    None,
    /// `.ndjson.gz`
    Gzip,
}

/// Where to serve metrics, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    /// Serve on this address.
    On(SocketAddr),
    /// Serve nothing.
    Off,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 30s, 15m, 1h)"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms (a shorter interval would scan in a busy loop)".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if (0.01..=1000.0).contains(&rate) => Ok(rate),
        _ => Err("must be a number of files per second from 0.01 to 1000".into()),
    }
}

fn parse_min_age(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(10 * 365 * 86_400) {
        return Err("must be at most 10 years".into());
    }
    Ok(d)
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        "space" => Ok(b' '),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err("expected one ASCII character, or `tab` or `space`".into()),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (examples: 1000000, 512MiB, 4GiB)"))
}

fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if matches!(s, "off" | "none" | "") {
        return Ok(MetricsAddr::Off);
    }
    s.parse()
        .map(MetricsAddr::On)
        .map_err(|e| format!("{e} (expected HOST:PORT like 127.0.0.1:9464, or off)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_durations_and_addresses_parse() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_interval("0s").is_err());
        assert_eq!(parse_interval("50ms"), Ok(Duration::from_millis(50)));
        assert!(parse_min_age("500000000000years").is_err());
        assert_eq!(parse_min_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_metrics_addr("off"), Ok(MetricsAddr::Off));
        assert!(matches!(
            parse_metrics_addr("0.0.0.0:9464"),
            Ok(MetricsAddr::On(_))
        ));
        assert!(parse_metrics_addr("localhost").is_err());
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert!(parse_delimiter("ab").is_err());
    }
}
