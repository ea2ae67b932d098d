"""Refuses a release whose versions disagree or whose changelog has no entry for it.

    python3 release/check.py [--root DIR] [--require-tag]

One version for everything (README, "Versions"): the workspace's `version` in Cargo.toml is the
release's version, and each of these must equal it:

  - the version of every workspace crate in Cargo.lock (a bump without `cargo update -w` is caught);
  - helm/gleaner/Chart.yaml `version` and `appVersion`;
  - helm/gleaner/values.yaml `image.tag` (the tag the chart names for humans; the packaged chart
    also pins the digest);
  - the Dockerfile's `ARG VERSION=` (the image's version label in a `docker build`);
  - the example parent chart's dependency on the chart (helm/examples/my-app/Chart.yaml).

CHANGELOG.md needs a heading `## [VERSION] - YYYY-MM-DD` with some text under it, and the state
format (state-store's FORMAT_VERSION) and output schema (scanner-core's OUTPUT_SCHEMA) the code
writes must be named in it ("State format N", "Output schema N"), so a change of either cannot be
released unannounced.

--require-tag (the release workflow sets it): HEAD must carry the tag `vVERSION` and the work tree
must be clean, so that what is released is exactly a tagged commit.

Exits 0 and prints the version, or exits 1 with one line per problem. Standard library only
(Python 3.11: tomllib); the YAML it reads is simple enough for a line match, and the chart tests
parse it fully.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
WORKSPACE_CRATES = ("state-store", "scanner-core", "sidecar")


def read(root: str, path: str) -> str:
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return f.read()


def yaml_scalar(text: str, key: str, under: str | None = None) -> str | None:
    """The value of `key:` at the top level, or one level under `under:` (two-space indent)."""
    lines = text.splitlines()
    if under is None:
        pattern = re.compile(rf"^{re.escape(key)}:\s*(.*?)\s*(#.*)?$")
        candidates = lines
    else:
        candidates = []
        inside = False
        for line in lines:
            if re.match(rf"^{re.escape(under)}:\s*$", line):
                inside = True
                continue
            if inside and line and not line.startswith(" ") and not line.startswith("#"):
                break
            if inside:
                candidates.append(line)
        pattern = re.compile(rf"^  {re.escape(key)}:\s*(.*?)\s*(#.*)?$")
    for line in candidates:
        m = pattern.match(line)
        if m:
            return m.group(1).strip().strip('"').strip("'")
    return None


def changelog_entry(text: str, version: str) -> tuple[str | None, str]:
    """(date, body) of the entry `## [version] - date`, or (None, "")."""
    heading = re.compile(rf"^## \[{re.escape(version)}\] - (\d{{4}}-\d{{2}}-\d{{2}})\s*$", re.M)
    m = heading.search(text)
    if not m:
        return None, ""
    rest = text[m.end():]
    nxt = re.search(r"^## ", rest, re.M)
    return m.group(1), (rest[: nxt.start()] if nxt else rest).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    parser.add_argument("--require-tag", action="store_true",
                        default=os.environ.get("GLEANER_RELEASE_REQUIRE_TAG") == "1")
    args = parser.parse_args()
    root = os.path.abspath(args.root)
    problems: list[str] = []

    cargo = tomllib.loads(read(root, "Cargo.toml"))
    version = cargo["workspace"]["package"]["version"]
    if not SEMVER.match(version):
        problems.append(f"Cargo.toml: workspace version {version!r} is not a semantic version")

    lock = tomllib.loads(read(root, "Cargo.lock"))
    locked = {p["name"]: p["version"] for p in lock["package"] if "source" not in p}
    for crate in WORKSPACE_CRATES:
        manifest = tomllib.loads(read(root, f"crates/{crate}/Cargo.toml"))
        own = manifest["package"].get("version")
        if own != {"workspace": True} and own != version:
            problems.append(f"crates/{crate}/Cargo.toml: version {own!r}, not the workspace's {version}")
        if locked.get(crate) != version:
            problems.append(f"Cargo.lock: {crate} is {locked.get(crate)!r}, Cargo.toml says {version} "
                            "(run `cargo update --workspace`)")

    chart = read(root, "helm/gleaner/Chart.yaml")
    for key in ("version", "appVersion"):
        value = yaml_scalar(chart, key)
        if value != version:
            problems.append(f"helm/gleaner/Chart.yaml: {key} is {value!r}, Cargo.toml says {version}")
    tag = yaml_scalar(read(root, "helm/gleaner/values.yaml"), "tag", under="image")
    if tag != version:
        problems.append(f"helm/gleaner/values.yaml: image.tag is {tag!r}, Cargo.toml says {version}")
    m = re.search(r"^ARG VERSION=(\S+)$", read(root, "Dockerfile"), re.M)
    if not m or m.group(1) != version:
        problems.append(f"Dockerfile: ARG VERSION={m.group(1) if m else '(missing)'}, Cargo.toml says {version}")
    parent = read(root, "helm/examples/my-app/Chart.yaml")
    dep = re.search(r"-\s*name:\s*gleaner\s*\n\s*version:\s*\"?([^\"\s]+)", parent)
    if not dep or dep.group(1) != version:
        problems.append(f"helm/examples/my-app/Chart.yaml: depends on gleaner "
                        f"{dep.group(1) if dep else '(none)'}, Cargo.toml says {version}")

    try:
        changelog = read(root, "CHANGELOG.md")
    except FileNotFoundError:
        changelog = ""
        problems.append("CHANGELOG.md is missing")
    if changelog:
        date, body = changelog_entry(changelog, version)
        if date is None:
            problems.append(f"CHANGELOG.md has no entry for {version}: add a heading "
                            f"'## [{version}] - YYYY-MM-DD' with what changed")
        elif not body:
            problems.append(f"CHANGELOG.md: the entry for {version} is empty")
    state_format = re.search(r"const FORMAT_VERSION: u16 = (\d+);",
                             read(root, "crates/state-store/src/codec.rs"))
    output_schema = re.search(r"pub const OUTPUT_SCHEMA: u32 = (\d+);",
                              read(root, "crates/scanner-core/src/output.rs"))
    for what, found in (("State format", state_format), ("Output schema", output_schema)):
        if not found:
            problems.append(f"could not find the {what.lower()} version in the code")
        elif changelog and not re.search(rf"{what} {found.group(1)}\b", changelog, re.I):
            problems.append(f"CHANGELOG.md does not name '{what} {found.group(1)}', which this code "
                            "writes: list it under Formats in the entry of the release that introduces it")

    if args.require_tag:
        def git(*a: str) -> str:
            return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
        tags = git("tag", "--points-at", "HEAD").split()
        if f"v{version}" not in tags:
            problems.append(f"HEAD is not tagged v{version} (its tags: {', '.join(tags) or 'none'}): "
                            f"release from a checkout of the tag, `git checkout v{version}`")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        if dirty:
            problems.append(f"the work tree has uncommitted changes: {' '.join(dirty.split()[:6])}")

    if problems:
        print(f"release check FAILED for version {version}:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"release check: version {version} agrees everywhere; CHANGELOG.md has its entry"
          + (f"; HEAD is v{version}" if args.require_tag else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
