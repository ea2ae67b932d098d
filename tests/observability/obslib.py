"""Helpers shared by the observability checks (check_static.py, e2e.py)."""

import json
import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULE_FILES = [DEPLOY / "prometheus" / "alerts.yaml", DEPLOY / "prometheus" / "slo-rules.yaml"]
DASHBOARD = DEPLOY / "grafana" / "gleaner.json"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yaml"
ALERTMANAGER_PART = DEPLOY / "alertmanager" / "gleaner-route.yaml"
ALERTMANAGERCONFIG = DEPLOY / "alertmanager" / "alertmanagerconfig.yaml"
SLO_SPEC = DEPLOY / "slos.yaml"
TUNING = DEPLOY / "tuning.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

# The standard process metrics the binary exports (Prometheus client conventions); that the
# binary really exposes each one is checked on a live scrape by e2e.py.
PROCESS_METRICS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
}
# Series Prometheus makes itself.
PROMETHEUS_METRICS = {"up"}

# Values for Grafana's variables when a dashboard query is run outside Grafana ("All": `.*`; the
# job variable's "All" is the jobs its query finds, joined by Grafana as (a|b)).
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "5m",
    "$cluster": ".*",
    "$namespace": ".*",
    "$job": ".*gleaner.*",
    "$pod": ".*",
    "$instance": ".*",
}


def rules():
    """Every rule of the shipped rule files, as (file, group, rule)."""
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path, group, rule


def alerts():
    return [rule for _, _, rule in rules() if "alert" in rule]


def recorded_names():
    return {rule["record"] for _, _, rule in rules() if "record" in rule}


def code_metric_names():
    """Every `gleaner_*` name written as a string literal in the Rust sources."""
    names = set()
    for path in (ROOT / "crates").rglob("*.rs"):
        names.update(re.findall(r'"(gleaner_[a-z0-9_]+)"', path.read_text(errors="replace")))
    return names


def substitute(expr, variables=None):
    variables = {**GRAFANA_VARIABLES, **(variables or {})}
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(name, variables[name])
    return expr


KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "atan2",
}
TOKEN = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[a-zA-Z_:][a-zA-Z0-9_:]*|\S")


def metric_names(expr):
    """The metric names a PromQL expression selects (a tokenizer, not a parser: strings,
    label matchers, ranges and grouping clauses are removed, then every identifier that is not
    a keyword and not called as a function is a metric name)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )
    tokens = TOKEN.findall(text)
    names = set()
    for i, token in enumerate(tokens):
        if not re.match(r"[a-zA-Z_:]", token) or token.lower() in KEYWORDS:
            continue
        if i + 1 < len(tokens) and tokens[i + 1] == "(":
            continue  # a function or an aggregation
        names.add(token)
    return names


def known_metric(name, code_names, recorded):
    if name in code_names or name in recorded or name in PROMETHEUS_METRICS:
        return True
    if name in PROCESS_METRICS:
        return True
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    return base != name and base in code_names


def dashboard():
    return json.loads(DASHBOARD.read_text())


def dashboard_panels():
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries():
    """(panel title, refId, expr) of every query in the dashboard, annotations included."""
    data = dashboard()
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            yield panel.get("title", ""), target["refId"], target["expr"]
    for annotation in data["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", "-", annotation["expr"]


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def runbook_anchors():
    anchors = set()
    for line in RUNBOOKS.read_text().splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            anchors.add(github_anchor(match.group(1)))
    return anchors
