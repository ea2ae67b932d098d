#!/usr/bin/env python3
"""Checks Gleaner output lines against the JSON Schemas in schema/.

    validate.py PATH...

Each PATH is an output object (`.ndjson` or `.ndjson.gz`) or a directory searched for them. Every
line must match schema/output-line.schema.json, and its `result` the schema of its processor,
schema/results/<processor>.schema.json, when Gleaner ships one (a library user's processor has
its own). Before that, the script makes sure the schemas can fail: altered copies of the first
valid line of each processor must be rejected. Commit records found in the same places
(`.committed/<source-id>/<generation>.json`) must match schema/commit-record.schema.json and name
their own source and generation (altered copies rejected too). Exits 1 on any problem, and when
there is no line to check at all.
"""
import copy
import gzip
import json
import pathlib
import sys
from collections import Counter

import fastjsonschema

ROOT = pathlib.Path(__file__).resolve().parents[2] / "schema"


def load(path):
    """The schema at `path`, compiled (fastjsonschema: a million lines in seconds, where a
    generic validator takes minutes)."""
    return fastjsonschema.compile(json.loads(path.read_text()))


def errors(validate, value):
    try:
        validate(value)
        return []
    except fastjsonschema.JsonSchemaValueException as e:
        return [e.message]


def objects(paths):
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.name.endswith((".ndjson", ".ndjson.gz")))
        else:
            yield path


def records(paths):
    """The commit records under `paths`: `.committed/<source-id>/<20 digits>.json`."""
    for path in map(pathlib.Path, paths):
        candidates = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        yield from (p for p in candidates if p.parent.parent.name == ".committed")


def record_problems(path, record, schema):
    found = errors(schema, record)
    if not found and (record["source_id"] != path.parent.name
                      or f"{record['generation']:020}.json" != path.name):
        found.append(f"names source {record['source_id']} generation {record['generation']}, "
                     f"but is {path.parent.name}/{path.name}")
    return found


def record_alterations(record):
    """Copies of a valid commit record that the schema must reject."""
    for field in sorted(record):
        broken = copy.deepcopy(record)
        del broken[field]
        yield f"without {field}", broken
    for field, value in (("manifest", 2), ("key", "web-1/1.json"), ("committed_at", "yesterday"),
                         ("unknown_field", 1)):
        broken = copy.deepcopy(record)
        broken[field] = value
        yield f"{field} {value}", broken


def check_records(paths):
    """Every commit record under `paths` checked, then the controls: (records, problems)."""
    schema = load(ROOT / "commit-record.schema.json")
    checked, failed, first = 0, [], None
    for path in records(paths):
        checked += 1
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            failed.append(f"{path}: not JSON: {e}")
            continue
        found = record_problems(path, record, schema)
        failed += [f"{path}: {p}" for p in found]
        if not found and first is None:
            first = record
    for what, broken in record_alterations(first) if first else ():
        if not errors(schema, broken):
            failed.append(f"control not rejected: a commit record with {what}")
    return checked, failed


def lines(obj):
    raw = obj.read_bytes()
    if obj.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        yield number, line


def problems(line, envelope, results):
    found = [f"line: {e}" for e in errors(envelope, line)]
    result_schema = results.get(line.get("processor"))
    if result_schema is not None and "result" in line:
        found += [f"result: {e}" for e in errors(result_schema, line["result"])]
    return found


def alterations(line):
    """Copies of a valid line that the schemas must reject."""
    for field in ("schema", "source_id", "generation", "path", "size", "mtime", "processor"):
        broken = copy.deepcopy(line)
        del broken[field]
        yield f"without {field}", broken
    broken = copy.deepcopy(line)
    broken["schema"] = 2
    yield "schema 2", broken
    broken = copy.deepcopy(line)
    broken["mtime"] = "2026-12-01 10:00:00"
    yield "mtime not RFC 3339", broken
    broken = copy.deepcopy(line)
    broken["unknown_field"] = 1
    yield "an unknown field", broken
    for labels, what in (({"date": "2026-12-06"}, "a reserved label key"), ({"App": "x"}, "an uppercase label key"),
                         ({"app": 1}, "a label value that is not a string"), ({"app": "a/b"}, "a label value with '/'"),
                         ({}, "empty labels")):
        broken = copy.deepcopy(line)
        broken["labels"] = labels
        yield what, broken
    broken = copy.deepcopy(line)
    if "result" in line:
        broken["error"] = "both"
        yield "result and error", broken
        if isinstance(line["result"], dict) and line["result"]:
            broken = copy.deepcopy(line)
            key = sorted(line["result"])[0]
            broken["result"][key] = "not the right type"
            yield f"result.{key} of the wrong type", broken
            broken = copy.deepcopy(line)
            broken["result"]["unknown_field"] = 1
            yield "an unknown result field", broken
    else:
        del broken["error"]
        yield "neither result nor error", broken


def main(paths):
    envelope = load(ROOT / "output-line.schema.json")
    results = {p.name.removesuffix(".schema.json"): load(p) for p in (ROOT / "results").glob("*.schema.json")}
    counts, failed, first = Counter(), [], {}
    for obj in objects(paths):
        for number, text in lines(obj):
            try:
                line = json.loads(text)
            except json.JSONDecodeError as e:
                failed.append(f"{obj}:{number}: not JSON: {e}")
                continue
            kind = (line.get("processor"), "result" in line)
            counts[line.get("processor"), "result" if kind[1] else "error"] += 1
            found = problems(line, envelope, results)
            failed += [f"{obj}:{number}: {p}: {text[:300]}" for p in found]
            if not found:
                first.setdefault(kind, line)
    # The controls: every alteration of a valid line is caught.
    controls = 0
    for (processor, _), line in sorted(first.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if processor not in results:
            continue
        for what, broken in alterations(line):
            controls += 1
            if not problems(broken, envelope, results):
                failed.append(f"control not rejected: a {processor} line with {what}")
    total = sum(counts.values())
    for (processor, kind), n in sorted(counts.items(), key=str):
        print(f"{n:8d} {processor} lines with {kind}")
    print(f"{total} lines checked; {controls} altered lines rejected as they must be")
    checked, record_failures = check_records(paths)
    failed += record_failures
    print(f"{checked} commit records checked")
    if total == 0:
        failed.append("no output line to check")
    for problem in failed[:30]:
        print(problem, file=sys.stderr)
    if failed:
        print(f"output schema check FAILED: {len(failed)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["."]))
