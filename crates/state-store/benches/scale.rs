//! State-store scale benchmark: how loading and committing behave with many tracked files.
//!
//! ```text
//! cargo bench -p state-store --bench scale            # 10 000 and 1 000 000 tracked files
//! cargo bench -p state-store --bench scale -- 10000 100000 1000000
//! ```
//!
//! For each size N it builds, on local disk (fsync on, as Gleaner runs), a log holding N entries
//! the way a long-running source has it: a snapshot plus 40 later deltas of 100 files. Then:
//!
//! * **load**: a child process loads the log; reported are its wall time and its peak resident
//!   memory (VmHWM), next to the time `std::fs::read` takes for the same bytes (the floor);
//! * **commit**: the median of 100 commits of a 100-file batch, as the batch loop does them
//!   (create the plan, check the fence, create the delta, remove the plan, apply in memory);
//! * **snapshot**: folding the state and storing it (every `--snapshot-every` generations).
//!
//! The commit-time ratio between the largest and the smallest size is the point: commit cost
//! must grow with the batch, not with the history.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use state_store::{
    Delta, FileEntry, Location, Outcome, PlannedFile, RelPath, SourceId, State, StateLog,
};

const SOURCE: &str = "bench";
const LATER_DELTAS: u64 = 40;
const BATCH: usize = 100;
const COMMITS: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child-load") {
        return child_load(Path::new(&args[1]));
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        args.iter()
            .map(|a| a.parse().expect("sizes are numbers"))
            .collect()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for &n in &sizes {
        rows.push(runtime.block_on(measure(n)));
    }
    let base = &rows[0];
    println!(
        "\n| tracked files | log on disk | load | read same bytes (floor) | load peak RSS | commit 100-file batch (median) | vs {} | snapshot |",
        base.n
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} MiB | {:.0} ms | {:.0} ms | {:.0} MiB | {:.2} ms | {:.2}x | {:.0} ms |",
            r.n,
            r.bytes as f64 / 1048576.0,
            ms(r.load),
            ms(r.read_floor),
            r.peak_rss_kib as f64 / 1024.0,
            ms(r.commit_median),
            r.commit_median.as_secs_f64() / base.commit_median.as_secs_f64(),
            ms(r.snapshot),
        );
    }
}

struct Row {
    n: usize,
    bytes: u64,
    load: Duration,
    read_floor: Duration,
    peak_rss_kib: u64,
    commit_median: Duration,
    snapshot: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn entry(i: usize, generation: u64) -> FileEntry {
    FileEntry {
        size: 4096 + (i as u64 % 1000),
        mtime_ns: 1_790_000_000_000_000_000 + i as i64 * 1_000_000,
        inode: 1_000_000 + i as u64,
        btime_ns: 1_790_000_000_000_000_000 + i as i64 * 1_000_000,
        offset: 4096 + (i as u64 % 1000),
        generation,
        outcome: if i % 997 == 0 {
            Outcome::Failed {
                reason: "permission denied".into(),
            }
        } else {
            Outcome::Done
        },
        fingerprint: 0x9e37_79b9_7f4a_7c15 ^ i as u64,
    }
}

/// A realistic relative path: service, day, sequence number (about 45 bytes).
fn path(i: usize) -> RelPath {
    RelPath::from(
        format!(
            "service-{:02}/2026-11-{:02}/events-{i:09}.log",
            i % 17,
            1 + i % 28
        )
        .as_str(),
    )
}

async fn measure(n: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state");
    let location = Location::parse(root.to_str().unwrap()).unwrap();
    let log = StateLog::new(&location, &source());

    // The history: everything but the last deltas folded into a snapshot.
    let base_n = n - LATER_DELTAS as usize * BATCH;
    let mut entries: Vec<(RelPath, FileEntry)> =
        (0..base_n).map(|i| (path(i), entry(i, 1))).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut state = State::from_sorted(1, None, entries).unwrap();
    log.store_snapshot(&state).await.unwrap();
    let mut next = base_n;
    for g in 2..2 + LATER_DELTAS {
        let delta = delta(&log, g, next);
        next += BATCH;
        log.commit(&delta).await.unwrap();
        state.apply(&delta).unwrap();
    }
    assert_eq!(state.len(), n);
    let bytes: u64 = log.objects().await.unwrap().iter().map(|o| o.size).sum();

    // Load, in a child process so that its peak memory is the load's alone.
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child-load", root.to_str().unwrap()])
        .output()
        .unwrap();
    let load = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut fields = stdout.split_whitespace();
    let loaded_n: usize = fields.next().unwrap().parse().unwrap();
    let peak_rss_kib: u64 = fields.next().unwrap().parse().unwrap();
    let child_load_ms: f64 = fields.next().unwrap().parse().unwrap();
    assert_eq!(loaded_n, n);
    let floor = read_all(&root.join(SOURCE));

    // Commits of 100-file batches on top of N tracked files. Flush what building the log left
    // dirty first, so that its write-back does not land inside the commits of one size only.
    std::process::Command::new("sync").status().unwrap();
    let mut times = Vec::new();
    let mut in_memory = Vec::new();
    let mut generation = state.generation();
    for _ in 0..COMMITS {
        generation += 1;
        let delta = delta(&log, generation, next);
        let files = delta
            .upserts
            .iter()
            .map(|(p, e)| PlannedFile {
                path: p.clone(),
                size: e.size,
                mtime_ns: e.mtime_ns,
                inode: e.inode,
                btime_ns: e.btime_ns,
                start: 0,
            })
            .collect();
        let plan = log.plan(
            generation,
            format!("{SOURCE}/{generation:020}.ndjson"),
            files,
        );
        next += BATCH;
        let started = Instant::now();
        log.create_plan(&plan).await.unwrap();
        log.ensure_uncommitted(generation).await.unwrap();
        log.commit(&delta).await.unwrap();
        log.remove_plan(generation, 0).await.unwrap();
        let applied = Instant::now();
        state.apply(&delta).unwrap();
        in_memory.push(applied.elapsed());
        times.push(started.elapsed());
    }
    times.sort();
    in_memory.sort();

    let started = Instant::now();
    let mut folded = state.clone();
    folded.compact();
    log.store_snapshot(&folded).await.unwrap();
    let snapshot = started.elapsed();

    eprintln!(
        "{n}: load {load:?} (in-process {child_load_ms:.0} ms), floor {floor:?}, peak RSS {} MiB, commit median {:?} (p90 {:?}; in-memory apply median {:?}), snapshot {snapshot:?}",
        peak_rss_kib / 1024,
        times[COMMITS / 2],
        times[COMMITS * 9 / 10],
        in_memory[COMMITS / 2],
    );
    Row {
        n,
        bytes,
        load: Duration::from_secs_f64(child_load_ms / 1000.0),
        read_floor: floor,
        peak_rss_kib,
        commit_median: times[COMMITS / 2],
        snapshot,
    }
}

fn delta(log: &StateLog, generation: u64, first: usize) -> Delta {
    log.delta(
        generation,
        Some(format!("{SOURCE}/{generation:020}.ndjson")),
        (first..first + BATCH)
            .map(|i| (path(i), entry(i, generation)))
            .collect(),
    )
}

fn source() -> SourceId {
    SourceId::new(SOURCE).unwrap()
}

/// The time to read every file of the log into memory: what loading cannot beat.
fn read_all(dir: &Path) -> Duration {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let started = Instant::now();
    let mut total = 0;
    for file in files {
        total += std::fs::read(file).unwrap().len();
    }
    assert!(total > 0);
    started.elapsed()
}

/// In the child: load, then print `entries peak_rss_kib load_ms`.
fn child_load(root: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let loaded = runtime.block_on(async {
        let location = Location::parse(root.to_str().unwrap()).unwrap();
        StateLog::new(&location, &source()).load().await.unwrap()
    });
    let elapsed = started.elapsed();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap();
    println!("{} {peak} {:.1}", loaded.state.len(), ms(elapsed));
}
