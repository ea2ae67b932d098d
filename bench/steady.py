#!/usr/bin/env python3
"""What a user pays for Gleaner in their Pod: the sidecar under a steady emitter.

Runs the release `gleaner` as the chart runs it (the chart's default flags: `--min-age 5s`,
`--interval 1m`, file-system events, `--after delete`, `stats`), with local state and output,
while an emitter writes a fixed mix of text files at a steady rate. Measures, in the same run:

* CPU seconds per GiB: Gleaner's (user + system, from /proc/PID/stat) against `cat`'s over the
  same files (the same sizes and bytes, warm in the page cache, as Gleaner reads them), and
  against `cat`'s and `rm`'s together: with `--after delete` Gleaner also deletes every file,
  which `cat` does not (`rm` is timed over up to 30 seconds' worth of the same files);
* the commit delay (`gleaner_commit_delay_seconds`: from a file's mtime plus `--min-age` to its
  commit) as percentiles, interpolated within the histogram's buckets, and the share of files
  committed within 2 s;
* RSS every second: its range after the first minute and its slope (MiB per minute), its
  anonymous part, and the process's threads;
* exactly once: every emitted file appears in exactly one output line.

Writes a Markdown report and a PNG (RSS, CPU rate and the files waiting, over time).

    python3 bench/steady.py --gleaner target/release/gleaner --seconds 300 --rate-mb 20 \
        --report target/bench-steady/report.md --plot bench/steady.png
"""

import argparse
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SLOTS = 20
PAGE = os.sysconf("SC_PAGE_SIZE")

# One second of the emitter at 20 MB/s: many small files, some medium, a few large (sizes in
# bytes, counts per second). Scaled by --rate-mb / 20.
MIX = [(4 * 1024, 600), (64 * 1024, 40), (1024 * 1024, 6), (8 * 1024 * 1024, 1)]


def log_text(size, rng):
    """Log-like lines (a timestamp, a level, a message), about `size` bytes."""
    levels = [b"INFO", b"INFO", b"INFO", b"DEBUG", b"WARN", b"ERROR"]
    words = [b"request", b"served", b"user", b"cache", b"miss", b"db", b"query", b"took", b"ms"]
    lines, total = [], 0
    while total < size:
        line = b"2026-12-06T05:00:00.%06dZ %s %s %d\n" % (
            rng.randrange(1000000),
            rng.choice(levels),
            b" ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))),
            rng.randrange(100000),
        )
        lines.append(line)
        total += len(line)
    return b"".join(lines)[:size]


def second_of_files(scale, rng):
    """The contents written in one second: a list of byte strings."""
    out = []
    for size, count in MIX:
        n = max(1, round(count * scale))
        body = log_text(size, rng)
        out.extend(body for _ in range(n))
    return out


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid):
    """RSS and its anonymous part (MiB), and the process's threads, from /proc/PID/status."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    kib = lambda name: int(fields.get(name, "0 kB").split()[0])
    return kib("VmRSS") / 1024, kib("RssAnon") / 1024, kib("Threads")


def files_waiting(watch):
    """The emitter's files not yet committed and deleted (Gleaner's own `.gleaner-*` left out)."""
    return sum(1 for e in os.scandir(watch) if not e.name.startswith("."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def gauge(metrics, name):
    """The value of an unlabelled gauge, 0 when absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def committed(metrics):
    """Files committed so far (gleaner_files_total)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gleaner_files_total")
    )


def delay_buckets(metrics):
    """[(le, cumulative count)] of gleaner_commit_delay_seconds, +Inf last."""
    out = []
    for line in metrics.splitlines():
        if line.startswith("gleaner_commit_delay_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return sorted(out)


def quantile(buckets, q):
    """histogram_quantile's interpolation: linear within the bucket that holds the rank."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = le, count
    return lower


def share_within(buckets, bound):
    total = buckets[-1][1]
    return next((c for le, c in buckets if le == bound), float("nan")) / total if total else 0.0


def write_second(files_of_a_second, pool, prefix):
    """Writes one second's files into `pool`, named `prefix` and their index; returns the names."""
    names = []
    for i, body in enumerate(files_of_a_second):
        p = pool / f"{prefix}{i:05}.log"
        p.write_bytes(body)
        names.append(str(p))
    return names


def children_cpu(command):
    """CPU seconds (user + system) that running `command` to its end takes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cat_cpu(files_of_a_second, seconds, workdir):
    """CPU seconds `cat` takes over the same files: one second's files written once, then read
    by one `cat` per second of the run (the bytes and file count of the whole run)."""
    pool = Path(workdir) / "cat-pool"
    pool.mkdir()
    names = write_second(files_of_a_second, pool, "f")
    subprocess.run(["cat", *names], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    return sum(children_cpu(["cat", *names]) for _ in range(seconds))


def rm_cpu(files_of_a_second, seconds, workdir):
    """CPU seconds `rm` takes to delete the same files, per second of files: what any collector
    that deletes the files it collected (as `--after delete` does) pays on top of reading them.
    One second's files are written afresh (not counted), then removed by one `rm`, for up to 30
    seconds' worth; returns (CPU seconds, bytes removed)."""
    pool = Path(workdir) / "rm-pool"
    pool.mkdir()
    rounds = min(seconds, 30)
    cpu = sum(
        children_cpu(["rm", "-f", *write_second(files_of_a_second, pool, f"r{r}-f")])
        for r in range(rounds)
    )
    return cpu, rounds * sum(len(body) for body in files_of_a_second)


def linear_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def rss_by_window(samples, seconds):
    """Markdown rows of RSS, its anonymous part and the threads per window of the run after its
    first minute until the emitter stops (5-minute windows, 15-minute ones for runs of 45 minutes
    or more; a last window shorter than half of one is left out): a slow rise that levels off,
    or not, shows here and not in one range over the whole run."""
    window = 900 if seconds >= 2700 else 300
    rows, start = [], 60
    while start + window / 2 <= seconds:
        end = min(start + window, seconds)
        part = [s for s in samples if start <= s[0] < end]
        if part:
            rss = sorted(s[2] for s in part)
            anon = sorted(s[5] for s in part)
            rows.append(
                f"| {start // 60}-{end // 60} min | {rss[0]:.1f} / {rss[len(rss) // 2]:.1f} / "
                f"{rss[-1]:.1f} | {anon[0]:.1f} / {anon[len(anon) // 2]:.1f} / {anon[-1]:.1f} "
                f"| {max(s[6] for s in part)} |"
            )
        start += window
    if len(rows) < 2:
        return []
    return [
        "",
        "RSS by window (MiB):",
        "",
        "| window | RSS min / median / max | anonymous min / median / max | threads, most |",
        "|---|---:|---:|---:|",
        *rows,
    ]


def output_paths(out_dir):
    seen = {}
    for f in Path(out_dir).rglob("*"):
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(out_dir).parts):
            for line in f.read_text().splitlines():
                if line.strip():
                    path = json.loads(line)["path"]
                    seen[path] = seen.get(path, 0) + 1
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gleaner", required=True)
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--rate-mb", type=float, default=20.0, help="MB (10^6 bytes) per second")
    ap.add_argument("--report", required=True)
    ap.add_argument("--plot")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--after", default="delete", help="Gleaner's --after (the chart's: delete)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    files = second_of_files(args.rate_mb / 20.0, rng)
    per_second = sum(len(b) for b in files)
    work = tempfile.mkdtemp(prefix="gleaner-steady.")
    watch, state, out = (Path(work) / d for d in ("watch", "state", "out"))
    watch.mkdir()
    port = free_port()
    # The chart's flags (helm/gleaner/values.yaml, golden tests/k8s/golden/my-app.yaml), storage
    # local; --drain writer-gone is left out (no writer process to watch here).
    cmd = [
        args.gleaner, "run", f"--watch={watch}", f"--state={state}", f"--output={out}",
        "--processor=stats", "--min-age=5s", "--interval=1m", "--compress=none",
        "--output-layout=flat", f"--after={args.after}", "--watch-capacity=1073741824",
        "--min-free=102MiB", f"--metrics-addr=127.0.0.1:{port}", "--shutdown-timeout=25s",
        "--stall-timeout=10m", "--log-format=json", "--source-id=steady",
    ]
    logf = open(Path(work) / "gleaner.log", "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            scrape(port)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"gleaner did not serve metrics on {port}; log in {work}/gleaner.log")

    samples = []  # (t, cpu s, rss MiB, files waiting, files tracked, anonymous MiB, threads)
    emitted = {"files": 0, "bytes": 0, "behind": 0.0}
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler():
        while not stop.is_set():
            try:
                waiting = files_waiting(watch)
                tracked = gauge(scrape(port), "gleaner_tracked_files")
                rss, anon, threads = memory(proc.pid)
                samples.append((time.monotonic() - t0, cpu_seconds(proc.pid), rss, waiting, tracked, anon, threads))
            except (FileNotFoundError, ProcessLookupError, OSError):
                return
            stop.wait(1.0)

    threading.Thread(target=sampler, daemon=True).start()
    cpu_start = cpu_seconds(proc.pid)
    # Each second's files in 20 slots of 50 ms, the sizes mixed in each: a steady writer, not
    # one burst a second.
    order = list(range(len(files)))
    rng.shuffle(order)
    slots = [order[k::SLOTS] for k in range(SLOTS)]
    for second in range(args.seconds):
        for k, slot in enumerate(slots):
            due = t0 + second + k / SLOTS
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                emitted["behind"] = max(emitted["behind"], now - due)
            for i in slot:
                with open(watch / f"app-{second:05}-{i:04}.log", "wb") as f:
                    f.write(files[i])
                emitted["files"] += 1
                emitted["bytes"] += len(files[i])
    emit_end = time.monotonic()
    # Every file is committed and deleted within --min-age plus a scan of the backlog; give it
    # a minute, then read the histogram.
    deadline = emit_end + 60
    while time.monotonic() < deadline and committed(scrape(port)) < emitted["files"]:
        time.sleep(0.5)
    if args.after == "delete":
        while time.monotonic() < deadline and files_waiting(watch):
            time.sleep(0.1)
    drained = time.monotonic() - emit_end
    cpu_total = cpu_seconds(proc.pid) - cpu_start
    metrics = scrape(port)
    stop.set()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    logf.close()

    buckets = delay_buckets(metrics)
    seen = output_paths(out)
    twice = sum(1 for c in seen.values() if c > 1)
    missing = emitted["files"] - len(seen)
    cat_s = cat_cpu(files, args.seconds, work)
    gib = emitted["bytes"] / 2**30
    rm_s, rm_bytes = rm_cpu(files, args.seconds, work)
    rm_per_gib = rm_s / (rm_bytes / 2**30)
    steady = [(t, r) for t, _, r, *_ in samples if t >= 60]
    rss_values = [r for _, r in steady] or [0.0]
    later = [s for s in samples if s[0] >= 60] or samples
    anon = sorted(s[5] for s in later) or [0.0]
    threads = [s[6] for s in later] or [0]
    slope = linear_slope([t / 60 for t, _ in steady], [r for _, r in steady])
    second_half = [(t, r) for t, r in steady if t >= args.seconds / 2]
    slope_late = linear_slope([t / 60 for t, _ in second_half], [r for _, r in second_half])

    q = {p: quantile(buckets, p) for p in (0.5, 0.9, 0.99)}
    share = share_within(buckets, 2.0)
    within_2s = "n/a (no 2 s bucket)" if share != share else f"{100 * share:.1f} %"
    lines = [
        f"Steady emitter: {args.rate_mb:g} MB/s for {args.seconds} s "
        f"({emitted['files']:,} files, {gib:.2f} GiB; mix per second: "
        + ", ".join(f"{round(c * args.rate_mb / 20)} x {s // 1024} KiB" for s, c in MIX)
        + f"; emitter at most {emitted['behind']:.2f} s behind its schedule)",
        "",
        "| measure | Gleaner | reference | ratio / goal |",
        "|---|---:|---:|---:|",
        f"| CPU seconds per GiB | {cpu_total / gib:.2f} s | `cat`: {cat_s / gib:.2f} s "
        f"| {cpu_total / cat_s:.2f}x (goal <= 2x) |",
        f"| CPU seconds per GiB, against reading and deleting | {cpu_total / gib:.2f} s | `cat` + `rm`: "
        f"{cat_s / gib + rm_per_gib:.2f} s (`rm` alone {rm_per_gib:.2f} s) "
        f"| {cpu_total / gib / (cat_s / gib + rm_per_gib):.2f}x |",
        f"| commit delay after --min-age, p50 / p90 / p99 | {q[0.5]:.2f} / {q[0.9]:.2f} / {q[0.99]:.2f} s "
        f"| -- | p99 goal <= 2 s |",
        f"| files committed within 2 s of --min-age | {within_2s} | -- | -- |",
        f"| RSS after the first minute, min / median / max | {min(rss_values):.1f} / "
        f"{sorted(rss_values)[len(rss_values) // 2]:.1f} / {max(rss_values):.1f} MiB | -- | flat |",
        f"| RSS slope after the first minute; over the second half | {slope:+.3f}; {slope_late:+.3f} MiB/min "
        f"| -- | ~0 |",
        f"| of it anonymous, after the first minute, min / median / max | {anon[0]:.1f} / "
        f"{anon[len(anon) // 2]:.1f} / {anon[-1]:.1f} MiB | -- | -- |",
        f"| threads, at the first minute / at the end / most | {threads[0]} / {threads[-1]} / "
        f"{max(threads)} | -- | -- |",
        f"| files in exactly one output line | {len(seen) - twice:,} of {emitted['files']:,} "
        f"(twice: {twice}, missing: {missing}) | -- | all |",
        "",
        f"Every file committed (and, with --after delete, deleted) {drained:.1f} s after the emitter stopped; gleaner exit code {code}.",
        f"Command: `{' '.join(Path(c).name if c == args.gleaner else c for c in cmd).replace(work, 'WORK')}`",
        *rss_by_window(samples, args.seconds),
    ]
    report = "\n".join(lines) + "\n"
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(report)
    Path(args.report).with_suffix(".samples.json").write_text(json.dumps(samples))
    print(report)

    if args.plot:
        plot(samples, args, args.plot)
    if os.environ.get("GLEANER_STEADY_KEEP"):
        print(f"kept {work}")
    else:
        subprocess.run(["rm", "-rf", work])
    sys.exit(0 if (twice == 0 and missing == 0 and code == 0) else 1)


def plot(samples, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in samples]
    cpu_rate = [0.0] + [
        (samples[i][1] - samples[i - 1][1]) / max(samples[i][0] - samples[i - 1][0], 1e-9)
        for i in range(1, len(samples))
    ]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].plot(t, [s[2] for s in samples], color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, cpu_rate, color="tab:red", linewidth=0.8)
    axes[1].set_ylabel("CPU (cores)")
    axes[2].plot(t, [s[3] for s in samples], color="tab:green", linewidth=0.8, label="waiting")
    axes[2].plot(t, [s[4] for s in samples], color="tab:purple", linewidth=0.8, label="tracked")
    axes[2].set_ylabel("files")
    axes[2].legend(loc="upper left")
    axes[2].set_xlabel("seconds")
    for ax in axes:
        ax.axvline(args.seconds, color="grey", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"gleaner sidecar, chart defaults, steady emitter {args.rate_mb:g} MB/s")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
