#!/usr/bin/env python3
"""Generates Gleaner's Prometheus rules and Alertmanager files from their definitions.

    python3 deploy/generate.py            # rewrite every generated file of deploy/ (below)
    python3 deploy/generate.py --check    # exit 1 if one of them differs (the tests run this)
    python3 deploy/generate.py --tuning my-tuning.yaml --out DIR
                                          # your rules: DIR/alerts.yaml and DIR/slo-rules.yaml
    python3 deploy/generate.py --chart-values my-values.yaml --out DIR
                                          # the rules the Helm chart renders for these values
    python3 deploy/generate.py --merge-alertmanager yours.yaml [--templates GLOB]
                                          # your Alertmanager configuration with Gleaner's part
                                          # merged in, on standard output

Definitions, written by hand: deploy/symptoms.yaml (the symptom alerts), deploy/slos.yaml (the
SLOs), deploy/tuning.yaml (what can be tuned, with its defaults), deploy/alertmanager/
gleaner-route.yaml (Gleaner's part of an Alertmanager configuration) and its Slack templates.

Generated:
  deploy/prometheus/alerts.yaml          the symptom alerts, tuned by deploy/tuning.yaml
  deploy/prometheus/slo-rules.yaml       the SLO rules (sloth's names), tuned likewise
  deploy/prometheus/rules-skeleton.json  both rule files with every tunable value left as a
                                         ${token}, plus the defaults and what may be tuned: the
                                         Helm chart renders its PrometheusRules from it
                                         (templates/prometheusrule.yaml applies the tuning the
                                         way apply() below does; tests/k8s checks that both
                                         give the same rules)
  deploy/alertmanager/alertmanager.yaml  a complete configuration: gleaner-route.yaml merged
                                         into a minimal one (the demo, the end-to-end test)
  deploy/alertmanager/alertmanagerconfig.yaml
                                         gleaner-route.yaml as the spec of a prometheus-operator
                                         AlertmanagerConfig, the Slack templates inlined (the
                                         chart renders it)

The SLO rules follow sloth (sloth_id, sloth_service, sloth_slo, sloth_window labels;
slo:sli_error:ratio_rate<W>, slo:objective:ratio, …) so that sloth- and pyrra-style dashboards
work, with multi-window multi-burn-rate alerts (SRE workbook, chapter 5). Only PyYAML is needed.
"""

import argparse
import copy
import json
import pathlib
import re
import sys
from decimal import Decimal

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SLO_SPEC = DEPLOY / "slos.yaml"
SYMPTOMS = DEPLOY / "symptoms.yaml"
TUNING = DEPLOY / "tuning.yaml"
AM_PART = DEPLOY / "alertmanager" / "gleaner-route.yaml"
AM_TEMPLATES = DEPLOY / "alertmanager" / "templates" / "slack.tmpl"
OUT_ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
OUT_SLOS = DEPLOY / "prometheus" / "slo-rules.yaml"
OUT_SKELETON = DEPLOY / "prometheus" / "rules-skeleton.json"
OUT_AM = DEPLOY / "alertmanager" / "alertmanager.yaml"
OUT_AMC = DEPLOY / "alertmanager" / "alertmanagerconfig.yaml"

DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Prometheus' durations (for:, keep_firing_for:), as prometheus-operator's schema takes them.
PROM_DURATION = re.compile(r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$")
# The collector's flags, as the chart takes them (values.schema.json).
FLAG_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h)$")
SEVERITIES = ("critical", "warning", "info")
TOKEN = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")


class TuningError(Exception):
    pass


def fail(message):
    raise TuningError(message)


def seconds(duration):
    match = DURATION.match(duration)
    if not match:
        sys.exit(f"not a duration: {duration!r}")
    return int(match.group(1)) * SECONDS[match.group(2)]


def flag_seconds(where, duration):
    """A collector flag's duration in whole seconds, rounded up (as the chart's gleaner.seconds)."""
    match = FLAG_DURATION.match(str(duration))
    if not match:
        fail(f"{where}: {duration!r} is not a duration like 500ms, 30s, 15m or 1h")
    n, unit = int(match.group(1)), match.group(2)
    return (n + 999) // 1000 if unit == "ms" else n * int(SECONDS[unit])


def number(value):
    """A number as PromQL reads it and Go's %v prints it (Helm's toString): shortest form, no
    binary noise (1 - 0.999 = 0.001), no trailing `.0`."""
    text = repr(round(float(value), 12))
    return text[:-2] if text.endswith(".0") else text


def decimal(value):
    return Decimal(repr(float(value))) if not isinstance(value, Decimal) else value


def camel(name):
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


def duration_text(secs):
    """7200 -> "2 h", 300 -> "5 min", 30 -> "30 s" (the chart writes the same)."""
    if secs % 3600 == 0:
        return f"{secs // 3600} h"
    if secs % 60 == 0:
        return f"{secs // 60} min"
    return f"{secs} s"


def promql_quote(text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


# --- SLOs ------------------------------------------------------------------------------------


class Spec:
    def __init__(self, data):
        self.service = data["service"]
        self.period = data["period"]
        self.by = data["by"]
        self.dashboard_uid = data["dashboard_uid"]
        self.alerting = data["alerting"]
        self.slos = data["slos"]
        for kind in ("page", "ticket"):
            for window in self.alerting[kind]["windows"]:
                if seconds(window["short"]) >= seconds(window["long"]):
                    sys.exit(f"{kind}: the short window must be shorter than the long one")
        names = [slo["name"] for slo in self.slos]
        if len(set(names)) != len(names):
            sys.exit("SLO names must be unique")
        self.page_factor = min(w["factor"] for w in self.alerting["page"]["windows"])

    def windows(self):
        """Every window an alert reads, shortest first."""
        found = {
            window[side]
            for kind in ("page", "ticket")
            for window in self.alerting[kind]["windows"]
            for side in ("short", "long")
        }
        return sorted(found, key=seconds)

    def long_windows(self):
        found = {window["long"] for kind in ("page", "ticket") for window in self.alerting[kind]["windows"]}
        return sorted(found, key=seconds)


def by_clause(spec):
    return f"sum by ({', '.join(spec.by)})"


def dashboard_url(spec):
    """The dashboard for the alert's namespace (and cluster, where the alert has one)."""
    return (
        f"${{grafanaUrl}}/d/{spec.dashboard_uid}/gleaner?var-namespace={{{{ $labels.namespace }}}}"
        "{{ with $labels.cluster }}&var-cluster={{ . }}{{ end }}"
    )


class Slo:
    """One SLO of slos.yaml, written with ${slo.<name>.…} tokens for what the tuning changes."""

    def __init__(self, spec, data):
        self.spec = spec
        self.name = data["name"]
        self.objective = float(data["objective"])
        if not 0 < self.objective < 100:
            sys.exit(f"{self.name}: objective must be a percentage between 0 and 100")
        self.sli = data["sli"]
        self.id = f"{spec.service}-{self.name}"
        self.min_events = data.get("min_events")
        self.record = data.get("record")
        self.affected = data.get("affected")
        self.latency = "histogram" in self.sli
        if "bad_while" in self.sli:
            self.kind = "time"
            if not self.record:
                sys.exit(f"{self.name}: a bad_while SLI needs `record`, the series it is kept in")
            if self.min_events is not None:
                sys.exit(f"{self.name}: min_events is for event SLIs only")
        elif self.latency or "errors" in self.sli:
            self.kind = "events"
            if self.min_events is None:
                sys.exit(f"{self.name}: an event SLI needs min_events (the traffic guard)")
            if self.latency and sorted(self.sli["buckets"]) != self.sli["buckets"]:
                sys.exit(f"{self.name}: buckets must be in increasing order")
        else:
            sys.exit(f"{self.name}: unknown SLI kind {sorted(self.sli)}")
        self.description = self.local(" ".join(data["description"].split()))

    def tok(self, name):
        return f"${{slo.{self.name}.{name}}}"

    def local(self, text):
        """The SLO's own shorthands: ${le} (the bucket matcher), ${target} (the target, in words)."""
        return text.replace("${le}", self.tok("le")).replace("${target}", self.tok("targetText"))

    def labels(self, window=None):
        labels = {"sloth_id": self.id, "sloth_service": self.spec.service, "sloth_slo": self.name}
        if window:
            labels["sloth_window"] = window
        return labels

    def selector(self):
        return f'{{sloth_id="{self.id}", sloth_service="{self.spec.service}", sloth_slo="{self.name}"}}'

    # Event SLIs -------------------------------------------------------------------------

    def counter(self, suffix):
        return f"{self.sli['histogram']}_{suffix}{{${{selector}}}}"

    def total_rate(self, window):
        total = self.counter("count") if self.latency else self.sli["total"]
        return f"{by_clause(self.spec)} (rate({total}[{window}]))"

    def total_increase(self, window):
        total = self.counter("count") if self.latency else self.sli["total"]
        return f"{by_clause(self.spec)} (increase({total}[{window}]))"

    def error_rate(self, window):
        if self.latency:
            # The bucket at the target, in both forms: Prometheus 2 stores `le` as the exporter
            # writes it ("7200"), Prometheus 3 as a float ("7200.0").
            bucket = f"{self.sli['histogram']}_bucket{{${{selector}}, {self.tok('le')}}}"
            return (
                "(\n"
                f"    {by_clause(self.spec)} (rate({self.counter('count')}[{window}]))\n"
                "  -\n"
                f"    {by_clause(self.spec)} (rate({bucket}[{window}]))\n"
                ")"
            )
        return f"{by_clause(self.spec)} (rate({self.sli['errors']}[{window}]))"

    # The rules --------------------------------------------------------------------------

    def sli_rules(self):
        rules = []
        if self.kind == "time":
            rules.append({"record": self.record, "expr": literal(self.sli["bad_while"])})
        else:
            rules.append({"record": "slo:sli_errors:rate5m", "expr": literal(self.error_rate("5m")),
                          "labels": self.labels("5m")})
            rules.append({"record": "slo:sli_events:rate5m", "expr": literal(self.total_rate("5m")),
                          "labels": self.labels("5m")})
        for window in self.spec.windows():
            if self.kind == "time":
                expr = f"avg by ({', '.join(self.spec.by)}) (avg_over_time({self.record}[{window}]))"
            elif window == "5m":
                sel = self.selector()
                expr = f"slo:sli_errors:rate5m{sel}\n/\n(slo:sli_events:rate5m{sel} > 0)"
            else:
                expr = f"{self.error_rate(window)}\n/\n({self.total_rate(window)} > 0)"
            rules.append({"record": f"slo:sli_error:ratio_rate{window}", "expr": literal(expr),
                          "labels": self.labels(window)})
        if self.kind == "events":
            for window in self.spec.long_windows():
                rules.append({"record": f"slo:sli_events:increase{window}",
                              "expr": literal(self.total_increase(window)), "labels": self.labels(window)})
        return rules

    def period_rules(self):
        period, sel = self.spec.period, self.selector()
        if self.kind == "time":
            expr = (
                f"sum_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])\n"
                f"/ ignoring (sloth_window)\n"
                f"count_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])"
            )
        else:
            expr = (
                f"sum_over_time(slo:sli_errors:rate5m{sel}[{period}])\n"
                f"/\n"
                f"(sum_over_time(slo:sli_events:rate5m{sel}[{period}]) > 0)"
            )
        return [{"record": f"slo:sli_error:ratio_rate{period}", "expr": literal(expr), "labels": self.labels(period)}]

    def meta_rules(self):
        sel, period = self.selector(), self.spec.period
        on = "on (sloth_id, sloth_slo, sloth_service) group_left"
        rules = [
            {"record": "slo:objective:ratio", "expr": f"vector({self.tok('ratio')})", "labels": self.labels()},
            {"record": "slo:error_budget:ratio", "expr": f"vector(1 - {self.tok('ratio')})", "labels": self.labels()},
            {"record": "slo:time_period:days", "expr": f"vector({seconds(period) // 86400})", "labels": self.labels()},
            {"record": "slo:current_burn_rate:ratio",
             "expr": literal(f"slo:sli_error:ratio_rate5m{sel}\n/ {on}\nslo:error_budget:ratio{sel}"),
             "labels": self.labels()},
            {"record": "slo:period_burn_rate:ratio",
             "expr": literal(f"slo:sli_error:ratio_rate{period}{sel}\n/ {on}\nslo:error_budget:ratio{sel}"),
             "labels": self.labels()},
            {"record": "slo:period_error_budget_remaining:ratio",
             "expr": f"1 - slo:period_burn_rate:ratio{sel}", "labels": self.labels()},
            {"record": "sloth_slo_info", "expr": "vector(1)",
             "labels": {**self.labels(), "sloth_mode": "generated", "sloth_spec": "deploy/slos.yaml",
                        "sloth_objective": self.tok("objective")}},
        ]
        if self.latency:
            # The latency target, for the dashboard's commit-delay panel.
            rules.append({"record": "gleaner:slo_latency_target:seconds",
                          "expr": f"vector({self.tok('target')})", "labels": self.labels()})
        return rules

    def affected_template(self):
        """The collectors behind the burn, listed in the alert's description (at most 20)."""
        if not self.affected:
            return ""
        query = " ".join(self.local(self.affected).split())
        return (
            f"{{{{ with printf `{query}` $labels.namespace $labels.cluster | query | sortByLabel \"pod\" }}}}"
            " Sources affected now ({{ len . }}): {{ range $i, $s := . }}{{ if lt $i 20 }}"
            "{{ if $i }}, {{ end }}{{ or $s.Labels.source_id $s.Labels.pod $s.Labels.instance }}"
            "{{ end }}{{ end }}{{ if gt (len .) 20 }}, …{{ end }}.{{ end }}"
        )

    def alert(self, kind):
        config = self.spec.alerting[kind]
        pairs = []
        sel = f'{{sloth_id="{self.id}"}}'
        for window in config["windows"]:
            threshold = f"({number(window['factor'])} * {self.tok('budget')})"
            terms = [
                f"max without (sloth_window) (slo:sli_error:ratio_rate{window['short']}{sel} > {threshold})",
                f"max without (sloth_window) (slo:sli_error:ratio_rate{window['long']}{sel} > {threshold})",
            ]
            if self.kind == "events":
                terms.append(f"max without (sloth_window) (slo:sli_events:increase{window['long']}{sel} >= {self.min_events})")
            pairs.append("(\n    " + "\n  and\n    ".join(terms) + "\n)")
        name = f"Gleaner{camel(self.name)}{'FastBurn' if kind == 'page' else 'SlowBurn'}"
        windows = ", or ".join(f"{number(w['factor'])}x over {w['long']} and {w['short']}" for w in config["windows"])
        guard = (f" Evaluated only with at least {self.min_events} events in the long window."
                 if self.kind == "events" else "")
        where = "{{ with $labels.namespace }} in namespace {{ . }}{{ end }}"
        speed = "fast" if kind == "page" else "steadily"
        affected = self.affected_template()
        return {
            "alert": name,
            "expr": literal("\nor\n".join(pairs)),
            "labels": {"severity": config["severity"], "sloth_severity": kind},
            "annotations": {
                "summary": f"Gleaner SLO {self.name} is burning its error budget {speed}{where}",
                "description": (
                    f"{self.description} Objective: {self.tok('objective')}% over "
                    f"{self.spec.period}, an error budget of {self.tok('budgetPercent')}%. "
                    f"Error ratio over the short window: {{{{ $value | humanizePercentage }}}}. "
                    f"Fires when the error ratio exceeds the budget {windows}.{guard}"
                    + affected
                ),
                "runbook_url": f"${{runbookBaseUrl}}#{name.lower()}",
                "dashboard_url": dashboard_url(self.spec),
            },
        }

    def groups(self):
        return [
            {"name": f"sloth-slo-sli-recordings-{self.id}", "rules": self.sli_rules()},
            {"name": f"sloth-slo-period-recordings-{self.id}", "interval": "1m", "rules": self.period_rules()},
            {"name": f"sloth-slo-meta-recordings-{self.id}", "rules": self.meta_rules()},
            {"name": f"sloth-slo-alerts-{self.id}", "rules": [self.alert("page"), self.alert("ticket")]},
        ]


# --- Symptom alerts --------------------------------------------------------------------------

WHO = ("Gleaner {{ with $labels.namespace }}{{ . }}/{{ end }}"
       "{{ with $labels.pod }}{{ . }}{{ else }}{{ $labels.instance }}{{ end }}")


def symptom_groups(spec):
    """symptoms.yaml's groups, with ${who} expanded, ${param.X} as ${alert.<name>.X}, and the
    runbook and dashboard links; and {alert: params}, {alert: comment}."""
    data = yaml.safe_load(SYMPTOMS.read_text())
    params, comments, groups = {}, {}, []
    for group in data["groups"]:
        rules = []
        for source in group["rules"]:
            rule = copy.deepcopy(source)
            name = rule["alert"]
            params[name] = rule.pop("params", {})
            comment = rule.pop("comment", None)
            if comment:
                comments[name] = " ".join(comment.split())

            def expand(text, name=name):
                text = text.replace("${who}", WHO).replace("${param.", f"${{alert.{name}.")
                if text.endswith("\n") or "\n" in text.strip():
                    return literal(text)
                return text

            rule["expr"] = expand(rule["expr"])
            rule["annotations"] = {k: " ".join(v.split()) if "\n" not in v.strip() else v
                                   for k, v in rule["annotations"].items()}
            rule["annotations"] = {k: expand(v) for k, v in rule["annotations"].items()}
            rule["annotations"]["runbook_url"] = f"${{runbookBaseUrl}}#{name.lower()}"
            rule["annotations"]["dashboard_url"] = dashboard_url(spec)
            ordered = {key: rule[key] for key in ("alert", "expr", "for", "keep_firing_for", "labels", "annotations")
                       if key in rule}
            rules.append(ordered)
        groups.append({"name": group["name"], "rules": rules})
    return groups, params, comments


# --- The skeleton: both rule files with tokens, the defaults, what may be tuned ---------------


def skeleton():
    spec = Spec(yaml.safe_load(SLO_SPEC.read_text()))
    slos = [Slo(spec, data) for data in spec.slos]
    alert_groups, params, comments = symptom_groups(spec)
    slo_groups = [group for slo in slos for group in slo.groups()]
    alerts = {name: {"params": p} for name, p in params.items()}
    for slo in slos:
        for kind in ("page", "ticket"):
            alerts[slo.alert(kind)["alert"]] = {"params": {}}
    latency = [slo for slo in slos if slo.latency]
    if len(latency) != 1:
        sys.exit("exactly one SLO must be a latency (histogram) SLO: the file-freshness target")
    return {
        "about": "Generated by deploy/generate.py from deploy/symptoms.yaml, slos.yaml and tuning.yaml: "
                 "do not edit. The Helm chart renders its PrometheusRules from it.",
        "defaults": yaml.safe_load(TUNING.read_text()),
        "buckets": latency[0].sli["buckets"],
        "pageFactor": spec.page_factor,
        "alerts": alerts,
        "slos": {slo.name: {"objective": slo.objective, "minEvents": slo.min_events, "latency": slo.latency}
                 for slo in slos},
        "files": {"alerts": {"groups": alert_groups}, "slos": {"groups": slo_groups}},
        "_comments": comments,
    }


# --- Tuning ----------------------------------------------------------------------------------

TUNING_KEYS = {"ruleLabels", "ruleAnnotations", "runbookBaseUrl", "grafanaUrl", "selector", "collector",
               "alerts", "slos"}
ALERT_KEYS = {"enabled", "for", "keepFiringFor", "severity", "labels", "annotations", "params"}


def set_value(value):
    return value is not None and value != ""


def merged(defaults, override):
    """override over defaults; maps merge; an empty string or null keeps the default (as Helm's
    mergeOverwrite does)."""
    out = copy.deepcopy(defaults)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        elif set_value(value):
            out[key] = copy.deepcopy(value)
        elif key not in out:
            out[key] = copy.deepcopy(value)
    return out


def string_map(where, value):
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        fail(f"{where}: a map of strings to strings")


def effective(skel, tuning):
    """The tuning over the defaults, checked: what apply() uses."""
    tuning = tuning or {}
    unknown = set(tuning) - TUNING_KEYS
    if unknown:
        fail(f"unknown tuning keys {sorted(unknown)} (known: {sorted(TUNING_KEYS)})")
    eff = merged(skel["defaults"], tuning)
    for key in ("ruleLabels", "ruleAnnotations"):
        string_map(key, eff[key])
    if "severity" in eff["ruleLabels"]:
        fail("ruleLabels: severity is set per alert (alerts.<name>.severity)")
    if not isinstance(eff["selector"].get("job"), str) or not eff["selector"]["job"]:
        fail("selector.job: a regular expression for Gleaner's scrape jobs")
    if set(eff["selector"]) - {"job", "namespace"} or set(eff["collector"]) - {"interval", "minAge"}:
        fail("selector takes job and namespace; collector takes interval and minAge")
    for name, alert in eff["alerts"].items():
        where = f"alerts.{name}"
        if name not in skel["alerts"]:
            fail(f"{where}: no such alert (known: {', '.join(sorted(skel['alerts']))})")
        if not isinstance(alert, dict):
            fail(f"{where}: a map of {sorted(ALERT_KEYS)}")
        if set(alert) - ALERT_KEYS:
            fail(f"{where}: unknown keys {sorted(set(alert) - ALERT_KEYS)} (known: {sorted(ALERT_KEYS)})")
        if "enabled" in alert and not isinstance(alert["enabled"], bool):
            fail(f"{where}.enabled: true or false")
        for key in ("for", "keepFiringFor"):
            if set_value(alert.get(key)) and not PROM_DURATION.match(str(alert[key])):
                fail(f"{where}.{key}: {alert[key]!r} is not a duration like 30s, 15m or 1h")
        if set_value(alert.get("severity")) and alert["severity"] not in SEVERITIES:
            fail(f"{where}.severity: {alert['severity']!r} is not one of {', '.join(SEVERITIES)}")
        for key in ("labels", "annotations"):
            if key in alert:
                string_map(f"{where}.{key}", alert[key])
        if "severity" in alert.get("labels", {}):
            fail(f"{where}.labels: severity is set with {where}.severity")
        known = skel["alerts"][name]["params"]
        for param, value in (alert.get("params") or {}).items():
            if param not in known:
                fail(f"{where}.params.{param}: no such parameter"
                     + (f" (known: {', '.join(sorted(known))})" if known else f" ({name} has none)"))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail(f"{where}.params.{param}: a number")
    for name, slo in eff["slos"].items():
        where = f"slos.{name}"
        if name not in skel["slos"]:
            fail(f"{where}: no such SLO (known: {', '.join(sorted(skel['slos']))})")
        if not isinstance(slo, dict) or set(slo) - {"objective", "target"}:
            fail(f"{where}: takes objective and target")
        if set_value(slo.get("objective")):
            objective = slo["objective"]
            if isinstance(objective, bool) or not isinstance(objective, (int, float)) or not 0 < objective < 100:
                fail(f"{where}.objective: {objective!r} is not a percentage between 0 and 100")
        if set_value(slo.get("target")):
            if not skel["slos"][name]["latency"]:
                fail(f"{where}.target: only the latency SLO has a target")
            if slo["target"] not in skel["buckets"]:
                fail(f"{where}.target: {slo['target']!r} is not a bucket of gleaner_commit_delay_seconds "
                     f"({', '.join(number(b) for b in skel['buckets'])})")
    return eff


def target_seconds(skel, eff, name):
    """The latency target: slos.<name>.target, else the smallest bucket at or above
    collector.interval + collector.minAge."""
    given = eff["slos"].get(name, {}).get("target")
    if set_value(given):
        return int(given)
    need = (flag_seconds("collector.interval", eff["collector"]["interval"])
            + flag_seconds("collector.minAge", eff["collector"]["minAge"]))
    for bucket in skel["buckets"]:
        if bucket >= need:
            return int(bucket)
    fail(f"collector.interval + collector.minAge is {need} s, beyond the largest bucket "
         f"({number(skel['buckets'][-1])} s): set slos.{name}.target")


def tokens(skel, eff):
    job = promql_quote(eff["selector"]["job"])
    selector = f'job=~"{job}"'
    if eff["selector"].get("namespace"):
        selector += f', namespace=~"{promql_quote(eff["selector"]["namespace"])}"'
    out = {
        "selector": selector,
        "runbookBaseUrl": eff["runbookBaseUrl"],
        "grafanaUrl": eff["grafanaUrl"].removesuffix("/"),
    }
    for name, alert in skel["alerts"].items():
        for param, default in alert["params"].items():
            value = eff["alerts"].get(name, {}).get("params", {}).get(param, default)
            out[f"alert.{name}.{param}"] = number(value)
    for name, slo in skel["slos"].items():
        objective = eff["slos"].get(name, {}).get("objective")
        objective = decimal(objective if set_value(objective) else slo["objective"])
        ratio = objective / 100
        budget = 1 - ratio
        if slo["minEvents"] is not None and slo["minEvents"] * decimal(skel["pageFactor"]) * budget < 1:
            fail(f"slos.{name}.objective {number(objective)}: its traffic guard ({slo['minEvents']} events) "
                 f"would let a single bad event page ({slo['minEvents']} x {number(skel['pageFactor'])} x "
                 f"{number(budget)} < 1)")
        out[f"slo.{name}.objective"] = number(objective)
        out[f"slo.{name}.ratio"] = number(ratio)
        out[f"slo.{name}.budget"] = number(budget)
        out[f"slo.{name}.budgetPercent"] = number(100 - objective)
        if slo["latency"]:
            target = target_seconds(skel, eff, name)
            out[f"slo.{name}.target"] = str(target)
            out[f"slo.{name}.targetText"] = duration_text(target)
            out[f"slo.{name}.le"] = f'le=~"{target}(\\\\.0)?"'
    return out


def substitute(value, toks):
    if isinstance(value, str):
        def one(match):
            if match.group(1) not in toks:
                sys.exit(f"unknown token ${{{match.group(1)}}} in {value!r}")
            return toks[match.group(1)]
        text = TOKEN.sub(one, value)
        return literal(text) if isinstance(value, Literal) else text
    if isinstance(value, dict):
        return {k: substitute(v, toks) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, toks) for v in value]
    return value


def apply(skel, tuning):
    """The rule files for a tuning: {"alerts": {"groups": …}, "slos": {"groups": …}}. The chart's
    templates/prometheusrule.yaml does the same, step for step."""
    eff = effective(skel, tuning)
    toks = tokens(skel, eff)
    out = {}
    for file, doc in skel["files"].items():
        groups = []
        for group in doc["groups"]:
            rules = []
            for source in group["rules"]:
                rule = copy.deepcopy(source)
                if "alert" in rule:
                    tune = eff["alerts"].get(rule["alert"], {})
                    if tune.get("enabled") is False:
                        continue
                    if set_value(tune.get("for")):
                        rule["for"] = tune["for"]
                    if set_value(tune.get("keepFiringFor")):
                        rule["keep_firing_for"] = tune["keepFiringFor"]
                    labels = {**rule.get("labels", {}), **eff["ruleLabels"], **tune.get("labels", {})}
                    if set_value(tune.get("severity")):
                        labels["severity"] = tune["severity"]
                    rule["labels"] = labels
                    rule["annotations"] = {**rule.get("annotations", {}), **eff["ruleAnnotations"],
                                           **tune.get("annotations", {})}
                    rule = {key: rule[key] for key in ("alert", "expr", "for", "keep_firing_for", "labels", "annotations")
                            if key in rule}
                rules.append(substitute(rule, toks))
            if rules:
                groups.append({**{k: v for k, v in group.items() if k != "rules"}, "rules": rules})
        out[file] = {"groups": groups}
    return out


def chart_tuning(values):
    """The tuning the Helm chart applies for its values (a chart's merged values): the keys of
    prometheusRule that are tuning keys, and collector from run.interval and run.minAge."""
    rule = values.get("prometheusRule", {})
    tuning = {key: copy.deepcopy(rule[key]) for key in TUNING_KEYS if key in rule}
    tuning["collector"] = {"interval": values["run"]["interval"], "minAge": values["run"]["minAge"]}
    return tuning


# --- Writing the rule files ------------------------------------------------------------------


class Literal(str):
    """A string written as a YAML block scalar."""


def literal(text):
    return Literal(text.strip("\n") + "\n")


class Dumper(yaml.SafeDumper):
    pass


Dumper.add_representer(
    Literal, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
)


def represent_str(dumper, text):
    # Long one-line strings (descriptions) folded at the dump's width, as they are written by hand.
    if len(text) > 96 and "\n" not in text and text == text.strip():
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=">")
    return dumper.represent_scalar("tag:yaml.org,2002:str", text)


Dumper.add_representer(str, represent_str)


class BlockDumper(yaml.SafeDumper):
    """Alertmanager files: lists indented under their key, multi-line strings (templates) as
    literal blocks, nothing folded."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def dump_block(data):
    return yaml.dump(data, Dumper=BlockDumper, sort_keys=False, width=1000, allow_unicode=True)


def dump(data, width=1000):
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=width, allow_unicode=True)


def wrap(text, width, prefix):
    lines, line = [], ""
    for word in text.split():
        if line and len(prefix) + len(line) + 1 + len(word) > width:
            lines.append(prefix + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(prefix + line)
    return lines


ALERTS_HEADER = """\
# GENERATED by deploy/generate.py from deploy/symptoms.yaml and {tuning}: do not edit by hand.
# Gleaner's symptom alerts, one per incident an operator must act on, per collector; the SLO
# burn-rate alerts are in slo-rules.yaml. Change the definitions in deploy/symptoms.yaml, or tune
# them (labels, thresholds, for:, severity, disabled alerts, the job selector, the runbooks'
# address) in a copy of deploy/tuning.yaml, and run deploy/generate.py; the tests fail while this
# file and its sources differ.
"""

SLOS_HEADER = """\
# GENERATED by deploy/generate.py from deploy/slos.yaml and {tuning}: do not edit by hand.
# Change deploy/slos.yaml, or tune the objectives and the file-freshness target in a copy of
# deploy/tuning.yaml, and run deploy/generate.py; the tests fail while this file and its sources
# differ.
"""


def render_alerts(rules, comments, tuning_name):
    out = [ALERTS_HEADER.format(tuning=tuning_name), "groups:\n"]
    for group in rules["groups"]:
        out.append(f"  - name: {group['name']}\n    rules:\n")
        for i, rule in enumerate(group["rules"]):
            if i:
                out.append("\n")
            comment = comments.get(rule.get("alert"))
            if comment:
                out.extend(line + "\n" for line in wrap(comment, 100, "      # "))
            text = dump([rule], width=100)
            out.append("".join("      " + line if line.strip() else line for line in text.splitlines(True)))
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


def render_slos(rules, tuning_name):
    return SLOS_HEADER.format(tuning=tuning_name) + dump(rules)


def render_skeleton(skel):
    public = {k: v for k, v in skel.items() if not k.startswith("_")}
    return json.dumps(public, indent=1, ensure_ascii=False) + "\n"


# --- Alertmanager ----------------------------------------------------------------------------

EXAMPLE_BASE = {
    "global": {"resolve_timeout": "5m"},
    "route": {"receiver": "default", "group_by": ["alertname", "cluster", "namespace"], "routes": []},
    "receivers": [{"name": "default"}],
}

AM_HEADER = """\
# GENERATED by deploy/generate.py: do not edit by hand. A complete Alertmanager configuration for
# the demo and the end-to-end test: Gleaner's part (deploy/alertmanager/gleaner-route.yaml, where
# its routes, receivers and inhibition rules are explained) merged into a minimal configuration
# whose root route sends every other alert to `default`, a receiver that notifies no one. With
# your own configuration, merge the part into it instead:
#
#   python3 deploy/generate.py --merge-alertmanager your-alertmanager.yaml > merged.yaml
#
# Checked by tests/observability/run.sh: amtool check-config, amtool config routes test (each
# severity of Gleaner's alerts, and other alerts such as Watchdog, which reach none of Gleaner's
# receivers), the templates rendered by amtool, and an end-to-end run in which a real
# Alertmanager with this configuration posts to a Slack webhook stand-in on 127.0.0.1.
"""

AMC_HEADER = """\
# GENERATED by deploy/generate.py from deploy/alertmanager/gleaner-route.yaml and its Slack
# templates: do not edit by hand. The spec of a prometheus-operator AlertmanagerConfig
# (monitoring.coreos.com/v1alpha1) with the same routes, receivers and inhibition rules; the
# templates are inlined (an AlertmanagerConfig cannot load template files) and the webhook URLs
# are read from a Secret (its name and keys are the defaults; the Helm chart's
# alertmanagerConfig values set them). prometheus-operator adds a namespace="<its namespace>"
# matcher to the route: deploy one in each namespace whose Gleaner alerts it should route.
"""

MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$')


def merge_alertmanager(config, part, templates):
    """Gleaner's part merged into an Alertmanager configuration: its route first among the root's
    child routes (before any catch-all), its receivers and inhibition rules added, its templates
    loaded."""
    config = copy.deepcopy(config)
    if "route" not in config:
        sys.exit("the configuration has no route")
    names = {r["name"] for r in config.get("receivers", [])}
    clash = names & {r["name"] for r in part["receivers"]}
    if clash:
        sys.exit(f"the configuration already has receivers {sorted(clash)}")
    config["route"].setdefault("routes", []).insert(0, copy.deepcopy(part["route"]))
    config.setdefault("receivers", []).extend(copy.deepcopy(part["receivers"]))
    config.setdefault("inhibit_rules", []).extend(copy.deepcopy(part["inhibit_rules"]))
    if templates not in config.get("templates", []):
        config.setdefault("templates", []).append(templates)
    order = ["global", "templates", "route", "receivers", "inhibit_rules"]
    return {key: config[key] for key in order if key in config} | {k: v for k, v in config.items() if k not in order}


def slack_templates():
    """{name: body} of the `define`s of slack.tmpl (each ends at a line `{{- end }}`)."""
    text = AM_TEMPLATES.read_text()
    found = dict(re.findall(r'^\{\{ define "([^"]+)" -\}\}\n(.*?)\n\{\{- end \}\}$', text, re.M | re.S))
    if not found:
        sys.exit(f"no template defined in {AM_TEMPLATES}")
    return found


def inline(text, defines):
    """A template field with every {{ template "gleaner.…" X }} replaced by its body, run with X as
    the dot ({{ with X }}…{{ end }}; the bodies are trimmed as their -}} and {{- trim them)."""
    call = re.compile(r'\{\{ template "([^"]+)" ([^}]+?) \}\}')
    for _ in range(10):
        def one(match):
            body = defines[match.group(1)].strip()
            arg = match.group(2)
            return body if arg == "." else f"{{{{ with {arg} }}}}{body}{{{{ end }}}}"
        new = call.sub(one, text)
        if new == text:
            return text
        text = new
    sys.exit("template calls nested too deep")


def crd_matchers(matchers):
    out = []
    for matcher in matchers:
        m = MATCHER.match(matcher)
        if not m:
            sys.exit(f"matcher {matcher!r}: write it as name=\"value\" (=, !=, =~, !~)")
        matcher = {"name": m.group(1), "value": m.group(3).replace('\\"', '"').replace("\\\\", "\\")}
        # "=" is the default (and a bare `=` reads as YAML 1.1's value tag to some parsers).
        if m.group(2) != "=":
            matcher["matchType"] = m.group(2)
        out.append(matcher)
    return out


def crd_route(route):
    keys = {"receiver": "receiver", "group_by": "groupBy", "group_wait": "groupWait",
            "group_interval": "groupInterval", "repeat_interval": "repeatInterval", "continue": "continue"}
    out = {}
    for key, value in route.items():
        if key in keys:
            out[keys[key]] = value
        elif key == "matchers":
            out["matchers"] = crd_matchers(value)
        elif key == "routes":
            out["routes"] = [crd_route(child) for child in value]
        else:
            sys.exit(f"route key {key!r}: no AlertmanagerConfig counterpart known to the generator")
    return out


def crd_spec(part):
    defines = slack_templates()
    keys = {"send_resolved": "sendResolved", "username": "username", "icon_emoji": "iconEmoji",
            "color": "color", "title": "title", "title_link": "titleLink", "text": "text",
            "fallback": "fallback", "footer": "footer", "mrkdwn_in": "mrkdwnIn", "channel": "channel"}
    receivers = []
    for receiver in part["receivers"]:
        out = {"name": receiver["name"]}
        for slack in receiver.get("slack_configs", []):
            config = {}
            path = pathlib.PurePosixPath(slack["api_url_file"])
            config["apiURL"] = {"name": path.parent.name, "key": path.name}
            for key, value in slack.items():
                if key == "api_url_file":
                    continue
                if key == "actions":
                    config["actions"] = [{k: inline(v, defines) if isinstance(v, str) else v for k, v in a.items()}
                                         for a in value]
                elif key in keys:
                    config[keys[key]] = inline(value, defines) if isinstance(value, str) else value
                else:
                    sys.exit(f"slack_configs key {key!r}: no AlertmanagerConfig counterpart known to the generator")
            out.setdefault("slackConfigs", []).append(config)
        if set(receiver) - {"name", "slack_configs"}:
            sys.exit(f"receiver {receiver['name']}: only Slack receivers are converted")
        receivers.append(out)
    inhibit = [
        {"sourceMatch": crd_matchers(rule["source_matchers"]), "targetMatch": crd_matchers(rule["target_matchers"]),
         "equal": rule["equal"]}
        for rule in part["inhibit_rules"]
    ]
    return {"route": crd_route(part["route"]), "receivers": receivers, "inhibitRules": inhibit}


# --- Main ------------------------------------------------------------------------------------


def outputs():
    """{path: text} of every generated file."""
    skel = skeleton()
    rules = apply(skel, yaml.safe_load(TUNING.read_text()))
    files = {
        OUT_ALERTS: render_alerts(rules["alerts"], skel["_comments"], "deploy/tuning.yaml"),
        OUT_SLOS: render_slos(rules["slos"], "deploy/tuning.yaml"),
        OUT_SKELETON: render_skeleton(skel),
    }
    if AM_PART.exists():
        part = yaml.safe_load(AM_PART.read_text())
        files[OUT_AM] = AM_HEADER + dump_block(merge_alertmanager(EXAMPLE_BASE, part, "templates/*.tmpl"))
        files[OUT_AMC] = AMC_HEADER + dump_block(crd_spec(part))
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    parser.add_argument("--tuning", help="a tuning file (keys of deploy/tuning.yaml; others keep their default)")
    parser.add_argument("--chart-values", help="a values file of the Helm chart (over helm/gleaner/values.yaml): "
                        "the tuning the chart applies for it")
    parser.add_argument("--out", help="with --tuning or --chart-values: write alerts.yaml and slo-rules.yaml here")
    parser.add_argument("--merge-alertmanager", metavar="CONFIG",
                        help="print CONFIG with Gleaner's part (deploy/alertmanager/gleaner-route.yaml) merged in")
    parser.add_argument("--templates", default="templates/*.tmpl",
                        help="with --merge-alertmanager: where your Alertmanager finds slack.tmpl")
    args = parser.parse_args()
    try:
        if args.merge_alertmanager:
            config = yaml.safe_load(pathlib.Path(args.merge_alertmanager).read_text())
            part = yaml.safe_load(AM_PART.read_text())
            sys.stdout.write(dump_block(merge_alertmanager(config, part, args.templates)))
            return 0
        if args.tuning or args.chart_values or args.out:
            if not ((args.tuning or args.chart_values) and args.out):
                parser.error("--out goes with --tuning or --chart-values")
            skel = skeleton()
            if args.chart_values:
                values = merged(yaml.safe_load((ROOT / "helm" / "gleaner" / "values.yaml").read_text()),
                                yaml.safe_load(pathlib.Path(args.chart_values).read_text()) or {})
                tuning = chart_tuning(values)
                args.tuning = f"the chart values {args.chart_values}"
            else:
                tuning = yaml.safe_load(pathlib.Path(args.tuning).read_text()) or {}
            rules = apply(skel, tuning)
            out = pathlib.Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "alerts.yaml").write_text(render_alerts(rules["alerts"], skel["_comments"], args.tuning))
            (out / "slo-rules.yaml").write_text(render_slos(rules["slos"], args.tuning))
            print(f"wrote {out / 'alerts.yaml'} and {out / 'slo-rules.yaml'}")
            return 0
        stale = []
        for path, text in outputs().items():
            name = path.relative_to(ROOT)
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(name))
            elif not path.exists() or path.read_text() != text:
                path.write_text(text)
                print(f"wrote {name}")
        if stale:
            print(f"not generated from their sources: {', '.join(stale)}: run python3 deploy/generate.py",
                  file=sys.stderr)
            return 1
        if args.check:
            print("deploy/: every generated file is up to date")
        return 0
    except TuningError as e:
        print(f"tuning: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
