#!/usr/bin/env python3
"""Writes deploy/grafana/gleaner.json, Gleaner's Grafana dashboard (pure JSON, fixed uid).

    python3 deploy/grafana/generate_dashboard.py          # rewrite gleaner.json
    python3 deploy/grafana/generate_dashboard.py --check  # exit 1 if gleaner.json differs

The JSON file is what is shipped and imported (Dashboards > New > Import, or the chart's
ConfigMap); this script only keeps panel ids, grid positions and selectors consistent. Edit the
panels here, run it, and commit both. Standard library only.

Variables: `datasource` (any Prometheus); `cluster`, `namespace` and `pod` (a collector: its Pod,
whose name is its source id unless the chart's run.sourceId says otherwise), multi-value, with
"All" as `.*`, which also matches series without the label (no cluster label in a single-cluster
Prometheus, no namespace or pod outside Kubernetes); `job`, Gleaner's scrape jobs (those with
gleaner_build_info), whose "All" is their list, so that the process_* panels never show another
program of the namespace. Every query is filtered by all four (the SLO series, recorded per
cluster and namespace, by those two). The SLO row reads the recording rules of
deploy/prometheus/slo-rules.yaml, objectives and the latency target included: nothing the tuning
can change is written into the dashboard.
"""

import argparse
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUTPUT = HERE / "gleaner.json"

UID = "gleaner-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'cluster=~"$cluster", namespace=~"$namespace", job=~"$job", pod=~"$pod"'
SLO = 'sloth_service="gleaner", cluster=~"$cluster", namespace=~"$namespace"'
# Per collector: a Pod, and its address where there is no Pod label.
BY = "cluster, namespace, pod, instance"
BUDGET = 'slo:error_budget:ratio{sloth_service="gleaner"}'
ON = "on (sloth_id, sloth_slo, sloth_service) group_left"
RUNBOOKS = "https://github.com/gleaner-dev/gleaner/blob/main/docs/runbooks.md"


def target(expr, legend="", ref="A", instant=False, fmt=None):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if fmt:
        t["format"] = fmt
    return t


def thresholds(*steps):
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


GREEN = (("green", None),)


def panel(kind, title, description, targets, unit="short", width=8, height=8, **extra):
    defaults = {"unit": unit}
    defaults.update(extra.pop("defaults", {}))
    if "thresholds" not in defaults:
        defaults["thresholds"] = thresholds(*GREEN)
    options = extra.pop("options", {})
    if kind == "timeseries":
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
            **options,
        }
        defaults.setdefault("custom", {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10})
    elif kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
            **options,
        }
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [dict(t, refId=refs[i]) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
        "options": options,
        "_size": (width, height),
        **extra,
    }


def ts(title, description, targets, unit="short", **extra):
    return panel("timeseries", title, description, targets, unit, **extra)


def stat(title, description, targets, unit="short", **extra):
    return panel("stat", title, description, targets, unit, **extra)


def bars(title, description, targets, unit="short", **extra):
    extra.setdefault("defaults", {})["custom"] = {
        "drawStyle": "bars",
        "fillOpacity": 80,
        "stacking": {"mode": "normal", "group": "A"},
    }
    return panel("timeseries", title, description, targets, unit, **extra)


def threshold_lines(*steps):
    return {
        "thresholds": thresholds(*steps),
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "thresholdsStyle": {"mode": "line+area"},
        },
    }


ROWS = [
    (
        "Service level objectives",
        [
            stat(
                "SLI over the SLO period",
                "Share of good events (or good time) over the SLO period (30 days), per SLO, "
                "from slo:sli_error:ratio_rate30d. Objectives: deploy/slos.yaml.",
                [target(f"1 - slo:sli_error:ratio_rate30d{{{SLO}}}", "{{sloth_slo}} {{namespace}}")],
                unit="percentunit",
                defaults={"decimals": 3},
                width=6,
            ),
            stat(
                "Objectives",
                "The objective of each SLO (slo:objective:ratio).",
                [target('slo:objective:ratio{sloth_service="gleaner"}', "{{sloth_slo}}")],
                unit="percentunit",
                defaults={"decimals": 2, "color": {"mode": "fixed", "fixedColor": "blue"}},
                width=6,
            ),
            stat(
                "Error budget remaining",
                "Share of the period's error budget not yet spent "
                "(slo:period_error_budget_remaining:ratio); below 0 the SLO is missed.",
                [
                    target(
                        f"slo:period_error_budget_remaining:ratio{{{SLO}}}",
                        "{{sloth_slo}} {{namespace}}",
                    )
                ],
                unit="percentunit",
                defaults={
                    "decimals": 1,
                    "thresholds": thresholds(("red", None), ("orange", 0), ("green", 0.25)),
                },
                width=12,
            ),
            ts(
                "SLI (1h) vs objective",
                "Good share over the last hour against the objective. Gaps: no "
                "events in the window (event SLIs).",
                [
                    target(f"1 - slo:sli_error:ratio_rate1h{{{SLO}}}", "{{sloth_slo}} {{namespace}}"),
                    target(
                        'slo:objective:ratio{sloth_service="gleaner"}', "objective {{sloth_slo}}"
                    ),
                ],
                unit="percentunit",
                width=12,
            ),
            ts(
                "Burn rate",
                "How fast the error budget burns (1 = exactly the budget over the period). "
                "Pages fire above 14.4 (1h and 5m) or 6 (6h and 30m); tickets above 3 (1d and "
                "2h) or 1 (3d and 6h).",
                [
                    target(f"slo:current_burn_rate:ratio{{{SLO}}}", "5m {{sloth_slo}} {{namespace}}"),
                    target(
                        f"slo:sli_error:ratio_rate1h{{{SLO}}}\n/ {ON}\n{BUDGET}",
                        "1h {{sloth_slo}} {{namespace}}",
                    ),
                    target(
                        f"slo:sli_error:ratio_rate6h{{{SLO}}}\n/ {ON}\n{BUDGET}",
                        "6h {{sloth_slo}} {{namespace}}",
                    ),
                ],
                width=12,
                defaults=threshold_lines(("green", None), ("orange", 6), ("red", 14.4)),
            ),
        ],
    ),
    (
        "Throughput",
        [
            ts(
                "Files committed",
                "Files in committed batches per second, by outcome (failed: an error line "
                "instead of a result).",
                [target(f"sum by (outcome) (rate(gleaner_files_total{{{SEL}}}[$__rate_interval]))", "{{outcome}}")],
                unit="short",
            ),
            ts(
                "Bytes read",
                "Input bytes of committed files per second.",
                [target(f"sum by ({BY}) (rate(gleaner_bytes_total{{{SEL}}}[$__rate_interval]))", "{{pod}}")],
                unit="Bps",
            ),
            ts(
                "Scans and batches",
                "Scans per second by result, and batches committed per second by kind "
                "(recovered: an interrupted batch redone).",
                [
                    target(f"sum by (result) (rate(gleaner_scans_total{{{SEL}}}[$__rate_interval]))", "scans {{result}}"),
                    target(f"sum by (kind) (rate(gleaner_batches_total{{{SEL}}}[$__rate_interval]))", "batches {{kind}}"),
                ],
                unit="short",
            ),
            ts(
                "Scan duration",
                "Median and 99th percentile of whole scans.",
                [
                    target(
                        f"histogram_quantile(0.5, sum by (le) (rate(gleaner_scan_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "p50",
                    ),
                    target(
                        f"histogram_quantile(0.99, sum by (le) (rate(gleaner_scan_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "p99",
                    ),
                ],
                unit="s",
                width=12,
            ),
            ts(
                "Scan phases (p99)",
                "99th percentile of each phase: list (walking the directory), diff (against "
                "the state), process, flush (the output object), commit (the delta).",
                [
                    target(
                        f"histogram_quantile(0.99, sum by (le, phase) (rate(gleaner_scan_phase_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "{{phase}}",
                    )
                ],
                unit="s",
                width=12,
            ),
        ],
    ),
    (
        "Backlog and freshness",
        [
            ts(
                "Time since the last successful scan",
                "Per collector, against its stale threshold (twice --interval): "
                "GleanerStale fires above it. Nothing (\"never\") for a collector that has not "
                "had a successful scan yet: its timestamp is 0 until then, and GleanerStale counts "
                "from its start.",
                [
                    target(f"time() - (gleaner_last_successful_scan_timestamp_seconds{{{SEL}}} > 0)", "{{pod}}"),
                    target(f"2 * gleaner_scan_interval_seconds{{{SEL}}}", "stale after {{pod}}"),
                ],
                unit="s",
                defaults={"noValue": "never"},
            ),
            ts(
                "Oldest ready file waiting",
                "Age of the oldest ready file not yet committed (0 when none); it keeps "
                "growing while scans fail. GleanerBacklogOld fires past twice --interval.",
                [
                    target(
                        f"(time() - gleaner_oldest_pending_timestamp_seconds{{{SEL}}})\n"
                        f"* (gleaner_oldest_pending_timestamp_seconds{{{SEL}}} > bool 0)",
                        "{{pod}}",
                    )
                ],
                unit="s",
            ),
            ts(
                "Ready files waiting",
                "Ready files not yet committed, per collector.",
                [target(f"sum by ({BY}) (gleaner_pending_files{{{SEL}}})", "{{pod}}")],
                unit="short",
            ),
            ts(
                "Ready bytes waiting",
                "Bytes of the ready files not yet committed, per collector.",
                [target(f"sum by ({BY}) (gleaner_pending_bytes{{{SEL}}})", "{{pod}}")],
                unit="bytes",
            ),
            ts(
                "Commit delay",
                "From when a file could be ready (modification time plus --min-age) to its "
                "commit: the file-freshness SLI, against its target (the SLO's recording rule "
                "gleaner:slo_latency_target:seconds, from the tuning).",
                [
                    target(
                        f"histogram_quantile(0.5, sum by (le) (rate(gleaner_commit_delay_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "p50",
                    ),
                    target(
                        f"histogram_quantile(0.99, sum by (le) (rate(gleaner_commit_delay_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "p99",
                    ),
                    target('max(gleaner:slo_latency_target:seconds{sloth_service="gleaner"})', "target"),
                ],
                unit="s",
            ),
            ts(
                "Files not ready, by reason",
                "New files that wait: an in-progress name, too young, no marker, not yet "
                "stable, a partial last line, a retry pending.",
                [target(f"sum by (reason) (gleaner_not_ready_files{{{SEL}}})", "{{reason}}")],
                unit="short",
            ),
            ts(
                "Files tracked and listed",
                "Files the state tracks, and regular files the last listing found.",
                [
                    target(f"sum by ({BY}) (gleaner_tracked_files{{{SEL}}})", "tracked {{pod}}"),
                    target(f"sum by ({BY}) (gleaner_listed_files{{{SEL}}})", "listed {{pod}}"),
                ],
                unit="short",
            ),
        ],
    ),
    (
        "Watched volume",
        [
            ts(
                "Watched directory vs its capacity",
                "Share of --watch-capacity (in a Pod, the emptyDir's sizeLimit) that the watched "
                "directory takes: the blocks of every file and directory in it, committed, "
                "pending or in progress, hidden ones included, as the kubelet counts them; "
                "measured at every walk of the whole tree (--interval). Past 100 % the kubelet "
                "evicts the Pod without a drain and every file in the volume is lost. "
                "GleanerWatchCapacityFillingUp warns from 50 % when the trend passes 100 % within "
                "the hour; GleanerWatchNearCapacity pages from 80 %. Empty for collectors run "
                "without --watch-capacity.",
                [
                    target(
                        f"max by ({BY}) (gleaner_watch_bytes{{{SEL}}} / gleaner_watch_capacity_bytes{{{SEL}}})",
                        "{{pod}}",
                    )
                ],
                unit="percentunit",
                width=12,
                defaults=dict(
                    threshold_lines(("green", None), ("orange", 0.5), ("red", 0.8)),
                    min=0,
                ),
            ),
            ts(
                "Watched directory size",
                "Disk space the watched directory takes (gleaner_watch_bytes, with or without "
                "--watch-capacity), and its capacity where set (gleaner_watch_capacity_bytes).",
                [
                    target(f"max by ({BY}) (gleaner_watch_bytes{{{SEL}}})", "held {{pod}}"),
                    target(
                        f"max by ({BY}) (gleaner_watch_capacity_bytes{{{SEL}}})",
                        "capacity {{pod}}",
                    ),
                ],
                unit="bytes",
                width=12,
            ),
            ts(
                "Free space",
                "Free space of the file system holding the watched directory (statvfs), measured "
                "at every scan. For an emptyDir on disk this is the node's disk, shared with "
                "every Pod on the node, not the emptyDir's sizeLimit: the Pod's own budget is in the "
                "panels above (--watch-capacity). --min-free and GleanerWatchVolumeLowSpace follow "
                "this.",
                [target(f"min by ({BY}) (gleaner_watch_free_bytes{{{SEL}}})", "{{pod}}")],
                unit="bytes",
            ),
            stat(
                "Below --min-free",
                "1 while the file system of the watched directory (for an emptyDir on disk, the "
                "node's disk) has less free space than --min-free.",
                [target(f"max by ({BY}) (gleaner_watch_low_space{{{SEL}}})", "{{pod}}")],
                defaults={
                    "thresholds": thresholds(("green", None), ("red", 1)),
                    "mappings": [
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "OK", "index": 0},
                                "1": {"text": "LOW", "index": 1},
                            },
                        }
                    ],
                },
            ),
            ts(
                "Cleanup after commit",
                "Committed files deleted, moved or quarantined per second, by result.",
                [
                    target(
                        f"sum by (action, result) (rate(gleaner_cleanup_total{{{SEL}}}[$__rate_interval]))",
                        "{{action}} {{result}}",
                    )
                ],
                unit="short",
            ),
        ],
    ),
    (
        "Errors",
        [
            bars(
                "Scan errors by stage",
                "Errors that failed a scan: watch, state, output, config, resources, worker, "
                "internal. A failed scan is retried with backoff.",
                [target(f"sum by (stage) (increase(gleaner_errors_total{{{SEL}}}[$__rate_interval]))", "{{stage}}")],
            ),
            bars(
                "Failed files by reason",
                "Files committed as failed: vanished, replaced, truncated, permission_denied, "
                "corrupt, too_large, io, processor.",
                [
                    target(
                        f"sum by (reason) (increase(gleaner_files_failed_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
            ),
            bars(
                "Retries by reason",
                "Reads that failed in a way that may pass, held back and tried again.",
                [
                    target(
                        f"sum by (reason) (increase(gleaner_file_retries_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
            ),
            ts(
                "Ready, fenced",
                "gleaner_ready (state loaded, last scan succeeded) and gleaner_fenced (another "
                "writer owns the source id: the process exits with code 3).",
                [
                    target(f"min by ({BY}) (gleaner_ready{{{SEL}}})", "ready {{pod}}"),
                    target(f"max by ({BY}) (gleaner_fenced{{{SEL}}})", "fenced {{pod}}"),
                ],
                unit="short",
            ),
            ts(
                "Drain leftovers",
                "Files the drain at shutdown left in the watched directory, by reason, and "
                "leftovers shipped raw (--ship-leftovers).",
                [
                    target(
                        f"sum by ({BY}, reason) (gleaner_drain_leftover_files{{{SEL}}})",
                        "left {{reason}} {{pod}}",
                    ),
                    target(
                        f"sum by (result) (increase(gleaner_leftovers_shipped_total{{{SEL}}}[$__rate_interval]))",
                        "shipped {{result}}",
                    ),
                ],
                unit="short",
            ),
            ts(
                "Files stamped in the future",
                "Files whose modification time is further ahead than --max-clock-skew.",
                [target(f"sum by ({BY}) (gleaner_future_mtime_files{{{SEL}}})", "{{pod}}")],
                unit="short",
            ),
        ],
    ),
    (
        "File-system events",
        [
            ts(
                "Events",
                "File-system events that can make a file ready, per second.",
                [target(f"sum by ({BY}) (rate(gleaner_events_total{{{SEL}}}[$__rate_interval]))", "{{pod}}")],
                unit="short",
                width=12,
            ),
            bars(
                "Events lost by reason",
                "Events lost (overflow, watch_limit, unsupported, vanished, error): the "
                "interval scan finds what they missed, up to --interval later.",
                [
                    target(
                        f"sum by (reason) (increase(gleaner_events_lost_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    )
                ],
                width=12,
            ),
        ],
    ),
    (
        "Resources",
        [
            ts(
                "Up",
                "Whether Prometheus could scrape each collector.",
                [target(f"up{{{SEL}}}", "{{pod}}")],
                unit="short",
                width=6,
            ),
            ts(
                "CPU",
                "CPU seconds per second used by the process.",
                [
                    target(
                        f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])", "{{pod}}"
                    )
                ],
                unit="short",
                width=6,
            ),
            ts(
                "Memory",
                "Resident and virtual memory of the process.",
                [
                    target(f"process_resident_memory_bytes{{{SEL}}}", "rss {{pod}}"),
                    target(f"process_virtual_memory_bytes{{{SEL}}}", "virtual {{pod}}"),
                ],
                unit="bytes",
                width=6,
            ),
            ts(
                "Open file descriptors",
                "Share of the open-file limit in use; GleanerFileDescriptorsNearLimit fires "
                "above 80 %.",
                [
                    target(
                        f"process_open_fds{{{SEL}}} / process_max_fds{{{SEL}}}", "{{pod}}"
                    )
                ],
                unit="percentunit",
                width=6,
                defaults=threshold_lines(("green", None), ("red", 0.8)),
            ),
            ts(
                "Threads",
                "Threads of the process.",
                [target(f"process_threads{{{SEL}}}", "{{pod}}")],
                unit="short",
                width=6,
            ),
            ts(
                "Restarts",
                "Process starts in the last hour (process_start_time_seconds changes); "
                "GleanerCrashLooping fires at 2 in 15 minutes.",
                [target(f"changes(process_start_time_seconds{{{SEL}}}[1h])", "{{pod}}")],
                unit="short",
                width=6,
            ),
            ts(
                "HTTP connections rejected",
                "Connections to /metrics and the probes closed at once because the limit was "
                "reached.",
                [
                    target(
                        f"sum by ({BY}) (rate(gleaner_http_connections_rejected_total{{{SEL}}}[$__rate_interval]))",
                        "{{pod}}",
                    )
                ],
                unit="short",
                width=6,
            ),
            panel(
                "table",
                "Collectors",
                "Every collector with its version and commit (gleaner_build_info).",
                [target(f"gleaner_build_info{{{SEL}}}", "", instant=True, fmt="table")],
                width=6,
                options={"showHeader": True},
                transformations=[
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "Value": True, "__name__": True}
                        },
                    }
                ],
            ),
        ],
    ),
]


def layout():
    panels, next_id, y = [], 1, 0
    for title, children in ROWS:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": next_id,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x, row_height = 0, 0
        for child in children:
            width, height = child.pop("_size")
            if x + width > 24:
                x, y = 0, y + row_height
                row_height = 0
            child["id"] = next_id
            child["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
            next_id += 1
            x += width
            row_height = max(row_height, height)
            panels.append(child)
        y += row_height
    return panels


def variable(name, label, query, all_value=".*"):
    """A query variable, multi-value, with "All": `.*` (which matches a missing label too), or
    with all_value None Grafana's own (every value the query found, as a regex alternation)."""
    out = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": all_value,
        "hide": 0,
        "regex": "",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }
    if all_value is None:
        del out["allValue"]
    return out


def dashboard():
    return {
        "uid": UID,
        "title": "Gleaner",
        "description": (
            "Gleaner, the file collector: SLOs (deploy/slos.yaml), throughput, backlog and "
            "freshness, the watched volume, errors, file-system events, resources."
        ),
        "tags": ["gleaner", "slo"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "Runbooks",
                "type": "link",
                "icon": "doc",
                "tooltip": "What each Gleaner alert means and what to do",
                "url": RUNBOOKS,
                "tags": [],
                "asDropdown": False,
                "targetBlank": True,
                "includeVars": False,
                "keepTime": False,
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "name": "Restarts",
                    "datasource": DS,
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "expr": f"changes(process_start_time_seconds{{{SEL}}}[2m]) > 0",
                    "step": "60s",
                    "titleFormat": "gleaner restarted",
                    "tagKeys": "pod",
                    "textFormat": "{{pod}}",
                },
            ]
        },
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "refresh": 1,
                    "regex": "",
                    "hide": 0,
                },
                variable("cluster", "Cluster", "label_values(gleaner_build_info, cluster)"),
                variable("namespace", "Namespace", 'label_values(gleaner_build_info{cluster=~"$cluster"}, namespace)'),
                variable(
                    "job",
                    "Job",
                    'label_values(gleaner_build_info{cluster=~"$cluster", namespace=~"$namespace"}, job)',
                    all_value=None,
                ),
                variable(
                    "pod",
                    "Pod (source)",
                    'label_values(gleaner_build_info{cluster=~"$cluster", namespace=~"$namespace", job=~"$job"}, pod)',
                ),
            ]
        },
        "panels": layout(),
    }


def render():
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gleaner.json is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(
                "deploy/grafana/gleaner.json is not generated from generate_dashboard.py: "
                "run python3 deploy/grafana/generate_dashboard.py",
                file=sys.stderr,
            )
            return 1
        print("deploy/grafana/gleaner.json is up to date")
        return 0
    OUTPUT.write_text(text)
    print("wrote deploy/grafana/gleaner.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
