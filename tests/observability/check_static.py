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
    # cluster (its "All" matches series without the label), namespace, job (Gleaner's: the jobs
    # of gleaner_build_info, so the process_* panels never show another program's) and the Pod.
    for name in ("cluster", "namespace", "job", "pod"):
        var = variables.get(name, {})
        check(var.get("type") == "query", f"no query variable {name}")
        check(var.get("datasource", {}).get("uid") == "${datasource}", f"variable {name}: datasource")
        check(var.get("includeAll"), f"variable {name}: no All")
        if name == "job":
            check("gleaner_build_info" in var.get("query", "") and not var.get("allValue"),
                  "variable job: its values must be Gleaner's jobs (gleaner_build_info), All their list")
        else:
            check(var.get("allValue") == ".*", f"variable {name}: All must be .* (a missing label matches it)")
    check("instance" not in variables, "variable instance: collectors are chosen by Pod, not by address")
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
    # Every selector of every query is filtered: the SLO series (recorded per cluster and namespace)
    # by those two, every other series also by Gleaner's job and the Pod.
    gleaner = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job", pod=~"$pod"'
    slo = 'cluster=~"$cluster", namespace=~"$namespace"'
    selectors = 0
    for title, ref, expr in obslib.dashboard_queries():
        for name, matchers in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
            selectors += 1
            if name.startswith("slo:") or name.startswith("gleaner:slo_"):
                if "sloth_service" in matchers and "namespace" not in matchers:
                    continue  # the SLOs' metadata (objective, budget): one series per SLO
                check(slo in matchers, f"panel {title!r} ({ref}): {name}{{{matchers}}} ignores the cluster or namespace")
            else:
                check(gleaner in matchers, f"panel {title!r} ({ref}): {name}{{{matchers}}} is not filtered by "
                                           "cluster, namespace, Gleaner's job and the Pod")
        bare = re.findall(r"(?<![\w:{])((?:gleaner|process)_[a-z_]+|up)(?![\w{(])", re.sub(r"\{[^}]*\}", "{}", expr))
        check(not bare, f"panel {title!r} ({ref}): unfiltered {bare}")
    # Before its first successful scan a collector's timestamp is 0: the age panel shows nothing
    # (Grafana: "never"), not the age of the Unix epoch.
    for title, ref, expr in obslib.dashboard_queries():
        if "gleaner_last_successful_scan_timestamp_seconds" in expr:
            check(re.search(r"gleaner_last_successful_scan_timestamp_seconds\{[^}]*\}\s*>\s*0", expr),
                  f"panel {title!r} ({ref}): time() - a timestamp that is 0 before the first success")
    # The SLO panels follow the configured objectives and target: read from the recording rules,
    # never written into the dashboard.
    for panel in obslib.dashboard_panels():
        text = json.dumps(panel)
        check(not re.search(r"\b(99\.[0-9]+|2 h\b|7200)", text), f"panel {panel.get('title')!r}: an objective or target written in")
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


# kube-prometheus-stack's default Alertmanager configuration (the chart's values,
# alertmanager.config): the configuration Gleaner's part is merged into, as a platform team has it.
KUBE_PROMETHEUS_STACK = {
    "global": {"resolve_timeout": "5m"},
    "inhibit_rules": [
        {"source_matchers": ["severity = critical"], "target_matchers": ["severity =~ warning|info"],
         "equal": ["namespace", "alertname"]},
        {"source_matchers": ["severity = warning"], "target_matchers": ["severity = info"],
         "equal": ["namespace", "alertname"]},
        {"source_matchers": ["alertname = InfoInhibitor"], "target_matchers": ["severity = info"],
         "equal": ["namespace"]},
        {"target_matchers": ["alertname = InfoInhibitor"]},
    ],
    "route": {
        "group_by": ["namespace"], "group_wait": "30s", "group_interval": "5m", "repeat_interval": "12h",
        "receiver": "null",
        "routes": [{"receiver": "null", "matchers": ["alertname = \"Watchdog\""]}],
    },
    "receivers": [{"name": "null"}],
    "templates": ["/etc/alertmanager/config/*.tmpl"],
}

# (labels, the receiver Alertmanager must pick) in the shipped example and in a merged
# configuration: Gleaner's alerts by severity, and alerts of other rules, which reach none of
# Gleaner's receivers (before, the root route sent Watchdog to Gleaner's tickets channel).
ROUTES = [
    (["alertname=GleanerStale", "severity=critical", "namespace=shop"], "gleaner-slack-paging"),
    (["alertname=GleanerScanFreshnessFastBurn", "severity=critical", "sloth_severity=page"], "gleaner-slack-paging"),
    (["alertname=GleanerScansFailing", "severity=warning", "namespace=shop"], "gleaner-slack-tickets"),
    (["alertname=GleanerFutureMtime", "severity=info", "namespace=shop"], "gleaner-null"),
    (["alertname=Watchdog", "severity=none"], None),
    (["alertname=Watchdog"], None),
    (["alertname=KubePodCrashLooping", "severity=critical", "namespace=shop"], None),
    (["alertname=NodeFilesystemAlmostFull", "severity=warning"], None),
]


def check_routes(path, where, expected_other):
    """amtool config routes test for ROUTES; alerts of other rules go to `expected_other`."""
    for labels, receiver in ROUTES:
        result = amtool("config", "routes", "test", f"--config.file={path}", *labels)
        got = result.stdout.strip()
        want = receiver or expected_other
        check(result.returncode == 0 and got == want,
              f"{where}: amtool config routes test {' '.join(labels)} -> {got or result.stderr.strip()}, expected {want}")


def render(templates, text, data):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
        path = f.name
    try:
        result = amtool("template", "render", f"--template.glob={templates}", f"--template.data={path}",
                        f"--template.text={text}")
    finally:
        os.unlink(path)
    check(result.returncode == 0, f"amtool template render {text[:60]!r}: {result.stderr}")
    return result.stdout


def notification(spec, status, pods, alertname="GleanerStale", severity="critical"):
    """The data Alertmanager gives a Slack template: one group, one alert per Pod."""
    alerts = []
    for pod in pods:
        labels = {"alertname": alertname, "severity": severity, "namespace": "shop", "pod": pod,
                  "instance": f"10.0.0.{len(alerts) + 1}:9464", "source_id": pod}
        alerts.append({
            "status": status, "labels": labels,
            "annotations": {
                "summary": f"Gleaner shop/{pod}: no successful scan for 2h 5m",
                "description": "The collector has not completed a scan.",
                "runbook_url": f"{spec['runbook_base']}#{alertname.lower()}",
                "dashboard_url": f"{spec['grafana_url']}/d/{spec['dashboard_uid']}/gleaner?var-namespace=shop",
            },
            "startsAt": "2026-11-24T10:00:00Z",
            "endsAt": "2026-11-24T11:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": f"{len(alerts):016x}",
        })
    common = {"alertname": alertname, "severity": severity, "namespace": "shop"}
    if len(pods) == 1:
        common = alerts[0]["labels"]
    return {
        "receiver": "gleaner-slack-paging", "status": status, "alerts": alerts,
        "groupLabels": {"alertname": alertname, "namespace": "shop"},
        "commonLabels": common, "commonAnnotations": {k: v for k, v in alerts[0]["annotations"].items()
                                                      if k in ("runbook_url", "dashboard_url") or len(pods) == 1},
        "externalURL": "http://alertmanager:9093",
    }


def check_alertmanager(spec):
    config = yaml.safe_load(obslib.ALERTMANAGER.read_text())
    part = yaml.safe_load(obslib.ALERTMANAGER_PART.read_text())
    # The shipped example is the part merged into a minimal configuration, whose other alerts go
    # to `default`.
    check_routes(obslib.ALERTMANAGER, "alertmanager.yaml", "default")
    severities = {a["labels"]["severity"] for a in obslib.alerts()}
    check(severities <= {"critical", "warning", "info"}, f"alerts with severities {sorted(severities)}")
    # The part's route takes Gleaner's alerts only, and every alert name it or its inhibition
    # rules name is one of Gleaner's.
    check(part["route"]["matchers"] == ['alertname=~"Gleaner.+"'], f"the part's route matches {part['route']['matchers']}")
    names = {a["alert"] for a in obslib.alerts()}
    for rule in part["inhibit_rules"]:
        matchers = rule["source_matchers"] + rule["target_matchers"]
        check(any(m.startswith(("alertname", "sloth_service=\"gleaner\"")) for m in rule["source_matchers"])
              and any(m.startswith(("alertname", "sloth_service=\"gleaner\"")) for m in rule["target_matchers"]),
              f"inhibit rule {rule}: not scoped to Gleaner's alerts")
        for matcher in matchers:
            m = re.match(r'alertname(=~|=)"([^"]*)"', matcher)
            if m:
                wanted = m.group(2).split("|") if m.group(1) == "=~" else [m.group(2)]
                for name in wanted:
                    check(name in names, f"inhibit rule names {name}, which is no alert")
    # One incident, one message: Gleaner's alerts are grouped by alert name, cluster and
    # namespace; never by a label that differs per Pod, which would make one message per Pod.
    slack_receivers = {r["name"] for r in config["receivers"] if r.get("slack_configs")}

    def routes(route):
        yield route
        for child in route.get("routes", []):
            yield from routes(child)

    for route in routes(config["route"]):
        if route.get("receiver") in slack_receivers or "group_by" in route:
            per_pod = set(route.get("group_by", [])) & {"source_id", "pod", "instance", "pod_name"}
            check(not per_pod, f"route to {route.get('receiver')}: grouped by {sorted(per_pod)}, one message per Pod")
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            check("api_url" not in slack, f"{receiver['name']}: webhook URL written in the configuration")
            check(str(slack.get("api_url_file", "")).startswith("/"), f"{receiver['name']}: no api_url_file")
            check(slack.get("send_resolved") is True, f"{receiver['name']}: send_resolved is not true")

    # Merged into kube-prometheus-stack's default configuration: valid, Gleaner's alerts reach
    # Gleaner's receivers, Watchdog still goes to its `null`.
    sys.path.insert(0, str(obslib.DEPLOY))
    import generate

    merged = generate.merge_alertmanager(KUBE_PROMETHEUS_STACK, part, "/etc/alertmanager/config/*.tmpl")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(merged, f, sort_keys=False)
        merged_path = f.name
    try:
        result = amtool("check-config", merged_path)
        # The merged file names its templates where the operator mounts them: amtool only warns
        # about a glob that matches nothing.
        check(result.returncode == 0, f"merged into kube-prometheus-stack's configuration: {result.stdout}{result.stderr}")
        check_routes(merged_path, "merged into kube-prometheus-stack's", "null")
    finally:
        os.unlink(merged_path)

    # The templates, rendered by Alertmanager's own template engine: one alert, and ten Pods in one
    # group (one message naming the ten).
    templates = str(obslib.ALERTMANAGER.parent / "templates" / "*.tmpl")
    ten = [f"checkout-{i}" for i in range(10)]
    for status in ("firing", "resolved"):
        for pods in (["checkout-0"], ten):
            data = notification(spec, status, pods)
            rendered = {name: render(templates, f'{{{{ template "gleaner.slack.{name}" . }}}}', data)
                        for name in ("title", "text", "color", "runbook", "dashboard", "fallback", "titlelink")}
            where = f"{status}, {len(pods)} alerts"
            title = (f"[FIRING:{len(pods)}] GleanerStale in shop" if status == "firing" else "[RESOLVED] GleanerStale in shop")
            check(rendered["title"].strip() == title, f"{where}: title {rendered['title']!r}")
            text = rendered["text"]
            listing = f"*{'Firing' if status == 'firing' else 'Resolved'} for {len(pods)}:* " + ", ".join(f"`{p}`" for p in pods)
            check(listing in text, f"{where}: the text does not list the sources ({listing!r}): {text!r}")
            check(data["alerts"][0]["annotations"]["summary"] in text, f"{where}: the text lacks the summary: {text!r}")
            check(f"<{data['alerts'][0]['annotations']['runbook_url']}|Runbook>" in text, f"{where}: no runbook link")
            check(f"<{data['alerts'][0]['annotations']['dashboard_url']}|Dashboard>" in text, f"{where}: no dashboard link")
            check(("resolved" in text) == (status == "resolved"), f"{where}: text {text!r}")
            check(rendered["color"].strip() == ("danger" if status == "firing" else "good"), f"{where}: color {rendered['color']!r}")
            check(rendered["runbook"].strip() == data["alerts"][0]["annotations"]["runbook_url"], f"{where}: runbook button")
            check(rendered["dashboard"].strip() == data["alerts"][0]["annotations"]["dashboard_url"], f"{where}: dashboard button")
            # The AlertmanagerConfig's inlined templates render the same text as the template files.
            crd = yaml.safe_load(obslib.ALERTMANAGERCONFIG.read_text())
            slack = next(r for r in crd["receivers"] if r["name"] == "gleaner-slack-paging")["slackConfigs"][0]
            source = next(r for r in part["receivers"] if r["name"] == "gleaner-slack-paging")["slack_configs"][0]
            for crd_key, key in (("title", "title"), ("text", "text"), ("color", "color"), ("fallback", "fallback"),
                                 ("titleLink", "title_link"), ("footer", "footer")):
                inlined = render(templates, slack[crd_key], data)
                from_file = render(templates, source[key], data)
                check(inlined == from_file, f"{where}: the AlertmanagerConfig's {crd_key} renders {inlined!r}, "
                                            f"the template file {from_file!r}")
    print("alertmanager: routes of Gleaner's and other alerts (also merged into kube-prometheus-stack's "
          "configuration), no per-Pod grouping, Slack templates and their inlined copies rendered")


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
