#!/usr/bin/env python3
"""Engines read Gleaner's outputs: DuckDB (and, with --spark, Spark in local mode) run the queries
of examples/queries/ over the outputs of several sources written by the real `gleaner` binary,
and their answers must equal an independent computation from the input files themselves.
The views read only committed objects, those the commit records under `.committed/` name: an
uncommitted object planted beside them (a copy of a committed one under the next generation, as
a batch flushed but not yet committed leaves it) must change nothing, while a reader of every
object (the control) counts it.

    check.py [--spark] [--gleaner BIN]

Sources, each run twice with files added in between (several generations, small batches), with
default readiness (files written an hour old):
  flat root:  web-1 stats plain, web-2 stats gzip, auth-1 grep plain
  hive root:  web-1 stats plain, web-2 stats gzip, auth-1 grep gzip, auth-2 count-by plain
  labels root (hive, --partition-label namespace): web-3 and web-4 (namespace shop, app web and
              cart), web-5 (namespace pay, app web), stats plain
Then two files of web-1 are replayed (`gleaner state replay`) in the flat and hive roots: the
views keep one line per result (the replay's), so every answer stays that of the inputs, while
a view without that rule (the control) counts the two files twice.
"""
import argparse
import gzip
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

TOP = pathlib.Path(__file__).resolve().parents[2]
QUERIES = TOP / "examples" / "queries"
KEY = re.compile(rb"service=(\w+)")
SERVICES = ["auth", "cart", "search", "pay", "ship"]


def content(rng, n_lines):
    lines = []
    for _ in range(n_lines):
        level = rng.choice(["INFO", "INFO", "INFO", "WARN", "ERROR"])
        service = rng.choice(SERVICES)
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(0, 6)))
        lines.append(f"2026-12-01T10:00:00Z level={level} service={service} msg={words}")
    text = "\n".join(lines)
    if rng.random() < 0.8:
        text += "\n"  # some files end without a newline
    return text.encode()


# Independent computations, from the bytes of the input files.
def stats_of(data):
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {"lines": lines, "words": len(data.split()), "bytes": len(data)}


def grep_matches(data):
    return sum(1 for line in data.split(b"\n") if b"ERROR" in line)


def keys_of(data):
    counts = Counter()
    for line in data.split(b"\n"):
        m = KEY.search(line)
        if m:
            counts[m.group(1).decode()] += 1
    return counts


def write_files(watch, rng, prefix, count):
    written = {}
    for i in range(count):
        rel = f"{prefix}/f{i:04d}.log"
        data = content(rng, rng.randint(0, 40))
        path = watch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        old = time.time() - 3600  # ready under the default --min-age
        os.utime(path, (old, old))
        written[rel] = data
    return written


# The labels of the labels root's sources: (namespace, app).
LABELS = {"web-3": ("shop", "web"), "web-4": ("shop", "cart"), "web-5": ("pay", "web")}


def run(gleaner, work, root, source, layout, compress, processor):
    watch = work / "watch" / f"{root.name}-{source}"
    if layout == "labels":
        namespace, app = LABELS[source]
        layout = "hive"
        processor = [*processor, "--label", f"namespace={namespace}", "--label", f"app={app}",
                     "--label", f"pod={source}-0", "--partition-label", "namespace"]
    cmd = [
        gleaner, "run", "--once", "--metrics-addr", "off",
        "--watch", str(watch), "--state", str(work / "state" / root.name),
        "--output", str(root), "--source-id", source, "--output-layout", layout,
        "--compress", compress, "--max-files", "7", *processor,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


REPLAYED = ["r0/f0000.log", "r0/f0001.log"]


def replay(gleaner, work, root, source, layout, compress, processor):
    """`gleaner state replay` of REPLAYED, with the flags of `run`."""
    watch = work / "watch" / f"{root.name}-{source}"
    cmd = [
        gleaner, "state", "replay", "--metrics-addr", "off",
        "--watch", str(watch), "--state", str(work / "state" / root.name),
        "--output", str(root), "--source-id", source, "--output-layout", layout,
        "--compress", compress, *processor, *REPLAYED,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def build(gleaner, work):
    """Writes the inputs, runs gleaner over them, returns what each source's files hold."""
    rng = random.Random(1201)
    sources = {
        "flat": [("web-1", "none", ["--processor", "stats"]),
                 ("web-2", "gzip", ["--processor", "stats"]),
                 ("auth-1", "none", ["--processor", "grep", "--pattern", "ERROR"])],
        "hive": [("web-1", "none", ["--processor", "stats"]),
                 ("web-2", "gzip", ["--processor", "stats"]),
                 ("auth-1", "gzip", ["--processor", "grep", "--pattern", "ERROR"]),
                 ("auth-2", "none", ["--processor", "count-by", "--key-regex", r"service=(\w+)"])],
        "labels": [(source, "none", ["--processor", "stats"]) for source in LABELS],
    }
    inputs = {}
    for layout, runs in sources.items():
        root = work / f"out-{layout}"
        for source, compress, processor in runs:
            watch = work / "watch" / f"{root.name}-{source}"
            files = {}
            for round_ in range(2):
                files.update(write_files(watch, rng, f"r{round_}", rng.randint(15, 30)))
                run(gleaner, work, root, source, layout, compress, processor)
            if source == "web-1":
                replay(gleaner, work, root, source, layout, compress, processor)
            inputs[layout, source] = files
    return inputs


def expected(inputs, layout, days):
    """The answers of the three queries, computed from the inputs."""
    totals = []
    for (lay, source), files in sorted(inputs.items()):
        if lay != layout or not source.startswith("web"):
            continue
        s = [stats_of(d) for d in files.values()]
        totals.append({"source_id": source, "files": len(files), "failed": 0,
                       "bytes": sum(x["bytes"] for x in s), "lines": sum(x["lines"] for x in s),
                       "words": sum(x["words"] for x in s)})
    grep = sorted(
        ({"source_id": source, "path": path, "matches": grep_matches(d)}
         for (lay, source), files in inputs.items() if lay == layout and source == "auth-1"
         for path, d in files.items()),
        key=lambda r: (-r["matches"], r["source_id"], r["path"]))[:10]
    keys = Counter()
    for (lay, source), files in inputs.items():
        if lay == layout and source == "auth-2":
            for d in files.values():
                keys.update(keys_of(d))
    top = sorted(({"key": k, "lines": n} for k, n in keys.items()), key=lambda r: (-r["lines"], r["key"]))[:10]
    return totals, grep, top


def expected_per_label(inputs):
    """The answer of totals_per_namespace_and_app.sql, computed from the inputs and LABELS."""
    totals = defaultdict(Counter)
    for (layout, source), files in inputs.items():
        if layout == "labels":
            for data in files.values():
                s = stats_of(data)
                totals[LABELS[source]].update({"files": 1, "bytes": s["bytes"], "lines": s["lines"]})
    return [{"namespace": ns, "app": app, **{k: c[k] for k in ("files", "bytes", "lines")}}
            for (ns, app), c in sorted(totals.items())]


def compare_per_label(engine, got, want):
    got = [{k: (int(v) if k in ("files", "bytes", "lines") else v) for k, v in r.items()} for r in got]
    same = got == want
    print(f"{engine} on the labelled outputs (namespace a partition, app a label): totals per namespace "
          f"and app: {'equal to the inputs' if same else 'FAILED'}")
    if not same:
        print(f"  got  {got}\n  want {want}")
    return same


def by_source(rows, days):
    """Per-day totals summed per source, after checking every day is one the run saw."""
    merged = defaultdict(Counter)
    for row in rows:
        day = str(row.pop("date", None))
        if days is not None and day not in days:
            raise AssertionError(f"a batch dated {day}, not a day of this run ({sorted(days)})")
        merged[row.pop("source_id")].update({k: int(v) for k, v in row.items()})
    return [{"source_id": s, **{k: c[k] for k in ("files", "failed", "bytes", "lines", "words")}}
            for s, c in sorted(merged.items())]


def plant_uncommitted(root, source):
    """Writes a copy of `source`'s newest batch of new files under the next generation,
    uncommitted (no commit record): what a batch flushed but not committed leaves. Returns its
    path."""
    objects = sorted(p for p in root.rglob("*.ndjson*") if source in p.parts or f"source={source}" in p.parts)
    read = lambda p: gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
    # The copy is of a batch of new files (a replay's lines would only supersede their like).
    model = max(p for p in objects if b'"replay":true' not in read(p))
    generation = int(objects[-1].name.split(".")[0])
    planted = objects[-1].with_name(f"{generation + 1:020}" + model.name[20:])
    planted.write_bytes(model.read_bytes())
    return planted


def without_manifest(sql):
    """The view of outputs.sql over every object under the root, commit records or not: the
    reader the manifest protects against."""
    glob = "getvariable('outputs') || '/**/*.ndjson*'"
    return sql.replace("getvariable('committed_objects')", glob)


def without_replay_rule(sql):
    """The view of outputs.sql keeping every line, replayed ones too: the reader the rule
    protects against."""
    return sql.replace("WHERE NOT superseded;", "WHERE true;")


def duckdb_answers(root, flat, manifest=True, replays=True):
    import duckdb

    sys.path.insert(0, str(QUERIES / "duckdb"))
    from outputs import register

    con = duckdb.connect()
    if manifest and replays:
        register(con, root)
    elif not replays:
        con.execute("SET VARIABLE outputs = ?", [str(root)])
        con.execute(without_replay_rule((QUERIES / "duckdb" / "outputs.sql").read_text()))
    else:
        con.execute("SET VARIABLE outputs = ?", [str(root)])
        con.execute(without_manifest((QUERIES / "duckdb" / "outputs.sql").read_text()))

    def query(name):
        sql = (QUERIES / "duckdb" / name).read_text()
        if flat:  # no partitions: the day is not in the path
            sql = sql.replace("    date,\n", "").replace("source_id, date", "source_id")
        cur = con.execute(sql)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    return (query("totals_per_source_and_day.sql"), query("top_grep_matches.sql"),
            query("count_by_top_keys.sql"))


def duckdb_per_label(root):
    """totals_per_namespace_and_app.sql over the labelled root, after checking that every line has
    its labels and that the partition column agrees with the label."""
    import duckdb

    sys.path.insert(0, str(QUERIES / "duckdb"))
    from outputs import register

    con = duckdb.connect()
    register(con, root)
    unlabelled, disagreeing = con.execute(
        "SELECT count(*) FILTER (labels IS NULL OR labels['pod'] IS NULL), "
        "count(*) FILTER (namespace IS DISTINCT FROM labels['namespace']) FROM outputs").fetchone()
    if unlabelled or disagreeing:
        print(f"duckdb on the labelled outputs: FAILED: {unlabelled} lines without labels, "
              f"{disagreeing} whose namespace partition is not their label")
        return None
    cur = con.execute((QUERIES / "duckdb" / "totals_per_namespace_and_app.sql").read_text())
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def spark_answers(root, labels_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("spark_outputs", QUERIES / "spark" / "outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_query = module.run
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # listen on the loopback only
    spark = (SparkSession.builder.master("local[2]").appName("gleaner-engine-check")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        answers = tuple(
            [row.asDict() for row in run_query(spark, str(root), QUERIES / "spark" / name)]
            for name in ("totals_per_source_and_day.sql", "top_grep_matches.sql", "count_by_top_keys.sql"))
        # The control: every object under the root, as Spark's partition discovery finds them.
        every = (spark.read.schema(module.SCHEMA).option("pathGlobFilter", "*.ndjson*").json(str(root))
                 .where("processor = 'stats'").count())
        per_label = [row.asDict() for row in
                     run_query(spark, str(labels_root), QUERIES / "spark" / "totals_per_namespace_and_app.sql")]
        return answers, every, per_label
    finally:
        spark.stop()


def compare(engine, layout, got, want, days):
    totals, grep, top = got
    w_totals, w_grep, w_top = want
    problems = []
    if by_source([dict(r) for r in totals], days) != w_totals:
        problems.append(f"totals per source:\n  got  {by_source([dict(r) for r in totals], None)}\n  want {w_totals}")
    if layout == "hive":
        norm = lambda rows: [{k: (int(v) if k in ("matches", "lines") else v) for k, v in r.items()} for r in rows]
        if norm(grep) != w_grep:
            problems.append(f"top grep matches:\n  got  {norm(grep)}\n  want {w_grep}")
        if norm(top) != w_top:
            problems.append(f"count-by top keys:\n  got  {norm(top)}\n  want {w_top}")
    checked = "totals" + (", top grep matches, count-by top keys" if layout == "hive" else "")
    print(f"{engine} on the {layout} outputs: {checked}: {'FAILED' if problems else 'equal to the inputs'}")
    for p in problems:
        print("  " + p)
    return not problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spark", action="store_true", help="also run the Spark SQL queries")
    parser.add_argument("--gleaner", default=os.environ.get("GLEANER_BIN", str(TOP / "target/debug/gleaner")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        first_day = time.strftime("%Y-%m-%d", time.gmtime())
        started = time.time()
        inputs = build(args.gleaner, work)
        days = {first_day, time.strftime("%Y-%m-%d", time.gmtime())}
        objects = [p for p in work.rglob("*.ndjson*")]
        lines = sum(len((gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()).splitlines())
                    for p in objects)
        print(f"{sum(len(f) for f in inputs.values())} files of {len(inputs)} sources -> "
              f"{len(objects)} output objects, {lines} lines ({time.time() - started:.1f}s)")
        planted = [plant_uncommitted(work / "out-flat", "web-1"), plant_uncommitted(work / "out-hive", "web-1")]
        print(f"planted uncommitted objects: {', '.join(str(p.relative_to(work)) for p in planted)}")
        ok = True
        for layout in ("flat", "hive"):
            root = work / f"out-{layout}"
            want = expected(inputs, layout, days)
            t = time.time()
            ok &= compare("duckdb", layout, duckdb_answers(root, layout == "flat"), want, days if layout == "hive" else None)
            print(f"  ({time.time() - t:.1f}s)")
        t = time.time()
        per_label = duckdb_per_label(work / "out-labels")
        ok &= per_label is not None and compare_per_label("duckdb", per_label, expected_per_label(inputs))
        print(f"  ({time.time() - t:.1f}s)")
        # The controls: a reader of every object counts the uncommitted ones; with one commit
        # record gone, the totals differ from the inputs.
        for layout in ("flat", "hive"):
            got = duckdb_answers(work / f"out-{layout}", layout == "flat", manifest=False)
            caught = by_source([dict(r) for r in got[0]], None) != expected(inputs, layout, days)[0]
            print(f"control: DuckDB reading every {layout} object, without the manifest: totals "
                  f"{'differ from the inputs (the uncommitted object counted), as they must' if caught else 'STILL MATCH: the planted object is not read'}")
            ok &= caught
        for layout in ("flat", "hive"):
            got = duckdb_answers(work / f"out-{layout}", layout == "flat", replays=False)
            caught = by_source([dict(r) for r in got[0]], None) != expected(inputs, layout, days)[0]
            print(f"control: DuckDB keeping the replayed lines beside the ones they supersede "
                  f"({layout}): totals {'differ from the inputs (two files counted twice), as they must' if caught else 'STILL MATCH: the replays are not read'}")
            ok &= caught
        victim = sorted((work / "out-hive" / ".committed" / "web-1").glob("*.json"))[0]
        removed = victim.read_bytes()
        victim.unlink()
        got = duckdb_answers(work / "out-hive", False)
        caught = by_source([dict(r) for r in got[0]], None) != expected(inputs, "hive", days)[0]
        print(f"control: with the commit record {victim.name} of web-1 removed, DuckDB's totals "
              f"{'differ from the inputs, as they must' if caught else 'STILL MATCH: the check cannot fail'}")
        ok &= caught
        if args.spark:
            victim.write_bytes(removed)
            t = time.time()
            root = work / "out-hive"
            answers, every, per_label = spark_answers(root, work / "out-labels")
            ok &= compare_per_label("spark", per_label, expected_per_label(inputs))
            ok &= compare("spark", "hive", answers, expected(inputs, "hive", days), days)
            want = sum(t["files"] for t in expected(inputs, "hive", days)[0])
            print(f"control: Spark reading every hive object, without the manifest: {every} stats lines, "
                  f"{'not the ' + str(want) + ' committed, as it must' if every != want else 'THE SAME: the planted object is not read'}")
            ok &= every != want
            print(f"  ({time.time() - t:.1f}s, session start included)")
    if not ok:
        print("engine check FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
