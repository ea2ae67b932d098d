#!/usr/bin/env python3
"""Checks of the shipped observability files that need no running server.

* every alert: a severity of critical|warning|info, a summary, a description, a runbook_url
  whose anchor is the alert's section of docs/runbooks.md, a dashboard_url to the dashboard's
  uid; alert names unique; every alert section of the runbooks belongs to an alert;
* every metric named by a rule, an alert's annotation query or a dashboard query exists: a
  `gleaner_*` string literal of crates/**/*.rs (histograms with their _bucket/_count/_sum), a
  recording rule, `up`, or a standard process metric (e2e.py checks those on a live scrape);
* the dashboard: fixed uid, a Prometheus datasource variable used by every panel and query,
  namespace and instance variables, the rows the issue asks for, unique panel ids, no template
  syntax of a chart engine; every query parses (promtool check rules on a rule file made of
  the queries, Grafana's variables substituted);
* GleanerDown and the availability SLO select the same scrape targets;
* Alertmanager: every severity routes to its receiver (amtool config routes test); every Slack
  receiver reads its webhook URL from a file and sends resolved messages; the Slack templates
  render (amtool template render) a firing and a resolved group with the status, summary,
  runbook and dashboard links.

Needs promtool and amtool on PATH (or $PROMTOOL, $AMTOOL) and PyYAML.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True
import obslib  # noqa: E402

PROMTOOL = os.environ.get("PROMTOOL", "promtool")
AMTOOL = os.environ.get("AMTOOL", "amtool")

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}")


def check(condition, message):
    if not condition:
        fail(message)
    return condition


def tokenizer_self_test():
    cases = {
        'sum by (x) (rate(foo_total{a="b", le="1"}[5m])) / on (i) group_left bar': {
            "foo_total",
            "bar",
        },
        "time() - (x > 0) or vector(1e3)": {"x"},
        'histogram_quantile(0.99, sum by (le) (rate(h_bucket{n=~".*"}[1m])))': {"h_bucket"},
        "a unless b and bool c": {"a", "b", "c"},
    }
    for expr, expected in cases.items():
        check(obslib.metric_names(expr) == expected, f"tokenizer: {expr!r} gave {obslib.metric_names(expr)}")


def annotation_queries(rule):
    """PromQL in an alert's annotation templates (`printf "..." ... | query`)."""
    found = []
    for text in rule.get("annotations", {}).values():
        for match in re.finditer(r'printf\s+"((?:[^"\\]|\\.)*)"[^}]*\|\s*query', text):
            found.append(match.group(1).replace("%s", "x"))
    return found


def check_alerts(spec, dashboard):
    names = [a["alert"] for a in obslib.alerts()]
    check(len(names) == len(set(names)), f"alert names repeat: {sorted(names)}")
    anchors = obslib.runbook_anchors()
    for alert in obslib.alerts():
        name = alert["alert"]
        severity = alert.get("labels", {}).get("severity")
        check(severity in ("critical", "warning", "info"), f"{name}: severity {severity!r}")
        ann = alert.get("annotations", {})
        for key in ("summary", "description", "runbook_url", "dashboard_url"):
            check(ann.get(key), f"{name}: no {key} annotation")
        # An alert on a counter (or on the drain's leftovers, seen in one scrape) fires on events:
        # without `for:` one event fires it and its window's end resolves it, again and again.
        if re.search(r"[a-z_]_total\b|gleaner_drain_leftover_files", alert["expr"]):
            check(alert.get("for"), f"{name}: fires on events (a counter) without `for:`")
        anchor = name.lower()
        check(
            ann.get("runbook_url") == f"{spec['runbook_base']}#{anchor}",
            f"{name}: runbook_url {ann.get('runbook_url')!r} is not {spec['runbook_base']}#{anchor}",
        )
        check(anchor in anchors, f"{name}: docs/runbooks.md has no section #{anchor}")
        prefix = f"{spec['grafana_url']}/d/{dashboard['uid']}/"
        check(
            str(ann.get("dashboard_url", "")).startswith(prefix),
            f"{name}: dashboard_url does not start with {prefix}",
        )
    # Every alert section of the runbooks is about an existing alert.
    sections = [
        m.group(1)
        for m in re.finditer(r"^##\s+(Gleaner\w+)\s*$", obslib.RUNBOOKS.read_text(), re.M)
    ]
    for section in sections:
        check(section in names, f"docs/runbooks.md: section {section} names no alert")
    print(f"{len(names)} alerts: severity, annotations, runbook sections and dashboard links checked")


def check_metric_names(dashboard):
    code = obslib.code_metric_names()
    recorded = obslib.recorded_names()
    check(len(code) > 20, f"found only {len(code)} gleaner_* names in crates/**/*.rs")
    used = 0
    for path, _, rule in obslib.rules():
        exprs = [rule["expr"]] + annotation_queries(rule)
        for expr in exprs:
            for name in obslib.metric_names(expr):
                used += 1
                check(
                    obslib.known_metric(name, code, recorded),
                    f"{path.name}: {rule.get('alert') or rule.get('record')} names {name}, "
                    "which is neither in the code nor recorded",
                )
    for title, ref, expr in obslib.dashboard_queries():
        for name in obslib.metric_names(obslib.substitute(expr)):
            used += 1
            check(
                obslib.known_metric(name, code, recorded),
                f"dashboard panel {title!r} ({ref}) names {name}, which is neither in the code "
                "nor recorded",
            )
    print(f"{used} metric references checked against {len(code)} names in the code")


def check_dashboard(spec, dashboard):
    text = obslib.DASHBOARD.read_text()
    check(dashboard["uid"] == spec["dashboard_uid"], f"dashboard uid {dashboard['uid']!r}")
    check(
        not re.search(r"\{\{-|-\}\}|\{\{\s*\.|\{\{\s*(if|range|include|template|tpl)\b", text),
        "the dashboard holds template syntax",
    )
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("datasource", {})
    check(ds.get("type") == "datasource" and ds.get("query") == "prometheus", "no Prometheus datasource variable")
    for name in ("namespace", "instance"):
        var = variables.get(name, {})
        check(var.get("type") == "query", f"no query variable {name}")
        check(var.get("includeAll") and var.get("allValue") == ".*", f"variable {name}: All must be .*")
        check(var.get("datasource", {}).get("uid") == "${datasource}", f"variable {name}: datasource")
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    for wanted in (
        "Service level objectives",
        "Throughput",
        "Backlog and freshness",
        "Watched volume",
        "Errors",
        "File-system events",
        "Resources",
    ):
        check(wanted in rows, f"dashboard: no row {wanted!r}")
    ids = [p["id"] for p in obslib.dashboard_panels()]
    check(len(ids) == len(set(ids)), "dashboard: panel ids repeat")
    for panel in obslib.dashboard_panels():
        if panel["type"] == "row":
            continue
        check(panel.get("datasource", {}).get("uid") == "${datasource}", f"panel {panel['title']!r}: datasource")
        for target in panel.get("targets", []):
            check(target.get("datasource", {}).get("uid") == "${datasource}", f"panel {panel['title']!r}: target datasource")
        grid = panel["gridPos"]
        check(grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the grid")
    for title, _, expr in obslib.dashboard_queries():
        if title.startswith("annotation") or "sloth_" in expr or expr.startswith("up{"):
            continue
        check(
            'namespace=~"$namespace"' in expr and 'instance=~"$instance"' in expr,
            f"panel {title!r}: a query that ignores the namespace or instance variable",
        )
    # Every query parses: promtool checks a rule file made of them.
    queries = list(obslib.dashboard_queries())
    group = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:query_{i}:check", "expr": obslib.substitute(expr)}
                    for i, (_, _, expr) in enumerate(queries)
                ],
            }
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(group, f)
        path = f.name
    try:
        result = subprocess.run([PROMTOOL, "check", "rules", path], capture_output=True, text=True)
        check(result.returncode == 0, f"dashboard queries do not parse:\n{result.stdout}{result.stderr}")
    finally:
        os.unlink(path)
    print(f"dashboard: {len(ids)} panels, {len(queries)} queries parsed by promtool")


BUCKET_MATCHER = re.compile(r"""\b(le|quantile)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'[^']*'|`[^`]*`)""")


def promql_string(literal):
    """The value of a PromQL string literal ("…" with Go escapes, '…', or `raw`)."""
    if literal[0] == "`":
        return literal[1:-1]
    return literal[1:-1].encode().decode("unicode_escape")


def check_bucket_selectors():
    """Prometheus 3 stores le="7200" as le="7200.0" (and quantile likewise): a selector must match
    a bucket bound in both forms, or it matches nothing on one of the versions."""
    sys.path.insert(0, os.path.dirname(__file__))
    from prom3_histories import prom3_float

    exprs = [(f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"]) for path, _, rule in obslib.rules()]
    exprs += [(f"dashboard panel {title!r}", expr) for title, _, expr in obslib.dashboard_queries()]
    found = 0
    for where, expr in exprs:
        for label, op, literal in BUCKET_MATCHER.findall(expr):
            found += 1
            value = promql_string(literal)
            if op in ("=", "!="):
                check(False, f"{where}: {label}{op}{literal} matches one form only: Prometheus 3 stores "
                             f"{label}=\"{value}\" as {label}=\"{prom3_float(value)}\"")
                continue
            bound = re.match(r"[0-9]+(?:\.[0-9]+)?", value)
            if not check(bound is not None, f"{where}: {label}{op}{literal}: no bucket bound at its start"):
                continue
            bound = bound.group(0)
            for form in {bound, prom3_float(bound)}:
                check(re.fullmatch(value, form) is not None,
                      f"{where}: {label}{op}{literal} does not match {label}=\"{form}\"")
    print(f"{found} le/quantile selectors match the Prometheus 2 and 3 forms of their bound")


def check_selectors(spec):
    # GleanerDown and the availability SLO select the same targets (the tuning's selector).
    availability = next(rule for _, _, rule in obslib.rules() if rule.get("record") == "gleaner:down:bool")
    selector = re.search(r"up\{[^}]*\}", availability["expr"]).group(0)
    down = next(a for a in obslib.alerts() if a["alert"] == "GleanerDown")
    check(selector in down["expr"], f"GleanerDown does not select {selector} as the availability SLO does")
    # The file-freshness buckets of deploy/slos.yaml are the binary's.
    rust = (obslib.ROOT / "crates" / "scanner-core" / "src" / "telemetry" / "mod.rs").read_text()
    found = re.search(r"COMMIT_DELAY_BUCKETS: \[f64; \d+\] = \[([^\]]*)\]", rust)
    if check(found, "COMMIT_DELAY_BUCKETS not found in crates/scanner-core/src/telemetry/mod.rs"):
        binary = [float(x) for x in re.findall(r"[0-9.]+", found.group(1))]
        latency = next(s for s in spec["slos"] if "histogram" in s["sli"])
        check([float(b) for b in latency["sli"]["buckets"]] == binary,
              f"deploy/slos.yaml's buckets {latency['sli']['buckets']} are not the binary's {binary}")


def amtool(*args):
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True)


def check_alertmanager(spec):
    config = yaml.safe_load(obslib.ALERTMANAGER.read_text())
    severities = {a["labels"]["severity"] for a in obslib.alerts()}
    expected = {"critical": "slack-paging", "warning": "slack-tickets", "info": "null"}
    for severity in sorted(severities | set(expected)):
        result = amtool(
            "config", "routes", "test", f"--config.file={obslib.ALERTMANAGER}",
            f"--verify.receivers={expected.get(severity, '?')}",
            f"severity={severity}", "alertname=GleanerTest", "namespace=shop",
        )
        check(result.returncode == 0, f"amtool: severity {severity} does not route to {expected.get(severity)}: {result.stdout}{result.stderr}")
    check("source_id" in config["route"]["group_by"] and "namespace" in config["route"]["group_by"], "route: not grouped by source_id and namespace")
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            check("api_url" not in slack, f"{receiver['name']}: webhook URL written in the configuration")
            check(str(slack.get("api_url_file", "")).startswith("/"), f"{receiver['name']}: no api_url_file")
            check(slack.get("send_resolved") is True, f"{receiver['name']}: send_resolved is not true")
    # The templates, rendered by Alertmanager's own template engine.
    templates = str(obslib.ALERTMANAGER.parent / "templates" / "*.tmpl")
    alert = {
        "labels": {
            "alertname": "GleanerStale", "severity": "critical", "namespace": "shop",
            "pod": "checkout-0", "instance": "10.0.0.1:9464",
        },
        "annotations": {
            "summary": "Gleaner shop/checkout-0: no successful scan for 2h 5m",
            "description": "The collector on 10.0.0.1:9464 has not completed a scan.",
            "runbook_url": f"{spec['runbook_base']}#gleanerstale",
            "dashboard_url": f"{spec['grafana_url']}/d/{spec['dashboard_uid']}/gleaner?var-namespace=shop",
        },
        "startsAt": "2026-11-24T10:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "0123456789abcdef",
    }
    for status in ("firing", "resolved"):
        data = {
            "receiver": "slack-paging",
            "status": status,
            "alerts": [dict(alert, status=status, endsAt="2026-11-24T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z")],
            "groupLabels": {"alertname": "GleanerStale", "namespace": "shop"},
            "commonLabels": alert["labels"],
            "commonAnnotations": alert["annotations"],
            "externalURL": "http://alertmanager:9093",
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(data, f)
            path = f.name
        rendered = {}
        try:
            for name in ("title", "text", "color", "runbook", "dashboard", "fallback", "titlelink"):
                result = amtool(
                    "template", "render", f"--template.glob={templates}",
                    f"--template.data={path}", f'--template.text={{{{ template "gleaner.slack.{name}" . }}}}',
                )
                check(result.returncode == 0, f"amtool template render gleaner.slack.{name}: {result.stderr}")
                rendered[name] = result.stdout
        finally:
            os.unlink(path)
        title = "[FIRING:1] GleanerStale in shop" if status == "firing" else "[RESOLVED] GleanerStale in shop"
        check(rendered.get("title", "").strip() == title, f"{status} title: {rendered.get('title')!r}")
        text = rendered.get("text", "")
        check(alert["annotations"]["summary"] in text, f"{status} text lacks the summary: {text!r}")
        check(f"<{alert['annotations']['runbook_url']}|Runbook>" in text, f"{status} text lacks the runbook link")
        check(f"<{alert['annotations']['dashboard_url']}|Dashboard>" in text, f"{status} text lacks the dashboard link")
        check(("resolved" in text) == (status == "resolved"), f"{status} text: {text!r}")
        check(rendered.get("color", "").strip() == ("danger" if status == "firing" else "good"), f"{status} color {rendered.get('color')!r}")
        check(rendered.get("runbook", "").strip() == alert["annotations"]["runbook_url"], "runbook button")
        check(rendered.get("dashboard", "").strip() == alert["annotations"]["dashboard_url"], "dashboard button")
    print(f"alertmanager: routes for {sorted(severities)}, Slack receivers, templates rendered (firing, resolved)")


def main():
    spec = yaml.safe_load(obslib.SLO_SPEC.read_text())
    # The links' defaults live in the tuning (deploy/tuning.yaml), which the shipped files use.
    tuning = yaml.safe_load(obslib.TUNING.read_text())
    spec["runbook_base"] = tuning["runbookBaseUrl"]
    spec["grafana_url"] = tuning["grafanaUrl"]
    dashboard = obslib.dashboard()
    tokenizer_self_test()
    check_alerts(spec, dashboard)
    check_metric_names(dashboard)
    check_dashboard(spec, dashboard)
    check_bucket_selectors()
    check_selectors(spec)
    check_alertmanager(spec)
    if failures:
        print(f"{len(failures)} static checks failed")
        return 1
    print("static checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
