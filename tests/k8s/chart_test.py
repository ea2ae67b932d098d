"""Checks of the Helm chart helm/gleaner with real tools, no cluster:

  metadata      Chart.yaml as documented; the image tag in values equals appVersion
  chart-files   helm/gleaner/files/ holds byte-identical copies of the deploy/ files the templates
                read (.Files.Get "files/X" is deploy/X), none missing, none left over;
                UPDATE_GOLDEN=1 runs tests/k8s/sync_chart_files.sh first
  lint          real Helm (helm-python-sdk) lints the chart strictly, with every example values
                file and the parent chart helm/examples/my-app (its file:// dependency built)
  golden        every rendering equals its golden file in tests/k8s/golden (manifests and NOTES);
                UPDATE_GOLDEN=1 rewrites them
  validate      every rendered object validates with kubernetes-validate (strict) for every Kubernetes
                minor version from 1.29.0 to the newest it knows, classic renderings also for 1.27.0; a native
                rendering must fail on 1.27.0 (a control that the validator sees the sidecar)
  prometheus-operator
                every PodMonitor and PrometheusRule validates against the prometheus-operator
                models (npm), with a control of each kind that an invalid one fails
  observability the PrometheusRules carry deploy/prometheus/alerts.yaml and slo-rules.yaml verbatim
                (line for line under `spec`; parsed, `spec` equals the file, so its groups are the
                file's groups), with prometheusRule.grafanaUrl in place of the placeholder host
                in every dashboard link and nowhere else; the dashboard ConfigMap's gleaner.json
                is deploy/grafana/gleaner.json byte for byte, with the grafana_dashboard label
  job-names     every PodMonitor's scrape job (<namespace>/<name>, as prometheus-operator names
                it) matches every job=~"…" selector of the rule files, also with nameOverride,
                fullnameOverride and a parent chart's alias; its source_id relabeling follows
                run.sourceId
  capacity      every rendered Gleaner container passes --watch-capacity: in sidecar modes the bytes of
                its Pod's emptyDir sizeLimit (read as Kubernetes reads a quantity, for sizes in
                every unit the schema allows), in cronjob mode cronjob.watchCapacity, absent when
                empty; --min-free stays sidecar.minFreePercent of the sizeLimit
  bad-values    a table of wrong values, each failing the render with its own message
  schema        values.schema.json rejects unknown keys at every level and lists exactly the keys of
                values.yaml; every value has a comment
  values-table  the values table in helm/gleaner/README.md is the one generated from values.yaml
                and the schema (UPDATE_GOLDEN=1 rewrites it)
  snippets      every YAML snippet of README.md's "Run it in Kubernetes" section and of the chart's
                README is part of a file these tests render; every `-f` file is a tested example;
                every public named template is documented

Prints one line per check and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from common import CHART, GOLDEN, PARENT, ROOT  # noqa: E402

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NPM_DIR = os.environ.get("K8S_NPM_DIR", os.path.join(ROOT, ".tools", "npm-k8s"))
# Every minor version from 1.29 (the first with native sidecars on by default) to the newest the
# validator knows.
VALIDATE_VERSIONS = [f"1.{m}.0" for m in range(29, int(kv_utils.latest_version().split(".")[1]) + 1)]
CLASSIC_ALSO = "1.27.0"

results: list[tuple[str, bool, str]] = []


def check(name):
    def wrap(fn):
        def run():
            try:
                detail = fn() or ""
                results.append((name, True, detail))
                print(f"ok    {name}  {detail}", flush=True)
            except AssertionError as e:
                results.append((name, False, str(e)))
                print(f"FAIL  {name}\n{indent(str(e))}", flush=True)
            except Exception:  # a crash of the check is a failure too, with its trace
                results.append((name, False, traceback.format_exc()))
                print(f"FAIL  {name}\n{indent(traceback.format_exc())}", flush=True)
        run.__name__ = fn.__name__
        CHECKS.append(run)
        return run
    return wrap


CHECKS: list = []


def indent(text: str) -> str:
    return "\n".join("      " + line for line in text.rstrip().splitlines())


# --------------------------------------------------------------------------------------------
@check("metadata")
def metadata():
    chart = common.load_yaml(os.path.join(CHART, "Chart.yaml"))
    expected = {"apiVersion": "v2", "name": "gleaner", "type": "application", "version": "0.1.0",
                "appVersion": "0.1.0"}
    for key, value in expected.items():
        assert chart.get(key) == value, f"Chart.yaml {key} is {chart.get(key)!r}, expected {value!r}"
    values = common.load_yaml(os.path.join(CHART, "values.yaml"))
    assert values["image"]["tag"] == chart["appVersion"], (
        f"values.yaml image.tag {values['image']['tag']!r} differs from appVersion {chart['appVersion']!r}")
    assert values["image"]["repository"] == common.IMAGE_REPOSITORY
    parent = common.load_yaml(os.path.join(PARENT, "Chart.yaml"))
    dep = parent["dependencies"][0]
    assert dep["name"] == "gleaner" and dep["version"] == chart["version"], dep
    assert dep["repository"] == "file://../../gleaner", dep
    return f"gleaner {chart['version']} (app {chart['appVersion']})"


# --------------------------------------------------------------------------------------------
DEPLOY = os.path.join(ROOT, "deploy")
CHART_FILES = os.path.join(CHART, "files")
SYNC = os.path.join(ROOT, "tests", "k8s", "sync_chart_files.sh")


def chart_file_paths() -> set[str]:
    """The files/… paths the templates read, relative to files/ (and to deploy/)."""
    paths = set()
    for template in glob.glob(os.path.join(CHART, "templates", "*")):
        paths |= set(re.findall(r'"files/([^" ]+)"', open(template, encoding="utf-8").read()))
    return paths


@check("chart-files")
def chart_files():
    if UPDATE:
        proc = subprocess.run([SYNC], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    wanted = chart_file_paths()
    assert wanted, "no template reads a files/… path"
    present = {os.path.relpath(os.path.join(d, f), CHART_FILES)
               for d, _, files in os.walk(CHART_FILES) for f in files}
    problems = []
    for path in sorted(wanted | present):
        source, copy = os.path.join(DEPLOY, path), os.path.join(CHART_FILES, path)
        if path not in wanted:
            problems.append(f"helm/gleaner/files/{path} is read by no template (remove it)")
        elif not os.path.exists(source):
            problems.append(f"the templates read files/{path}, but deploy/{path} does not exist")
        elif path not in present:
            problems.append(f"helm/gleaner/files/{path} is missing")
        elif open(source, "rb").read() != open(copy, "rb").read():
            problems.append(f"helm/gleaner/files/{path} differs from deploy/{path}")
    assert not problems, "\n".join(problems) + (
        "\n(deploy/ is the source of truth: run tests/k8s/sync_chart_files.sh, or UPDATE_GOLDEN=1 "
        "tests/k8s/run.sh, which also rewrites the golden files)")
    return f"{len(wanted)} files equal to deploy/: {', '.join(sorted(wanted))}"


# --------------------------------------------------------------------------------------------
def lint_problems(report: dict) -> list[str]:
    # Severity 1 is information ("icon is recommended": the project hosts no icon); warnings (2)
    # and errors (3) fail, as `helm lint --strict` does.
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
    problems += [e.strip() for e in report.get("errors", []) if e.strip() not in "\n".join(problems)]
    return problems


@check("lint")
def lint():
    linted = []
    for case in common.cases():
        if case.name == "snippet":
            # `mode: snippet` prints values for another chart, not a Kubernetes object: lint
            # would ask for its metadata.name (the snippet check feeds it to a chart instead).
            continue
        path = common.chart_dir(case)
        for kube in ("v1.29.0", "v" + VALIDATE_VERSIONS[-1]):
            report = helm.lint(path, case.values(), strict=True, with_subcharts=True, kube_version=kube)
            problems = lint_problems(report)
            assert not problems, f"{case.name} ({kube}):\n" + "\n".join(problems)
        linted.append(case.name)
    return f"{len(linted)} renderings, strict, Kubernetes 1.29.0 and {VALIDATE_VERSIONS[-1]}"


# --------------------------------------------------------------------------------------------
RENDERED: dict[str, dict[str, str]] = {}


def rendered(case) -> dict[str, str]:
    if case.name not in RENDERED:
        RENDERED[case.name] = common.render(case)
    return RENDERED[case.name]


def compare_or_update(path: str, actual: str, drifted: list[str]) -> None:
    expected = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    if expected == actual:
        return
    if UPDATE:
        with open(path, "w", encoding="utf-8") as f:
            f.write(actual)
        print(f"      rewrote {os.path.relpath(path, ROOT)}")
        return
    if expected is None:
        drifted.append(f"{os.path.relpath(path, ROOT)} is missing")
        return
    import difflib
    diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "golden", "rendered", lineterm="", n=2)
    drifted.append(f"{os.path.relpath(path, ROOT)} drifted:\n" + "\n".join(list(diff)[:60]))


@check("golden")
def golden():
    os.makedirs(GOLDEN, exist_ok=True)
    drifted: list[str] = []
    wanted = set()
    for case in common.cases():
        out = rendered(case)
        for suffix, text in ((".yaml", common.manifests_text(out)), (".NOTES.txt", common.notes_text(out))):
            path = os.path.join(GOLDEN, case.name + suffix)
            wanted.add(os.path.basename(path))
            compare_or_update(path, text, drifted)
    for stale in sorted(set(os.listdir(GOLDEN)) - wanted):
        if UPDATE:
            os.remove(os.path.join(GOLDEN, stale))
            print(f"      removed stale {stale}")
        else:
            drifted.append(f"tests/k8s/golden/{stale} belongs to no rendering (remove it, or UPDATE_GOLDEN=1)")
    assert not drifted, "\n".join(drifted) + "\n(if the change is intended: UPDATE_GOLDEN=1 tests/k8s/run.sh)"
    return f"{len(wanted)} files" + (" (UPDATE_GOLDEN=1: rewritten where they differed)" if UPDATE else "")


# --------------------------------------------------------------------------------------------
OPERATOR_OBJECTS: list[dict] = []  # PodMonitors and PrometheusRules: {"case", "object"}


def validate_object(obj: dict, version: str) -> str | None:
    """None when valid, else the error."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return None
    except kv_utils.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        return f"{obj['kind']}/{obj['metadata']['name']} at {version}: {where}: {e.message}"


@check("validate")
def validate():
    counts = []
    for case in common.cases():
        objs = common.objects(rendered(case))
        versions = list(VALIDATE_VERSIONS)
        if case.flavour() == "classic":
            versions.append(CLASSIC_ALSO)
        errors = []
        core = 0
        for obj in objs:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                OPERATOR_OBJECTS.append({"case": case.name, "object": obj})
                continue
            core += 1
            for version in versions:
                try:
                    err = validate_object(obj, version)
                except kv_utils.SchemaNotFoundError as e:
                    err = e.message
                if err:
                    errors.append(err)
        assert not errors, f"{case.name}:\n" + "\n".join(errors)
        if case.name == "snippet":
            assert not objs, f"mode snippet must render no Kubernetes object, got {[o['kind'] for o in objs]}"
        elif case.name != "defaults":
            assert core > 0, f"{case.name} rendered no Kubernetes object"
        else:
            assert not objs, f"the defaults (mode library) must render nothing, got {[o['kind'] for o in objs]}"
        if case.flavour() == "native" and any(o["kind"] in ("Deployment", "StatefulSet") for o in objs):
            # The control: a native sidecar is refused by 1.27's schema, so the validator sees it.
            _, pod = common.workload_pod(objs)
            workload = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
            assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"
            err = validate_object(workload, CLASSIC_ALSO)
            assert err and "restartPolicy" in err, f"{case.name}: 1.27.0 accepted a native sidecar: {err}"
        counts.append(f"{case.name}:{core}")
    return f"{', '.join(counts)} objects; Kubernetes {', '.join(VALIDATE_VERSIONS)} (+{CLASSIC_ALSO} for classic)"


@check("prometheus-operator")
def prometheus_operator():
    kinds = {o["object"]["kind"] for o in OPERATOR_OBJECTS}
    assert {"PodMonitor", "PrometheusRule", "AlertmanagerConfig"} <= kinds, (
        f"the renderings hold {sorted(kinds)}: examples/native-s3.yaml enables a PodMonitor and the PrometheusRules, "
        "examples/monitoring.yaml an AlertmanagerConfig")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(OPERATOR_OBJECTS, f)
    script = os.path.join(os.path.dirname(__file__), "validate_podmonitor.mjs")
    proc = subprocess.run(["node", script, f.name], capture_output=True, text=True,
                          env={**os.environ, "K8S_NPM_DIR": NPM_DIR})
    os.unlink(f.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return "; ".join(proc.stdout.strip().splitlines()[-3:])


# --------------------------------------------------------------------------------------------
PLACEHOLDER_URL = "https://grafana.example.com"
RULE_FILES = {"alerts": "prometheus/alerts.yaml", "slos": "prometheus/slo-rules.yaml"}
DASHBOARD_FILE = "grafana/gleaner.json"
AMC_FILE = "alertmanager/alertmanagerconfig.yaml"

# deploy/generate.py, the generator of the rule files: the chart must render what it writes.
sys.path.insert(0, DEPLOY)
import generate  # noqa: E402

SKELETON = generate.skeleton()


def chart_values(case) -> dict:
    """The chart's values in a rendering: its defaults under the case's values (for the parent
    chart, under its values' `gleaner:` block)."""
    values = case.values()
    if case.chart == "my-app":
        values = common.deep_merge(common.load_yaml(os.path.join(PARENT, "values.yaml")), values).get("gleaner", {})
    return common.deep_merge(common.load_yaml(os.path.join(CHART, "values.yaml")), values)


def raw_documents(rendered_: dict[str, str], template: str) -> list[tuple[str, dict]]:
    """[(document text, parsed)] of one template as Helm rendered it (not normalised: the bytes
    that would be applied)."""
    out = []
    for path, text in rendered_.items():
        if path.endswith("/templates/" + template):
            for doc in re.split(r"^---\n", text, flags=re.M):
                parsed = yaml.safe_load(doc)
                if parsed:
                    out.append((doc, parsed))
    return out


@check("observability")
def observability():
    """The PrometheusRules hold exactly the rules deploy/generate.py writes for the release's
    tuning (generate.chart_tuning: the tuning keys of prometheusRule, collector from run.interval
    and run.minAge), every token replaced; the dashboard ConfigMap is deploy/grafana/gleaner.json
    byte for byte."""
    counts = {"PrometheusRule": 0, "ConfigMap": 0}
    problems = []
    dashboard = open(os.path.join(DEPLOY, DASHBOARD_FILE), "rb").read()
    for case in common.cases():
        values = chart_values(case)
        out = rendered(case)
        monitoring = [o["metadata"]["name"] for o in common.objects(out) if o["kind"] == "PodMonitor"]
        rules = raw_documents(out, "prometheusrule.yaml")
        if values["prometheusRule"]["enabled"]:
            suffixes = sorted(r["metadata"]["name"].rsplit("-", 1)[-1] for _, r in rules)
            if suffixes != sorted(RULE_FILES):
                problems.append(f"{case.name}: PrometheusRules {[r['metadata']['name'] for _, r in rules]}, "
                                f"expected one per rule file, named -{' and -'.join(sorted(RULE_FILES))}")
            expected = generate.apply(SKELETON, generate.chart_tuning(values))
        elif rules:
            problems.append(f"{case.name}: PrometheusRules rendered with prometheusRule.enabled false")
        url = (values["prometheusRule"]["grafanaUrl"] or PLACEHOLDER_URL).removesuffix("/")
        for doc, rule in rules:
            name = rule["metadata"]["name"]
            suffix = name.rsplit("-", 1)[-1]
            if rule["spec"] != expected[suffix]:
                import difflib
                diff = difflib.unified_diff(json.dumps(expected[suffix], indent=1).splitlines(),
                                            json.dumps(rule["spec"], indent=1).splitlines(), "generate.py", "chart", lineterm="", n=1)
                problems.append(f"{case.name}: {name}'s rules are not what deploy/generate.py writes for its "
                                "tuning:\n" + "\n".join(list(diff)[:40]))
            if "${" in doc:
                problems.append(f"{case.name}: {name} keeps a token: {doc[doc.index('${'):][:60]!r}")
            links = [r["annotations"]["dashboard_url"] for g in rule["spec"]["groups"] for r in g["rules"]
                     if "dashboard_url" in r.get("annotations", {})]
            if not all(link.startswith(url + "/d/gleaner-overview/") for link in links):
                problems.append(f"{case.name}: {name}'s dashboard links do not all point at {url}: {links[:3]}")
            if url != PLACEHOLDER_URL and PLACEHOLDER_URL in doc:
                problems.append(f"{case.name}: {name} still names {PLACEHOLDER_URL} with grafanaUrl {url}")
            if monitoring and not name.startswith(monitoring[0] + "-"):
                problems.append(f"{case.name}: {name} is not named after the PodMonitor {monitoring[0]}")
            counts["PrometheusRule"] += 1
        # With the defaults of deploy/tuning.yaml (but the chart's run.interval), the alerts are the
        # shipped file's: the chart and the plain files differ only where the tuning says so.
        maps = raw_documents(out, "grafana-dashboard.yaml")
        if bool(maps) != bool(values["grafanaDashboard"]["enabled"]):
            problems.append(f"{case.name}: {len(maps)} dashboard ConfigMaps with grafanaDashboard.enabled "
                            f"{values['grafanaDashboard']['enabled']}")
        for _, cm in maps:
            name = cm["metadata"]["name"]
            if list(cm["data"]) != ["gleaner.json"] or cm["data"]["gleaner.json"].encode("utf-8") != dashboard:
                problems.append(f"{case.name}: ConfigMap {name}'s gleaner.json is not deploy/{DASHBOARD_FILE} byte for byte")
            if json.loads(cm["data"]["gleaner.json"])["uid"] != "gleaner-overview":
                problems.append(f"{case.name}: ConfigMap {name}'s dashboard has not the uid gleaner-overview")
            for key, value in values["grafanaDashboard"]["labels"].items():
                if value is not None and cm["metadata"]["labels"].get(key) != value:
                    problems.append(f"{case.name}: ConfigMap {name} lacks the label {key}: {value!r}")
            if cm["metadata"].get("namespace", "") != values["grafanaDashboard"]["namespace"]:
                problems.append(f"{case.name}: ConfigMap {name} is in namespace {cm['metadata'].get('namespace')!r}, "
                                f"expected {values['grafanaDashboard']['namespace']!r}")
            counts["ConfigMap"] += 1
    # The plain files are the generator's output for deploy/tuning.yaml: a rendering with those
    # values and Gleaner's own --interval gives them back.
    plain = common.Case("plain", "gleaner", EXAMPLE, {"run": {"interval": "1h"}})
    shipped = {suffix: yaml.safe_load(open(os.path.join(DEPLOY, path), encoding="utf-8"))
               for suffix, path in RULE_FILES.items()}
    for _, rule in raw_documents(common.render(plain), "prometheusrule.yaml"):
        suffix = rule["metadata"]["name"].rsplit("-", 1)[-1]
        ours = yaml.safe_load(json.dumps(rule["spec"]).replace("https://grafana.example.org", PLACEHOLDER_URL))
        if ours != shipped[suffix]:
            problems.append(f"with run.interval 1h and the placeholder Grafana, {rule['metadata']['name']} differs "
                            f"from deploy/{RULE_FILES[suffix]}")
    assert counts["PrometheusRule"] and counts["ConfigMap"], (
        f"no rendering has both the PrometheusRules and the dashboard ConfigMap: {counts}")
    assert not problems, "\n".join(problems)
    return (f"{counts['PrometheusRule']} PrometheusRules equal to deploy/generate.py's rules for their tuning, "
            f"{counts['ConfigMap']} dashboard ConfigMaps byte for byte")


TUNED = os.path.join(CHART, "examples", "monitoring.yaml")


@check("tuning")
def tuning():
    """The tuned example (examples/monitoring.yaml) changes what it says, and only that: a team
    label and an annotation on every alert, one alert gone, a for: changed, a severity and a
    threshold changed, the runbooks and Grafana elsewhere, a namespace selector, an objective."""
    case = next(c for c in common.cases() if c.values_file == TUNED)
    values = chart_values(case)["prometheusRule"]
    alerts = {}
    groups = []
    for _, rule in raw_documents(rendered(case), "prometheusrule.yaml"):
        for group in rule["spec"]["groups"]:
            groups.append(group)
            for r in group["rules"]:
                if "alert" in r:
                    alerts[r["alert"]] = r
    default = generate.apply(SKELETON, {})
    default_alerts = {r["alert"]: r for f in default.values() for g in f["groups"] for r in g["rules"] if "alert" in r}
    problems = []
    if set(default_alerts) - set(alerts) != {"GleanerEventsUnsupported"}:
        problems.append(f"alerts dropped: {sorted(set(default_alerts) - set(alerts))}, expected GleanerEventsUnsupported")
    for name, r in alerts.items():
        for key, value in values["ruleLabels"].items():
            if r["labels"].get(key) != value:
                problems.append(f"{name} lacks the label {key}: {value}")
        for key, value in values["ruleAnnotations"].items():
            if r["annotations"].get(key) != value:
                problems.append(f"{name} lacks the annotation {key}: {value}")
        if r["annotations"]["runbook_url"] != f"{values['runbookBaseUrl']}#{name.lower()}":
            problems.append(f"{name}: runbook_url {r['annotations']['runbook_url']}")
        if not r["annotations"]["dashboard_url"].startswith(values["grafanaUrl"] + "/d/gleaner-overview/"):
            problems.append(f"{name}: dashboard_url {r['annotations']['dashboard_url']}")
        expected_for = values["alerts"].get(name, {}).get("for", default_alerts[name].get("for"))
        if r.get("for") != expected_for:
            problems.append(f"{name}: for {r.get('for')!r}, expected {expected_for!r}")
    if alerts["GleanerFilesFailing"]["labels"]["severity"] != "critical":
        problems.append("GleanerFilesFailing: severity not critical")
    if ">= 10\n" not in alerts["GleanerFilesFailing"]["expr"]:
        problems.append(f"GleanerFilesFailing: minFailures 10 not in {alerts['GleanerFilesFailing']['expr']!r}")
    job = values["selector"]["job"] or ".*gleaner.*"  # the chart's default when empty
    if job == ".*gleaner.*":
        problems.append(f"selector.job {job!r}: the tuned example does not change the job selector")
    selector = f'job=~"{job}", namespace=~"checkout|payments"'
    unselected = [r.get("alert") or r.get("record") for g in groups for r in g["rules"]
                  if re.search(r"\b(gleaner_[a-z_]+|process_[a-z_]+|up)\{", r["expr"]) and selector not in r["expr"]]
    if unselected:
        problems.append(f"rules without the selector {selector}: {unselected[:5]}")
    # The example's own PodMonitor is scraped under a job its rules select.
    for monitor in [o for o in common.objects(rendered(case)) if o["kind"] == "PodMonitor"]:
        scrape_job = f"{monitor['metadata'].get('namespace', common.NAMESPACE)}/{monitor['metadata']['name']}"
        if not re.fullmatch(job, scrape_job):
            problems.append(f"the PodMonitor's job {scrape_job} does not match selector.job {job!r}")
    objective = [r for g in groups for r in g["rules"] if r.get("record") == "slo:objective:ratio"
                 and r["labels"]["sloth_slo"] == "correctness"]
    if [r["expr"] for r in objective] != ["vector(0.995)"]:
        problems.append(f"correctness objective {[r['expr'] for r in objective]}")
    if rendered_target(rendered(case)) != 600:
        problems.append(f"run.interval 5m: target {rendered_target(rendered(case))}, expected 600")
    # Nothing else: the tuned rules, the tuning's keys removed again, are the default rules.
    assert not problems, "\n".join(problems)
    return (f"{len(alerts)} alerts with team/tier labels, an annotation and the wiki's runbooks; "
            "GleanerEventsUnsupported dropped, GleanerStale for 10m, GleanerFilesFailing critical at 10 files, "
            f"job=~{json.dumps(job)} and a namespace selector everywhere (its PodMonitor's job matches), "
            "correctness 99.5 %, target 600 s")


@check("alertmanager-config")
def alertmanager_config():
    """The AlertmanagerConfig is deploy/alertmanager/alertmanagerconfig.yaml with the release's
    Secret; its route takes Gleaner's alerts only, every receiver it names exists, every webhook
    URL comes from the Secret."""
    spec = yaml.safe_load(open(os.path.join(DEPLOY, AMC_FILE), encoding="utf-8"))
    problems, counted = [], 0
    for case in common.cases():
        values = chart_values(case)
        objs = [o for o in common.objects(rendered(case)) if o["kind"] == "AlertmanagerConfig"]
        if len(objs) != (1 if values["alertmanagerConfig"]["enabled"] else 0):
            problems.append(f"{case.name}: {len(objs)} AlertmanagerConfigs with alertmanagerConfig.enabled "
                            f"{values['alertmanagerConfig']['enabled']}")
        for obj in objs:
            counted += 1
            slack = values["alertmanagerConfig"]["slack"]
            keys = {"paging-webhook-url": slack["pagingKey"], "tickets-webhook-url": slack["ticketsKey"]}
            expected = json.loads(json.dumps(spec))
            for receiver in expected["receivers"]:
                for config in receiver.get("slackConfigs", []):
                    config["apiURL"] = {"name": slack["secretName"], "key": keys[config["apiURL"]["key"]]}
            if obj["spec"] != expected:
                problems.append(f"{case.name}: the AlertmanagerConfig's spec is not deploy/{AMC_FILE} with the Secret {slack['secretName']}")
            route = obj["spec"]["route"]
            if route.get("matchers") != [{"name": "alertname", "value": "Gleaner.+", "matchType": "=~"}]:
                problems.append(f"{case.name}: the route matches {route.get('matchers')}, not Gleaner's alerts only")
            names = {r["name"] for r in obj["spec"]["receivers"]}

            def receivers(r):
                yield r["receiver"]
                for child in r.get("routes", []):
                    yield from receivers(child)

            missing = set(receivers(route)) - names
            if missing:
                problems.append(f"{case.name}: the routes name receivers {sorted(missing)} that do not exist")
            if not set(route["groupBy"]) <= {"alertname", "cluster", "namespace"}:
                problems.append(f"{case.name}: grouped by {route['groupBy']}: one message per Pod")
            for r in obj["spec"]["receivers"]:
                for config in r.get("slackConfigs", []):
                    if set(config["apiURL"]) != {"name", "key"} or config["apiURL"]["name"] != slack["secretName"]:
                        problems.append(f"{case.name}: {r['name']}'s webhook URL is not from the Secret {slack['secretName']}")
    assert counted, "no rendering has the AlertmanagerConfig"
    assert not problems, "\n".join(problems)
    return f"{counted} AlertmanagerConfigs: deploy/{AMC_FILE} with the release's Secret, Gleaner's alerts only"


# The file-freshness SLO's target, as the chart must derive it: the smallest bucket of
# gleaner_commit_delay_seconds at or above run.interval + run.minAge (written out here, apart from
# the chart and the generator: the buckets are the binary's, the durations read as Kubernetes and
# Gleaner read them).
COMMIT_DELAY_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400]
TARGET_RENDERINGS = [
    ("run.interval 30s", {"run": {"interval": "30s"}}, 60),
    ("run.interval 1h", {"run": {"interval": "1h"}}, 7200),
    ("run.interval 1m, run.minAge 2m", {"run": {"interval": "1m", "minAge": "2m"}}, 300),
    ("run.interval 500ms, run.minAge 0s", {"run": {"interval": "500ms", "minAge": "0s"}}, 1),
    ("a target set", {"prometheusRule": {"slos": {"file-freshness": {"target": 1800}}}}, 1800),
]


def duration_seconds(text: str) -> float:
    m = re.fullmatch(r"([0-9]+)(ms|s|m|h)", text)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def rendered_target(out: dict[str, str]) -> int | None:
    for obj in common.objects(out):
        if obj["kind"] == "PrometheusRule":
            for group in obj["spec"]["groups"]:
                for rule in group["rules"]:
                    if rule.get("record") == "slo:sli_errors:rate5m" and "le=" in rule["expr"]:
                        m = re.search(r'le=~?"([0-9]+)', rule["expr"])
                        return int(m.group(1))
    return None


@check("slo-target")
def slo_target():
    """The file-freshness SLO matches what the chart deploys: its target follows run.interval
    and run.minAge (the chart's defaults, 1m and 5s: 120 s, not the 2 h of an hourly --interval)."""
    problems, checked = [], []
    renderings = [(case.name, case, rendered(case), None) for case in common.cases()]
    for what, values, expected in TARGET_RENDERINGS:
        case = common.Case(what, "gleaner", EXAMPLE, values)
        renderings.append((what, case, common.render(case), expected))
    for what, case, out, expected in renderings:
        values = chart_values(case)
        if not values["prometheusRule"]["enabled"]:
            continue
        given = (values["prometheusRule"].get("slos") or {}).get("file-freshness", {}).get("target")
        need = duration_seconds(values["run"]["interval"]) + duration_seconds(values["run"]["minAge"])
        derived = given or next(b for b in COMMIT_DELAY_BUCKETS if b >= need)
        if expected is not None and derived != expected:
            problems.append(f"{what}: the test expects {expected}, its formula says {derived}")
        got = rendered_target(out)
        if got != derived:
            problems.append(f"{what}: run.interval {values['run']['interval']}, run.minAge {values['run']['minAge']}: "
                            f"the file-freshness target is {got} s, expected {derived} s")
        checked.append(f"{what}:{got}")
    assert checked, "no rendering has the SLO rules"
    assert not problems, "\n".join(problems)
    return ", ".join(checked)


def job_selectors() -> list[str]:
    """The job=~"…" regular expressions of the shipped rule files."""
    found = set()
    for source in RULE_FILES.values():
        found |= set(re.findall(r'job=~"([^"]+)"', open(os.path.join(DEPLOY, source), encoding="utf-8").read()))
    return sorted(found)


# Renderings beyond the cases, each with a PodMonitor whose name would not contain "gleaner"
# without gleaner.monitoringName: (what, chart, values file, values).
NATIVE_S3 = os.path.join(CHART, "examples", "native-s3.yaml")
JOB_NAME_RENDERINGS = [
    ("fullnameOverride", "gleaner", NATIVE_S3, {"fullnameOverride": "collector"}),
    ("nameOverride", "gleaner", NATIVE_S3, {"nameOverride": "collector"}),
    ("library, nameOverride, run.sourceId", "gleaner", None,
     {"nameOverride": "collector", "run": {"sourceId": "app-logs"},
      "podMonitor": {"enabled": True, "podSelector": {"app": "x"}}}),
    ("clusterName", "gleaner", NATIVE_S3, {"clusterName": "eu-west-1", "fullnameOverride": "collector"}),
    ("run.sourceIdScope pod", "gleaner", NATIVE_S3, {"run": {"sourceIdScope": "pod"}, "nameOverride": "collector"}),
    ("parent chart's alias", "aliased", None,
     {common.ALIAS: {"podMonitor": {"enabled": True, "podSelector": {"app": "x"}}, "prometheusRule": {"enabled": True},
                     "grafanaDashboard": {"enabled": True}}}),
]


@check("job-names")
def job_names():
    selectors = job_selectors()
    assert selectors, "the rule files have no job=~\"…\" selector (this check would prove nothing)"
    monitors = []  # (where, PodMonitor, run.sourceId)
    for case in common.cases():
        for obj in common.objects(rendered(case)):
            if obj["kind"] == "PodMonitor":
                monitors.append((case.name, obj, chart_values(case)))
    for what, chart, values_file, values in JOB_NAME_RENDERINGS:
        if chart == "aliased":
            out = common.render_aliased(values)
            chart_vals = common.deep_merge(common.load_yaml(os.path.join(CHART, "values.yaml")), values[common.ALIAS])
        else:
            case = common.Case(what, chart, values_file, values)
            out = common.render(case)
            chart_vals = chart_values(case)
        objs = common.objects(out)
        if chart == "aliased":  # the subchart reads its files/ under its alias too
            kinds = sorted(o["kind"] for o in objs)
            assert kinds == ["ConfigMap", "PodMonitor", "PrometheusRule", "PrometheusRule"], f"{what}: {kinds}"
        found = [o for o in objs if o["kind"] == "PodMonitor"]
        assert len(found) == 1, f"{what}: {len(found)} PodMonitors rendered"
        monitors.append((what, found[0], chart_vals))
        for o in objs:
            if o["kind"] in ("PrometheusRule", "ConfigMap") and "gleaner" not in o["metadata"]["name"]:
                raise AssertionError(f"{what}: {o['kind']}/{o['metadata']['name']} is not named after gleaner")
    problems = []
    for where, monitor, values in monitors:
        job = f"{monitor['metadata'].get('namespace', common.NAMESPACE)}/{monitor['metadata']['name']}"
        for selector in selectors:
            if not re.fullmatch(selector, job):
                problems.append(f"{where}: the scrape job {job} does not match job=~{json.dumps(selector)}")
        relabel = monitor["spec"]["podMetricsEndpoints"][0].get("relabelings", [])
        # As the Gleaner container makes its source id: run.sourceId, the Pod's name, or
        # [clusterName.]namespace.Pod name.
        if values["run"]["sourceId"]:
            expected = {"targetLabel": "source_id", "replacement": values["run"]["sourceId"]}
        elif values["run"]["sourceIdScope"] == "pod":
            expected = {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "source_id"}
        else:
            expected = {"sourceLabels": ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_name"],
                        "separator": ".", "targetLabel": "source_id"}
            if values["clusterName"]:
                expected.update({"regex": "(.*)", "replacement": values["clusterName"] + ".${1}"})
        if expected not in relabel:
            problems.append(f"{where}: {job} does not set source_id as Gleaner does: {relabel}")
    assert not problems, "\n".join(problems)
    return f"{len(monitors)} PodMonitors, jobs match {', '.join(json.dumps(s) for s in selectors)}"


# --------------------------------------------------------------------------------------------
def gleaner_containers(objs: list[dict]) -> list[tuple[dict, dict]]:
    """(Pod spec, Gleaner container) of every rendered Pod that runs `gleaner run`."""
    found = []
    for obj in objs:
        spec = common.pod_spec(obj)
        if spec is None:
            continue
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            if c.get("args", [None])[0] == "run":
                found.append((spec, c))
    return found


def flag_values(container: dict, flag: str) -> list[str]:
    """The values a rendered Gleaner container gives a flag of `gleaner run`: as `--flag=value`
    arguments, else as the flag's environment variable (GLEANER_ and the flag's name)."""
    found = [a.split("=", 1)[1] for a in container.get("args", []) if a.startswith(flag + "=")]
    env = "GLEANER_" + flag.lstrip("-").upper().replace("-", "_")
    return found or [e["value"] for e in container.get("env", []) if e["name"] == env and "value" in e]


def mib_or_bytes(n: int) -> str:
    """--min-free as the chart writes it."""
    return f"{n // 2**20}MiB" if n >= 2**20 else str(n)


# Extra renderings of the capacity flags: (what, values file, values).
CAPACITY_RENDERINGS = [
    *((f"sizeLimit {q}", os.path.join(CHART, "examples", "native-s3.yaml"), {"sidecar": {"emptyDir": {"sizeLimit": q}}})
      for q in ("512Mi", "500M", "3G", "1000000", "2Ti", "7k", "64Ki")),
    ("minFreePercent 0", os.path.join(CHART, "examples", "classic.yaml"), {"sidecar": {"minFreePercent": 0}}),
    ("cronjob.watchCapacity 10Gi", os.path.join(CHART, "examples", "cronjob.yaml"), {"cronjob": {"watchCapacity": "10Gi"}}),
    ("cronjob.watchCapacity 250G", os.path.join(CHART, "examples", "cronjob.yaml"), {"cronjob": {"watchCapacity": "250G"}}),
]


@check("capacity")
def capacity():
    renderings = [(case.name, case, rendered(case)) for case in common.cases()]
    for what, values_file, values in CAPACITY_RENDERINGS:
        case = common.Case(what, "gleaner", values_file, values)
        renderings.append((what, case, common.render(case)))
    problems = []
    counted = {"sidecar": 0, "cronjob": 0}
    for what, case, out in renderings:
        values = chart_values(case)
        for spec, c in gleaner_containers(common.objects(out)):
            capacity_flag = flag_values(c, "--watch-capacity")
            min_free = flag_values(c, "--min-free")
            if values["mode"] == "cronjob":
                wanted = values["cronjob"]["watchCapacity"]
                expected = [str(common.quantity_bytes(wanted))] if wanted else []
                if capacity_flag != expected:
                    problems.append(f"{what}: --watch-capacity {capacity_flag}, expected {expected} "
                                    f"(cronjob.watchCapacity {wanted!r})")
                counted["cronjob"] += 1
                continue
            volume = next((v for v in spec.get("volumes", []) if v["name"] == c["volumeMounts"][0]["name"]), None)
            if not volume or "emptyDir" not in volume:
                problems.append(f"{what}: the watched volume is not an emptyDir of the Pod")
                continue
            limit = common.quantity_bytes(volume["emptyDir"]["sizeLimit"])
            if capacity_flag != [str(limit)]:
                problems.append(f"{what}: --watch-capacity {capacity_flag}, expected [{limit}] "
                                f"(the emptyDir's sizeLimit {volume['emptyDir']['sizeLimit']})")
            percent = values["sidecar"]["minFreePercent"]
            expected_min_free = [mib_or_bytes(limit * percent // 100)] if percent else []
            if min_free != expected_min_free:
                problems.append(f"{what}: --min-free {min_free}, expected {expected_min_free}")
            counted["sidecar"] += 1
    assert counted["sidecar"] >= 10 and counted["cronjob"] >= 3, f"too few Gleaner containers checked: {counted}"
    assert not problems, "\n".join(problems)
    return (f"{counted['sidecar']} sidecar containers pass their emptyDir's sizeLimit in bytes, "
            f"{counted['cronjob']} CronJob containers cronjob.watchCapacity")


# --------------------------------------------------------------------------------------------
def _template(objs, kind=None):
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet"):
            return o["spec"]["template"]
        if o["kind"] == "CronJob":
            return o["spec"]["jobTemplate"]["spec"]["template"]
    raise AssertionError(f"no workload among {[o['kind'] for o in objs]}")


def _gleaner(objs):
    spec = _template(objs)["spec"]
    return next(c for c in (spec.get("initContainers") or []) + spec["containers"] if c["args"][0] == "run")


def _endpoint(objs):
    return next(o for o in objs if o["kind"] == "PodMonitor")["spec"]["podMetricsEndpoints"][0]



# What the Pod level may carry when Gleaner is added to someone else's Pod: only what its
# containers must share (the volume's group). Identity, seccomp and the rest are each container's.
POD_LEVEL_SHARED = {"fsGroup", "fsGroupChangePolicy", "supplementalGroups"}
IDENTITY_KEYS = ("runAsUser", "runAsGroup", "runAsNonRoot")


def pod_specs(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", common.pod_spec(o)) for o in objs if common.pod_spec(o)]


@check("pod-security")
def pod_security():
    """Sidecar-safe Pod security: the Pod's securityContext holds only fsGroup,
    fsGroupChangePolicy and supplementalGroups; Gleaner's container carries its own identity
    (non-root 65532), a read-only root, no capabilities, no privilege escalation, seccomp
    RuntimeDefault; the application container of helm/examples/my-app, which has no security
    context of its own, keeps its image's identity (nothing at Pod level sets one for it)."""
    problems = []
    counted = 0
    for case in common.cases():
        for where, spec in pod_specs(common.objects(rendered(case))):
            extra = set(spec.get("securityContext", {})) - POD_LEVEL_SHARED
            if extra:
                problems.append(f"{case.name} {where}: the Pod's securityContext sets {sorted(extra)}, which "
                                f"applies to every container of the Pod (the application's too)")
            for c in (spec.get("initContainers") or []) + spec["containers"]:
                sc = c.get("securityContext", {})
                if c.get("args", [None])[0] == "run":
                    counted += 1
                    wanted = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                              "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
                    for key, value in wanted.items():
                        if sc.get(key) != value:
                            problems.append(f"{case.name} {where}: Gleaner's container has {key} "
                                            f"{sc.get(key)!r}, expected {value!r}")
                elif case.chart == "my-app":
                    pod_sc = spec.get("securityContext", {})
                    changed = [k for k in IDENTITY_KEYS if k in pod_sc and k not in sc]
                    if changed:
                        problems.append(f"{case.name} {where}: the application container {c['name']} gets "
                                        f"{', '.join(f'{k}={pod_sc[k]}' for k in changed)} from the Pod "
                                        f"instead of its image's own user")
    assert counted, "no Gleaner container rendered"
    assert not problems, "\n".join(problems)
    return (f"{counted} Gleaner containers with their own identity; Pod level only "
            f"{', '.join(sorted(POD_LEVEL_SHARED))}; my-app's app container keeps its image's user")


@check("notes-port")
def notes_port():
    """NOTES.txt's port-forward commands name numeric ports: kubectl 1.29 and 1.30 cannot forward
    a named port of an init container, which the native sidecar is."""
    problems, counted = [], 0
    for case in common.cases():
        for line in common.notes_text(rendered(case)).splitlines():
            m = re.search(r"port-forward\s+\S+\s+(\S+)", line)
            if m:
                counted += 1
                if not re.fullmatch(r"[0-9]+:[0-9]+", m.group(1)):
                    problems.append(f"{case.name}: `{line.strip()}` forwards {m.group(1)}: a named port of an "
                                    f"init container fails on kubectl 1.29 and 1.30")
    assert counted, "no NOTES.txt has a port-forward command"
    assert not problems, "\n".join(problems)
    return f"{counted} port-forward commands, numeric ports"


CA_LOCAL_VOLUMES = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes"


def lint_failures(case, kube: str) -> list[str]:
    """The render failures of a chart linted by real Helm for a cluster of this version
    (.Capabilities.KubeVersion). Helm's lint does not stop at a template's `fail`: it logs it
    (`funcMap fail message=…`, on the process's standard error, which is read here) and goes on,
    so those lines are the failures, with the lint's own problems."""
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            report = helm.lint(common.chart_dir(case), case.values(), strict=True, with_subcharts=True,
                               kube_version=kube)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        failed = re.findall(r'funcMap fail message="([^"]*)', log.read().decode("utf-8", "replace"))
    return failed + lint_problems(report)


@check("cluster-facts")
def cluster_facts():
    """What the chart takes from the cluster: kubernetesVersion left unset is the cluster's
    (.Capabilities.KubeVersion), so a 1.28 cluster refuses the native flavour and 1.30 takes it,
    in the chart's own modes and through the named templates; every Pod with the shared emptyDir
    carries the Cluster Autoscaler's safe-to-evict-local-volumes annotation naming it (or the
    emptyDir blocks scale-down); the emptyDir's sizeLimit is requested as ephemeral-storage (on
    disk); Gleaner's port has a name of its own ("gleaner" in it: an application's `metrics` port
    cannot collide) and every Pod's port names are unique."""
    problems = []
    unset = [common.Case("example, kubernetesVersion unset", "gleaner", None, {"mode": "example", "run": {
                 "state": "s3://b/state", "output": "s3://b/out"}}),
             common.Case("my-app, kubernetesVersion unset", "my-app")]
    for case in unset:
        old = lint_failures(case, "v1.28.0")
        if not any("needs Kubernetes 1.29 or newer" in p for p in old):
            problems.append(f"{case.name}: on a 1.28 cluster (.Capabilities.KubeVersion) the native flavour was "
                            f"not refused: {old[:2]}")
        new = lint_failures(case, "v1.30.0")
        if new:
            problems.append(f"{case.name}: on a 1.30 cluster: {new[:2]}")
    # A parent chart that passes its values alone: an unset kubernetesVersion cannot be the
    # cluster's there, and says so; a set one works as before.
    storage = {"run": {"state": "s3://b/state", "output": "s3://b/out"}}
    try:
        common.render_values_only({"gleaner": storage})
        problems.append("a parent chart passing .Values.gleaner alone rendered with kubernetesVersion unset")
    except helm.HelmError as e:
        if "named template got the chart's values alone" not in common.error_text(e):
            problems.append(f"a parent chart passing .Values.gleaner alone: {common.error_text(e)[:300]}")
    try:
        common.render_values_only({"gleaner": {**storage, "kubernetesVersion": "1.30"}})
    except helm.HelmError as e:
        problems.append(f"a parent chart passing .Values.gleaner alone, kubernetesVersion 1.30: {common.error_text(e)[:300]}")
    pods = 0
    for case in common.cases():
        for obj in common.objects(rendered(case)):
            spec = common.pod_spec(obj)
            if spec is None:
                continue
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            gleaner = [c for c in (spec.get("initContainers") or []) + spec["containers"]
                       if c.get("args", [None])[0] == "run"]
            names = [p["name"] for c in (spec.get("initContainers") or []) + spec["containers"]
                     for p in c.get("ports", []) if "name" in p]
            if len(names) != len(set(names)):
                problems.append(f"{case.name} {where}: port names repeat in the Pod: {names}")
            for c in gleaner:
                for p in c.get("ports", []):
                    if "gleaner" not in p.get("name", ""):
                        problems.append(f"{case.name} {where}: Gleaner's port is named {p.get('name')!r}, a name an "
                                        f"application's container may use too (port names are unique in a Pod)")
            empty = [v for v in spec.get("volumes", []) if "emptyDir" in v]
            if not empty:
                continue
            pods += 1
            template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
            annotations = template["metadata"].get("annotations", {})
            listed = [n.strip() for n in annotations.get(CA_LOCAL_VOLUMES, "").split(",") if n.strip()]
            for v in empty:
                if v["name"] not in listed:
                    problems.append(f"{case.name} {where}: the emptyDir {v['name']} is not in the Pod's "
                                    f"{CA_LOCAL_VOLUMES} annotation ({annotations.get(CA_LOCAL_VOLUMES)!r}): the "
                                    f"Cluster Autoscaler will not scale its node down")
                if v["emptyDir"].get("medium", "") == "":
                    limit = common.quantity_bytes(v["emptyDir"]["sizeLimit"])
                    requested = sum(common.quantity_bytes(c.get("resources", {}).get("requests", {}).get(
                        "ephemeral-storage", 0)) for c in (spec.get("initContainers") or []) + spec["containers"])
                    if requested < limit:
                        problems.append(f"{case.name} {where}: the emptyDir {v['name']} may hold "
                                        f"{v['emptyDir']['sizeLimit']}, but the Pod requests {requested} bytes of "
                                        f"ephemeral-storage: the scheduler may place it on a node without the room")
    assert pods, "no Pod with an emptyDir rendered"
    assert not problems, "\n".join(problems)
    return (f"kubernetesVersion unset follows the cluster (1.28 refused, 1.30 taken); {pods} Pods annotated for "
            f"the Cluster Autoscaler, sizeLimit requested as ephemeral-storage, port names unique")


# --------------------------------------------------------------------------------------------
# Values parity with the peers' charts (fluent-bit, grafana, vector, ...): the same names, accepted
# by the schema and rendered where they belong.
KUBECTL = os.environ.get("KUBECTL", "kubectl")
KUSTOMIZE_EXAMPLE = os.path.join(ROOT, "deploy", "kustomize")
THIRD_PARTY_CHART = os.path.join(ROOT, "tests", "k8s", "fixtures", "third-party-chart")
GLEANER_EGRESS_PORTS = {53, 443}


def _pod_template(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def _gleaner_of(spec: dict) -> dict:
    return next(c for c in (spec.get("initContainers") or []) + spec["containers"]
                if (c.get("args") or [None])[0] == "run")


def parity_problems(name: str, objs: list[dict], v: dict, library: bool) -> list[str]:
    """What of the Pod-level values v is missing from the rendered objects."""
    problems = []
    workloads = [o for o in objs if common.pod_spec(o)]
    if not workloads:
        return [f"{name}: no workload rendered"]
    for w in workloads:
        where = f"{name} {w['kind']}/{w['metadata']['name']}"
        template = _pod_template(w)
        spec = template["spec"]
        meta = template["metadata"]
        for key, value in v.get("podAnnotations", {}).items():
            if meta.get("annotations", {}).get(key) != value:
                problems.append(f"{where}: podAnnotations {key} missing from the Pod's annotations")
        for key, value in v.get("podLabels", {}).items():
            if meta.get("labels", {}).get(key) != value:
                problems.append(f"{where}: podLabels {key} missing from the Pod's labels")
        if "imagePullSecrets" in v:
            wanted = [s if isinstance(s, dict) else {"name": s} for s in v["imagePullSecrets"]]
            if spec.get("imagePullSecrets") != wanted:
                problems.append(f"{where}: imagePullSecrets {spec.get('imagePullSecrets')}, expected {wanted}")
        if not library:
            for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName"):
                if key in v and spec.get(key) != v[key]:
                    problems.append(f"{where}: {key} is {spec.get(key)!r}, expected {v[key]!r}")
        for vol in v.get("extraVolumes", []):
            if vol not in spec.get("volumes", []):
                problems.append(f"{where}: extraVolumes {vol['name']} missing from the Pod's volumes")
        gleaner = _gleaner_of(spec)
        for mount in v.get("extraVolumeMounts", []):
            if mount not in gleaner.get("volumeMounts", []):
                problems.append(f"{where}: extraVolumeMounts {mount['mountPath']} missing from Gleaner's container")
        policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
        if v.get("networkPolicy", {}).get("enabled"):
            if len(policies) != 1:
                problems.append(f"{where}: networkPolicy.enabled rendered {len(policies)} NetworkPolicies")
                continue
            np_ = policies[0]["spec"]
            selector = np_["podSelector"].get("matchLabels", {})
            if not selector or any(meta["labels"].get(k) != val for k, val in selector.items()):
                problems.append(f"{where}: the NetworkPolicy's podSelector {selector} does not select the Pod "
                                f"(labels {meta['labels']})")
            if np_.get("policyTypes") != ["Egress"]:
                problems.append(f"{where}: the NetworkPolicy's policyTypes are {np_.get('policyTypes')}: only "
                                f"Egress (an Ingress policy would cut the application's own traffic)")
            ports = {p.get("port") for rule in np_.get("egress", []) for p in rule.get("ports", [])}
            wanted_ports = {53} | set(v["networkPolicy"].get("objectStore", {}).get("ports", [443]))
            if not wanted_ports <= ports:
                problems.append(f"{where}: the NetworkPolicy allows egress to ports {sorted(ports, key=str)}, "
                                f"not all of {sorted(wanted_ports)}")
            to = v["networkPolicy"].get("objectStore", {}).get("to")
            if to and not any(rule.get("to") == to for rule in np_.get("egress", [])):
                problems.append(f"{where}: networkPolicy.objectStore.to not rendered")
        elif policies:
            problems.append(f"{where}: a NetworkPolicy rendered though networkPolicy.enabled is off")
    pm = v.get("podMonitor", {})
    if pm.get("enabled"):
        monitors = [o for o in objs if o["kind"] == "PodMonitor"]
        if len(monitors) != 1:
            return problems + [f"{name}: {len(monitors)} PodMonitors"]
        mon = monitors[0]
        endpoint = mon["spec"]["podMetricsEndpoints"][0]
        for key, value in pm.get("additionalLabels", {}).items():
            if mon["metadata"]["labels"].get(key) != value:
                problems.append(f"{name}: podMonitor.additionalLabels {key} missing from the PodMonitor's labels")
        if "scrapeTimeout" in pm and endpoint.get("scrapeTimeout") != pm["scrapeTimeout"]:
            problems.append(f"{name}: the PodMonitor's scrapeTimeout is {endpoint.get('scrapeTimeout')!r}")
        for key, own in (("relabelings", "source_id"), ("metricRelabelings", "exported_source_id")):
            rendered_ = endpoint.get(key, [])
            if not all(r in rendered_ for r in pm.get(key, [])):
                problems.append(f"{name}: podMonitor.{key} not all rendered: {rendered_}")
            if own not in json.dumps(rendered_):
                problems.append(f"{name}: the chart's own {key} ({own}) are gone: {rendered_}")
    return problems


@check("values-parity")
def values_parity():
    """The Pod-level values platform teams set in the peers' charts, under the same names:
    podAnnotations, podLabels, priorityClassName, nodeSelector, tolerations, affinity,
    topologySpreadConstraints, extraVolumes and extraVolumeMounts (Gleaner's container),
    imagePullSecrets as objects ({name}) and as plain names, podMonitor.{additionalLabels,
    scrapeTimeout, relabelings, metricRelabelings} (on top of the chart's own source_id
    relabelings), networkPolicy. Each accepted by the schema and rendered: in example mode
    (examples/platform.yaml), in cronjob mode (examples/cronjob-rwo.yaml, affinity included: a Job next to the writer of a
    ReadWriteOnce claim) and in library mode through the named templates (helm/examples/my-app)."""
    problems, counted = [], []
    by_name = {c.name: c for c in common.cases()}
    for name, library in (("platform", False), ("cronjob-rwo", False), ("my-app-platform", True)):
        case = by_name.get(name)
        if case is None:
            problems.append(f"no rendering {name}")
            continue
        v = case.values().get("gleaner", {}) if case.chart == "my-app" else case.values()
        try:
            objs = common.objects(rendered(case))
        except helm.HelmError as e:
            problems.append(f"{name}: {common.error_text(e)[:400]}")
            continue
        problems += parity_problems(name, objs, v, library)
        counted.append(name)
    assert not problems, "\n".join(problems)
    return f"{', '.join(counted)}: every value rendered where it belongs"


@check("gate")
def gate():
    """sidecar.gateAppStart: by default the native sidecar has a startup probe, so the kubelet
    starts the application only once Gleaner answers (a fenced, misconfigured or crashing Gleaner
    keeps the application from starting); with false, no startup probe: the application starts as
    soon as Gleaner's process runs (pod_run.py runs both ways)."""
    base = {"mode": "example", "run": {"state": "s3://b/state", "output": "s3://b/out"}, "kubernetesVersion": "1.30"}
    problems = []
    for gate_value, wanted in ((None, True), (True, True), (False, False)):
        values = base if gate_value is None else common.deep_merge(base, {"sidecar": {"gateAppStart": gate_value}})
        try:
            objs = common.objects(common.render(common.Case("gate", "gleaner", None, values)))
        except helm.HelmError as e:
            problems.append(f"gateAppStart {gate_value}: {common.error_text(e)[:300]}")
            continue
        _, template = common.workload_pod(objs)
        g = _gleaner_of(template["spec"])
        if ("startupProbe" in g) != wanted:
            problems.append(f"gateAppStart {gate_value}: the native sidecar {'has no' if wanted else 'has a'} "
                            f"startup probe")
        if "livenessProbe" not in g:
            problems.append(f"gateAppStart {gate_value}: no liveness probe")
    assert not problems, "\n".join(problems)
    return "startup probe (gate) by default and with true, none with false; liveness kept"


def render_third_party(values: dict) -> list[dict]:
    """tests/k8s/fixtures/third-party-chart (a chart in the style of Grafana's, Fluent Bit's and
    Vector's: extraInitContainers, extraContainers, extraVolumes, extraVolumeMounts,
    podAnnotations, podSecurityContext, terminationGracePeriodSeconds) rendered with these values."""
    with helm.Chart.load(THIRD_PARTY_CHART) as chart:
        return common.objects(chart.render(values, name="web", namespace=common.NAMESPACE))


def snippet_values(values: dict) -> dict:
    """The values document `mode: snippet` prints (helm template --show-only templates/snippet.yaml)."""
    out = common.render(common.Case("snippet", "gleaner", None, common.deep_merge(common.SNIPPET, values)))
    docs = [d for d in yaml.safe_load_all(common.manifests_text(out)) if d]
    assert len(docs) == 1, f"mode snippet printed {len(docs)} documents"
    return docs[0]


def sidecar_problems(where: str, spec: dict, template_meta: dict, flavour: str, app: str) -> list[str]:
    """What of Gleaner is missing from a Pod spec it was added to (by snippet or kustomize)."""
    problems = []
    inits = spec.get("initContainers") or []
    gleaner = [c for c in inits + spec["containers"] if c["name"] == "gleaner"]
    if len(gleaner) != 1:
        return [f"{where}: {len(gleaner)} Gleaner containers"]
    g = gleaner[0]
    if flavour == "native" and (g not in inits or g.get("restartPolicy") != "Always"):
        problems.append(f"{where}: Gleaner is not a native sidecar")
    if flavour == "classic" and g not in spec["containers"]:
        problems.append(f"{where}: Gleaner is not a classic sidecar container")
    vol = next((v for v in spec.get("volumes", []) if v["name"] == "gleaner-watch"), None)
    if not vol or "sizeLimit" not in vol.get("emptyDir", {}):
        problems.append(f"{where}: no gleaner-watch emptyDir with a sizeLimit")
    app_c = next(c for c in spec["containers"] if c["name"] == app)
    if {"name": "gleaner-watch", "mountPath": "/data"} not in app_c.get("volumeMounts", []):
        problems.append(f"{where}: the application container {app} does not mount gleaner-watch at /data")
    if spec.get("securityContext", {}).get("fsGroup") != 65532:
        problems.append(f"{where}: no fsGroup 65532 in the Pod's securityContext")
    if int(spec.get("terminationGracePeriodSeconds", 30)) < 40:
        problems.append(f"{where}: terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds')} < 40")
    if CA_LOCAL_VOLUMES not in template_meta.get("annotations", {}):
        problems.append(f"{where}: no {CA_LOCAL_VOLUMES} annotation")
    if "runAsUser" in spec.get("securityContext", {}) and app_c.get("securityContext", {}).get("runAsUser") is None:
        pass  # the workload's own Pod-level identity, untouched
    return problems


@check("snippet")
def snippet():
    """`mode: snippet` prints Gleaner as values for another chart: the sidecar container under
    extraInitContainers (native) or extraContainers (classic), its volume under extraVolumes, the
    emitter's mount under extraVolumeMounts, with podAnnotations, podSecurityContext (fsGroup) and
    terminationGracePeriodSeconds; snippet.keys renames them (Bitnami's initContainers, sidecars).
    Fed to a third-party-style chart: rendered by Helm, valid for every Kubernetes version from 1.29 to the newest,
    with everything the sidecar needs in place."""
    problems = []
    counted = 0
    for label, values, flavour, keys in (
            ("native", {}, "native", {}),
            ("classic", {"kubernetesVersion": "1.27", "sidecar": {"flavour": "classic"}}, "classic", {}),
            ("renamed keys", {"snippet": {"keys": {"initContainers": "initContainers", "containers": "sidecars"}}},
             "native", {"extraInitContainers": "initContainers", "extraContainers": "sidecars"})):
        try:
            doc = snippet_values(values)
        except (helm.HelmError, AssertionError) as e:
            problems.append(f"{label}: {common.error_text(e)[:400]}")
            continue
        wanted = {"extraVolumes", "extraVolumeMounts", "podAnnotations", "podSecurityContext",
                  "terminationGracePeriodSeconds",
                  "extraInitContainers" if flavour == "native" else "extraContainers"}
        wanted = {keys.get(k, k) for k in wanted}
        if not wanted <= set(doc):
            problems.append(f"{label}: the snippet has {sorted(doc)}, not all of {sorted(wanted)}")
            continue
        third = {keys.get(k, k): k for k in ("extraInitContainers", "extraContainers")}
        fed = {third.get(k, k): val for k, val in doc.items()}
        objs = render_third_party(fed)
        for obj in objs:
            for version in VALIDATE_VERSIONS + ([CLASSIC_ALSO] if flavour == "classic" else []):
                err = validate_object(obj, version)
                if err:
                    problems.append(f"{label}: {err}")
        w = next(o for o in objs if o["kind"] == "Deployment")
        problems += sidecar_problems(f"{label} Deployment/{w['metadata']['name']}", w["spec"]["template"]["spec"],
                                     w["spec"]["template"]["metadata"], flavour, "app")
        counted += 1
    assert not problems, "\n".join(problems)
    return f"{counted} snippets fed to a third-party-style chart, valid, sidecar complete"


def kustomize_build(path: str) -> list[dict]:
    proc = subprocess.run([KUBECTL, "kustomize", path], capture_output=True, text=True)
    assert proc.returncode == 0, f"kubectl kustomize {os.path.relpath(path, ROOT)}: {proc.stderr.strip()}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@check("kustomize")
def kustomize():
    """deploy/kustomize/gleaner, a kustomize component, added by name to workloads Gleaner's chart
    did not render (deploy/kustomize/example: a Deployment, a StatefulSet, a DaemonSet and a Job
    of a third-party manifest, and one Deployment left alone), built by the real `kubectl
    kustomize`: every object valid for every Kubernetes version from 1.29 to the newest; each targeted Pod gets
    the native sidecar, its emptyDir, the application's mount, fsGroup (the workload's own Pod
    security context kept), the grace period and the Cluster Autoscaler annotation; the
    untargeted one is unchanged; Gleaner's container is the chart's (same image, args,
    probes, resources, security context, settings)."""
    objs = kustomize_build(KUSTOMIZE_EXAMPLE)
    problems = []
    for obj in objs:
        for version in VALIDATE_VERSIONS:
            err = validate_object(obj, version)
            if err:
                problems.append(err)
    workloads = {(o["kind"], o["metadata"]["name"]): o for o in objs if common.pod_spec(o)}
    targeted = [k for k in workloads if k[1] != "untouched"]
    kinds = {k[0] for k in targeted}
    if kinds != {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        problems.append(f"the example targets {sorted(kinds)}, not a Deployment, StatefulSet, DaemonSet and Job")
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    chart_objs = common.objects(common.render(common.Case("kustomize-equivalent", "gleaner", None, {
        "mode": "example", "kubernetesVersion": "1.30",
        "run": {"state": "s3://my-gleaner-bucket/gleaner/state", "output": "s3://my-gleaner-bucket/gleaner/results"}})))
    chart_gleaner = _gleaner_of(common.workload_pod(chart_objs)[1]["spec"])
    for key in targeted:
        w = workloads[key]
        where = f"{key[0]}/{key[1]}"
        spec = w["spec"]["template"]["spec"]
        problems += sidecar_problems(where, spec, w["spec"]["template"]["metadata"], "native", "app")
        g = next((c for c in spec.get("initContainers") or [] if c["name"] == "gleaner"), None)
        if g is None:
            continue
        for field_ in ("image", "args", "ports", "startupProbe", "livenessProbe", "resources", "securityContext",
                       "restartPolicy"):
            if g.get(field_) != chart_gleaner.get(field_):
                problems.append(f"{where}: Gleaner's {field_} differs from the chart's: {g.get(field_)!r} != "
                                f"{chart_gleaner.get(field_)!r}")
        env = {}
        for src in g.get("envFrom", []):
            name = src["configMapRef"]["name"]
            if name not in configmaps:
                problems.append(f"{where}: envFrom ConfigMap {name} is not in the output")
            env.update(configmaps.get(name, {}))
        env.update({e["name"]: e.get("value", json.dumps(e.get("valueFrom"))) for e in g.get("env", [])})
        chart_env = {e["name"]: e.get("value", json.dumps(e.get("valueFrom"))) for e in chart_gleaner["env"]}
        if env != chart_env:
            diff = {k: (env.get(k), chart_env.get(k)) for k in set(env) | set(chart_env) if env.get(k) != chart_env.get(k)}
            problems.append(f"{where}: Gleaner's settings differ from the chart's (kustomize, chart): {diff}")
    untouched = workloads.get(("Deployment", "untouched"))
    if untouched is None:
        problems.append("the example's Deployment 'untouched' is missing")
    elif "gleaner-watch" in json.dumps(untouched) or any(
            c["name"] == "gleaner" for c in (untouched["spec"]["template"]["spec"].get("initContainers") or [])
            + untouched["spec"]["template"]["spec"]["containers"]):
        problems.append("Deployment/untouched, which the example does not target, got Gleaner")
    assert not problems, "\n".join(problems)
    return f"{len(targeted)} workloads ({', '.join(sorted(kinds))}) given the sidecar by kubectl kustomize, valid"


def any_section(markdown: str, title: str) -> str:
    """The text under a heading of any level, up to the next heading of the same or a higher
    level ("" when there is none); `#` lines inside code blocks are no headings."""
    out, level, fence = [], None, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^(#+) (.*)$", line)
        if level is None:
            if m and m.group(2).strip() == title:
                level = len(m.group(1))
            continue
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return "\n".join(out)


@check("docs")
def docs():
    """The README and the chart README: "Add Gleaner to any workload" (the chart, kustomize, the
    snippet), the uid contract (uid, fsGroup, umask, the permission error and metric), the blast
    radius (the gate and its value, evictions, spot, mesh proxies, what to do, the egress), the
    CronJob next to a ReadWriteOnce claim."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    chart_readme = open(os.path.join(CHART, "README.md"), encoding="utf-8").read()
    problems = []
    for doc_name, text in (("README.md", readme), ("helm/gleaner/README.md", chart_readme)):
        part = any_section(text, "Add Gleaner to any workload")
        if not part:
            problems.append(f"{doc_name}: no section \"Add Gleaner to any workload\"")
            continue
        for word in ("mode: snippet", "kubectl kustomize", "deploy/kustomize/gleaner", "extraInitContainers"):
            if word not in part:
                problems.append(f"{doc_name}, Add Gleaner to any workload: does not mention {word}")
    uid = any_section(chart_readme, "The uid contract")
    for word in ("65532", "fsGroup", "umask", "002", "permission_denied"):
        if word not in uid:
            problems.append(f"chart README, The uid contract: does not mention {word}")
    blast = any_section(chart_readme, "Blast radius")
    for word in ("sidecar.gateAppStart", "evict", "spot", "mesh", "NetworkPolicy", "169.254.169.254", "443",
                 "sidecar.flavour: classic"):
        if word.lower() not in blast.lower():
            problems.append(f"chart README, Blast radius: does not mention {word}")
    cron = any_section(chart_readme, "The CronJob")
    for word in ("ReadWriteOnce", "ReadWriteMany", "affinity"):
        if word not in cron:
            problems.append(f"chart README, The CronJob: does not mention {word}")
    assert not problems, "\n".join(problems)
    return "any workload (chart, kustomize, snippet), uid contract, blast radius, CronJob claims: documented"


SOURCE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # crates/state-store/src/source_id.rs


def pod_env(container: dict, namespace: str, pod: str, node: str = "node-1",
            labels: dict | None = None) -> dict[str, str]:
    """The container's literal and downward-API variables as the kubelet makes them ($(VAR)
    expanded from the variables defined before), for a Pod on `node` with `labels` (a label the
    Pod does not have is empty, as the kubelet makes it)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                                      var["value"])
        elif "fieldRef" in var.get("valueFrom", {}):
            path = var["valueFrom"]["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            env[var["name"]] = (labels or {}).get(label.group(1), "") if label else \
                {"metadata.name": pod, "metadata.namespace": namespace, "spec.nodeName": node}[path]
    return env


# (what, run.labels over the example, outputLayout, GLEANER_LABELS of Pod web-0 in team-a on
# node-1 with the Pod label app.kubernetes.io/name=web, GLEANER_PARTITION_LABELS)
LABEL_RENDERINGS = [
    ("default: pod, namespace, node", {}, "flat",
     "namespace=team-a,node=node-1,pod=web-0", None),
    ("a Pod label, a static label, a partition",
     {"fromPodLabels": {"app": "app.kubernetes.io/name", "tier": "tier"}, "static": {"cluster": "eu-1"},
      "partitions": ["namespace", "app"]}, "hive",
     "namespace=team-a,node=node-1,pod=web-0,app=web,tier=,cluster=eu-1", "namespace,app"),
    ("none", {"pod": False, "namespace": False, "node": False}, "flat", None, None),
]


@check("labels")
def labels():
    """run.labels become GLEANER_LABELS through the downward API (the Pod's name, namespace and
    node, the chosen Pod labels) and literal values, as the kubelet expands them; the partitions
    GLEANER_PARTITION_LABELS. The real binary takes the rendered variables in pod_run.py."""
    problems = []
    for what, run_labels, layout, expected, partitions in LABEL_RENDERINGS:
        case = common.Case(what, "gleaner", EXAMPLE, {"run": {"labels": run_labels, "outputLayout": layout}})
        try:
            objs = common.objects(common.render(case))
        except helm.HelmError as e:
            problems.append(f"{what}: refused: {common.error_text(e)[:200]}")
            continue
        env = pod_env(_gleaner(objs), "team-a", "web-0", labels={"app.kubernetes.io/name": "web"})
        got = (env.get("GLEANER_LABELS"), env.get("GLEANER_PARTITION_LABELS"))
        if got != (expected, partitions):
            problems.append(f"{what}: GLEANER_LABELS, GLEANER_PARTITION_LABELS {got}, expected {(expected, partitions)}")
    assert not problems, "\n".join(problems)
    return ", ".join(what for what, *_ in LABEL_RENDERINGS)


# (what, values over the example, the source id of Pod web-0 in namespace team-a)
SOURCE_ID_RENDERINGS = [
    ("default", {}, "team-a.web-0"),
    ("clusterName", {"clusterName": "eu-west-1"}, "eu-west-1.team-a.web-0"),
    ("run.sourceIdScope pod (the form before)", {"run": {"sourceIdScope": "pod"}}, "web-0"),
    ("run.sourceId", {"run": {"sourceId": "fixed-id"}, "example": {"replicas": 1}}, "fixed-id"),
]


@check("source-ids")
def source_ids():
    """The default source id is qualified by the namespace (and clusterName), in a form the state
    store accepts, so that same-named Pods in two namespaces or clusters sharing a state location
    never collide; run.sourceIdScope pod keeps the bare Pod name (for state made under it)."""
    problems = []
    for what, values, expected in SOURCE_ID_RENDERINGS:
        case = common.Case(what, "gleaner", EXAMPLE, values)
        try:
            objs = common.objects(common.render(case))
        except helm.HelmError as e:
            problems.append(f"{what}: refused: {common.error_text(e)[:200]}")
            continue
        got = pod_env(_gleaner(objs), "team-a", "web-0").get("GLEANER_SOURCE_ID")
        if got != expected:
            problems.append(f"{what}: Pod web-0 in namespace team-a gets source id {got!r}, expected {expected!r}")
        elif not SOURCE_ID.fullmatch(got):
            problems.append(f"{what}: {got!r} is not a source id the state store accepts")
    assert not problems, "\n".join(problems)
    return ", ".join(f"{what}: {expected}" for what, _, expected in SOURCE_ID_RENDERINGS)


# --------------------------------------------------------------------------------------------
EXAMPLE = os.path.join(CHART, "examples", "native-s3.yaml")
CLASSIC = os.path.join(CHART, "examples", "classic.yaml")
CRONJOB = os.path.join(CHART, "examples", "cronjob.yaml")
SNIPPET_FILE = os.path.join(CHART, "examples", "snippet.yaml")

# (what, base values file, chart, values, expected part of the error)
BAD_VALUES = [
    ("typo'd top-level key", EXAMPLE, "gleaner", {"mdoe": "cronjob"},
     "additional properties 'mdoe' not allowed"),
    ("typo'd nested key", EXAMPLE, "gleaner", {"run": {"outptu": "s3://b/x"}},
     "at '/run': additional properties 'outptu' not allowed"),
    ("typo'd key in a parent chart's gleaner block", None, "my-app", {"gleaner": {"sidecar": {"flavor": "classic"}}},
     "at '/sidecar': additional properties 'flavor' not allowed"),
    ("negative size", EXAMPLE, "gleaner", {"sidecar": {"emptyDir": {"sizeLimit": "-1Gi"}}},
     "at '/sidecar/emptyDir/sizeLimit': '-1Gi' does not match pattern"),
    ("unknown mode", EXAMPLE, "gleaner", {"mode": "daemonset"},
     "at '/mode': value must be one of 'library', 'example', 'cronjob'"),
    ("unknown flavour", EXAMPLE, "gleaner", {"sidecar": {"flavour": "sidecar"}},
     "at '/sidecar/flavour': value must be one of 'native', 'classic'"),
    ("a duration Gleaner would not take", EXAMPLE, "gleaner", {"run": {"minAge": "5 seconds"}},
     "at '/run/minAge': '5 seconds' does not match pattern"),
    ("grace period too short (native)", EXAMPLE, "gleaner", {"sidecar": {"terminationGracePeriodSeconds": 30}},
     "sidecar.terminationGracePeriodSeconds 30 is too short for a native sidecar: Gleaner gets SIGTERM only after "
     "the emitter exited, so the Pod needs the emitter's stop time (sidecar.emitterStopTime 5s) + Gleaner's drain "
     "(run.shutdownTimeout 25s) + a margin (sidecar.graceMargin 5s) = 35 s. Raise it to at least 35"),
    ("grace period too short (classic)", CLASSIC, "gleaner",
     {"sidecar": {"terminationGracePeriodSeconds": 25}},
     "sidecar.terminationGracePeriodSeconds 25 is too short for a classic sidecar: the emitter and Gleaner stop "
     "together, so the Pod needs max(sidecar.emitterStopTime 5s, run.shutdownTimeout 25s) + a margin "
     "(sidecar.graceMargin 5s) = 30 s"),
    ("grace period too short (parent chart)", None, "my-app",
     {"gleaner": {"sidecar": {"emitterStopTime": "1m"}}},
     "sidecar.terminationGracePeriodSeconds 40 is too short for a native sidecar"),
    ("classic drain shorter than the emitter's last file", CLASSIC, "gleaner",
     {"run": {"shutdownTimeout": "10s", "minAge": "30s"}},
     "run.shutdownTimeout 10s is too short for a classic sidecar: Gleaner drains while the emitter stops, and the "
     "emitter's last file is complete after sidecar.emitterStopTime (5s) and ready after run.minAge (30s) more"),
    ("CronJob without source id", CRONJOB, "gleaner", {"run": {"sourceId": ""}},
     "cronjob mode needs run.sourceId: every Job's Pod has a new name"),
    ("CronJob without claim", CRONJOB, "gleaner", {"cronjob": {"persistentVolumeClaim": {"claimName": ""}}},
     "cronjob mode needs cronjob.persistentVolumeClaim.claimName"),
    ("state gc without a state location", None, "gleaner", {"stateGc": {"enabled": True}},
     "run.state is required: where Gleaner keeps its state"),
    ("state gc with a duration Gleaner would not take", None, "gleaner",
     {"stateGc": {"enabled": True, "idleFor": "7 days"}, "run": {"state": "s3://b/state"}},
     "at '/stateGc/idleFor': '7 days' does not match pattern"),
    ("native mode on 1.28", EXAMPLE, "gleaner", {"kubernetesVersion": "1.28"},
     "sidecar.flavour native needs Kubernetes 1.29 or newer (an init container with restartPolicy: Always), and "
     "kubernetesVersion is 1.28. On 1.28 and older set sidecar.flavour: classic"),
    ("native mode on 1.28 (parent chart)", None, "my-app", {"gleaner": {"kubernetesVersion": "v1.28.7"}},
     "sidecar.flavour native needs Kubernetes 1.29 or newer"),
    ("kubernetesVersion as a number", EXAMPLE, "gleaner", {"kubernetesVersion": 1.30},
     "kubernetesVersion must be a quoted string, like \"1.30\""),
    ("secret value given inline", CRONJOB, "gleaner",
     {"run": {"extraEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI"}]}},
     "run.extraEnv: AWS_SECRET_ACCESS_KEY is given as a literal value; a secret's value never goes in the chart's values"),
    ("credentials in the storage URL", EXAMPLE, "gleaner", {"run": {"output": "s3://AKIA:secret@bucket/out"}},
     "run.output must not carry credentials (user info, a query such as a SAS token, or a fragment)"),
    ("SAS token in the storage URL", EXAMPLE, "gleaner",
     {"run": {"state": "az://gleaner/state?sv=2022&sig=abc"}},
     "run.state must not carry credentials"),
    ("a secret's value in credentials", CRONJOB, "gleaner",
     {"credentials": {"secretEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI"}]}},
     "at '/credentials/secretEnv/0': missing properties 'secretName', 'key'"),
    ("missing output", EXAMPLE, "gleaner", {"run": {"output": ""}},
     "run.output is required: where Gleaner keeps its results"),
    ("unsupported storage scheme", EXAMPLE, "gleaner", {"run": {"state": "hdfs://nn/state"}},
     "at '/run/state': 'hdfs://nn/state' does not match pattern"),
    ("a flag the chart sets, in extraArgs", EXAMPLE, "gleaner", {"run": {"extraArgs": ["--after=keep"]}},
     "run.extraArgs: --after is set by the chart"),
    ("--watch-capacity in extraArgs", CRONJOB, "gleaner", {"run": {"extraArgs": ["--watch-capacity=10Gi"]}},
     "run.extraArgs: --watch-capacity is set by the chart"),
    ("a CronJob capacity in Gleaner's units", CRONJOB, "gleaner", {"cronjob": {"watchCapacity": "10GiB"}},
     "at '/cronjob/watchCapacity': '10GiB' does not match pattern"),
    ("a size limit in milli-units", EXAMPLE, "gleaner", {"sidecar": {"emptyDir": {"sizeLimit": "1000m"}}},
     "at '/sidecar/emptyDir/sizeLimit': '1000m' does not match pattern"),
    ("one source id for several Pods", EXAMPLE, "gleaner", {"run": {"sourceId": "shared"}},
     "run.sourceId \"shared\" with example.replicas 2: every Pod needs its own source id"),
    ("PodMonitor in cronjob mode", CRONJOB, "gleaner", {"podMonitor": {"enabled": True}},
     "podMonitor.enabled in cronjob mode: `gleaner run --once` serves no metrics"),
    ("PodMonitor in library mode without selector", None, "gleaner", {"podMonitor": {"enabled": True}},
     "podMonitor.enabled in library and snippet modes needs podMonitor.podSelector"),
    ("PodMonitor in snippet mode without selector", SNIPPET_FILE, "gleaner", {"podMonitor": {"enabled": True}},
     "podMonitor.enabled in library and snippet modes needs podMonitor.podSelector"),
    ("PrometheusRules in cronjob mode", CRONJOB, "gleaner", {"prometheusRule": {"enabled": True}},
     "prometheusRule.enabled in cronjob mode: `gleaner run --once` serves no metrics"),
    ("dashboard in cronjob mode", CRONJOB, "gleaner", {"grafanaDashboard": {"enabled": True}},
     "grafanaDashboard.enabled in cronjob mode: `gleaner run --once` serves no metrics"),
    ("typo'd key in prometheusRule", EXAMPLE, "gleaner", {"prometheusRule": {"enable": True}},
     "at '/prometheusRule': additional properties 'enable' not allowed"),
    ("a Grafana URL without scheme", EXAMPLE, "gleaner", {"prometheusRule": {"grafanaUrl": "grafana.example.org"}},
     "at '/prometheusRule/grafanaUrl': 'grafana.example.org' does not match pattern"),
    ("a Grafana URL that would break the rules' YAML", EXAMPLE, "gleaner",
     {"prometheusRule": {"grafanaUrl": 'https://grafana.example.org/" x'}},
     "at '/prometheusRule/grafanaUrl':"),
    ("a dashboard namespace that is no name", EXAMPLE, "gleaner", {"grafanaDashboard": {"namespace": "Monitoring"}},
     "at '/grafanaDashboard/namespace': 'Monitoring' does not match pattern"),
    ("min-free share out of range", EXAMPLE, "gleaner", {"sidecar": {"minFreePercent": 150}},
     "at '/sidecar/minFreePercent': maximum: got 150, want 90"),
    ("a bad IAM role ARN", EXAMPLE, "gleaner", {"serviceAccount": {"awsRoleArn": "gleaner-writer"}},
     "at '/serviceAccount/awsRoleArn': 'gleaner-writer' does not match pattern"),
    # The tuning of the rules.
    ("an alert that does not exist", EXAMPLE, "gleaner", {"prometheusRule": {"alerts": {"GleanerStal": {"for": "10m"}}}},
     "invalid propertyName 'GleanerStal'"),
    ("a parameter the alert lacks", EXAMPLE, "gleaner",
     {"prometheusRule": {"alerts": {"GleanerStale": {"params": {"interval": 3}}}}},
     "prometheusRule.alerts.GleanerStale.params.interval: no such parameter (known: intervals)"),
    ("a parameter of an alert without any", EXAMPLE, "gleaner",
     {"prometheusRule": {"alerts": {"GleanerDown": {"params": {"ratio": 0.5}}}}},
     "prometheusRule.alerts.GleanerDown.params.ratio: no such parameter (GleanerDown has none)"),
    ("a severity Alertmanager does not route", EXAMPLE, "gleaner",
     {"prometheusRule": {"alerts": {"GleanerStale": {"severity": "page"}}}},
     "at '/prometheusRule/alerts/GleanerStale/severity': value must be one of 'critical', 'warning', 'info'"),
    ("a for: Prometheus would not take", EXAMPLE, "gleaner",
     {"prometheusRule": {"alerts": {"GleanerStale": {"for": "10 minutes"}}}},
     "at '/prometheusRule/alerts/GleanerStale/for': '10 minutes' does not match pattern"),
    ("severity among the labels of every rule", EXAMPLE, "gleaner",
     {"prometheusRule": {"ruleLabels": {"severity": "critical"}}},
     "prometheusRule.ruleLabels: severity is set per alert (prometheusRule.alerts.<name>.severity)"),
    ("an objective of 100 %", EXAMPLE, "gleaner", {"prometheusRule": {"slos": {"correctness": {"objective": 100}}}},
     "at '/prometheusRule/slos/correctness/objective': exclusiveMaximum"),
    ("an objective a single bad file would burn", EXAMPLE, "gleaner",
     {"prometheusRule": {"slos": {"correctness": {"objective": 99.99}}}},
     "prometheusRule.slos.correctness.objective 99.99: its traffic guard (200 events) would let a single bad "
     "event page (200 x 6 x 0.0001 < 1)"),
    ("a target that is no bucket", EXAMPLE, "gleaner", {"prometheusRule": {"slos": {"file-freshness": {"target": 301}}}},
     "at '/prometheusRule/slos/file-freshness/target': value must be one of 0.5, 1, 2, 5, 10, 15"),
    ("a target for an SLO without one", EXAMPLE, "gleaner", {"prometheusRule": {"slos": {"correctness": {"target": 300}}}},
     "prometheusRule.slos.correctness.target: only the latency SLO (file-freshness) has a target"),
    ("an interval beyond every bucket", EXAMPLE, "gleaner", {"run": {"interval": "24h"}},
     "run.interval + run.minAge is 86405 s, beyond the largest bucket of gleaner_commit_delay_seconds: set "
     "prometheusRule.slos.file-freshness.target"),
    ("AlertmanagerConfig in cronjob mode", CRONJOB, "gleaner", {"alertmanagerConfig": {"enabled": True}},
     "alertmanagerConfig.enabled in cronjob mode: `gleaner run --once` serves no metrics"),
    ("a Secret name that is no name", EXAMPLE, "gleaner",
     {"alertmanagerConfig": {"enabled": True, "slack": {"secretName": "Slack_URLs"}}},
     "at '/alertmanagerConfig/slack/secretName': 'Slack_URLs' does not match pattern"),
    # A uid at Pod level would change the application's containers too.
    ("a uid at Pod level", EXAMPLE, "gleaner", {"podSecurityContext": {"runAsUser": 1000}},
     "at '/podSecurityContext': additional properties 'runAsUser' not allowed"),
    ("clusterName as a number", EXAMPLE, "gleaner", {"clusterName": 7},
     "at '/clusterName': got number, want string"),
    ("clusterName with a dot", EXAMPLE, "gleaner", {"clusterName": "eu.west"},
     "at '/clusterName': 'eu.west' does not match pattern"),
    ("unknown source id scope", EXAMPLE, "gleaner", {"run": {"sourceIdScope": "cluster"}},
     "at '/run/sourceIdScope': value must be one of 'namespace', 'pod'"),
    ("clusterName with the bare Pod name", EXAMPLE, "gleaner", {"clusterName": "eu-1", "run": {"sourceIdScope": "pod"}},
     "clusterName \"eu-1\" qualifies the default source id, and run.sourceIdScope pod makes it the bare Pod name"),
    ("a source id longer than the state store takes", CRONJOB, "gleaner", {"run": {"sourceId": "x" * 129}},
     "at '/run/sourceId': maxLength: got 129, want 128"),
    ("a variable the chart sets, in extraEnv", EXAMPLE, "gleaner",
     {"run": {"extraEnv": [{"name": "GLEANER_AFTER", "value": "keep"}]}},
     "run.extraEnv: GLEANER_AFTER is set by the chart"),
    # The values of the peers' charts (issue 24): each with a wrong type, its own message.
    ("podAnnotations as a list", EXAMPLE, "gleaner", {"podAnnotations": ["a=b"]},
     "at '/podAnnotations': got array, want object"),
    ("a podLabels value as a number", EXAMPLE, "gleaner", {"podLabels": {"cost-center": 4711}},
     "at '/podLabels/cost-center': got number, want string"),
    ("nodeSelector as a string", EXAMPLE, "gleaner", {"nodeSelector": "kubernetes.io/os=linux"},
     "at '/nodeSelector': got string, want object"),
    ("tolerations as a map", EXAMPLE, "gleaner", {"tolerations": {"key": "dedicated"}},
     "at '/tolerations': got object, want array"),
    ("affinity as a list", CRONJOB, "gleaner", {"affinity": [{"podAffinity": {}}]},
     "at '/affinity': got array, want object"),
    ("topologySpreadConstraints as a map", EXAMPLE, "gleaner", {"topologySpreadConstraints": {"maxSkew": 1}},
     "at '/topologySpreadConstraints': got object, want array"),
    ("priorityClassName as a number", EXAMPLE, "gleaner", {"priorityClassName": 1000},
     "at '/priorityClassName': got number, want string"),
    ("an extra volume without a name", EXAMPLE, "gleaner", {"extraVolumes": [{"configMap": {"name": "ca"}}]},
     "at '/extraVolumes/0': missing property 'name'"),
    ("an extra mount without a path", EXAMPLE, "gleaner", {"extraVolumeMounts": [{"name": "ca"}]},
     "at '/extraVolumeMounts/0': missing property 'mountPath'"),
    ("an extra volume named as the shared one", EXAMPLE, "gleaner",
     {"extraVolumes": [{"name": "gleaner-watch", "configMap": {"name": "ca"}}]},
     "extraVolumes: gleaner-watch is the shared volume's name (volume.name)"),
    ("an extra mount over the watched directory", EXAMPLE, "gleaner",
     {"extraVolumes": [{"name": "ca", "configMap": {"name": "ca"}}],
      "extraVolumeMounts": [{"name": "ca", "mountPath": "/data"}]},
     "extraVolumeMounts: /data is the watched directory (volume.mountPath)"),
    ("an extra mount of a volume that does not exist", EXAMPLE, "gleaner",
     {"extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca"}]},
     "extraVolumeMounts: no volume ca in extraVolumes"),
    ("a pull secret as a number", EXAMPLE, "gleaner", {"imagePullSecrets": [7]},
     "at '/imagePullSecrets/0': got number, want string - at '/imagePullSecrets/0': got number, want object"),
    ("a pull secret with a typo'd key", EXAMPLE, "gleaner", {"imagePullSecrets": [{"nmae": "registry"}]},
     "at '/imagePullSecrets/0': additional properties 'nmae' not allowed"),
    ("podMonitor.scrapeTimeout in words", EXAMPLE, "gleaner", {"podMonitor": {"scrapeTimeout": "10 seconds"}},
     "at '/podMonitor/scrapeTimeout': '10 seconds' does not match pattern"),
    ("podMonitor.relabelings as a map", EXAMPLE, "gleaner", {"podMonitor": {"relabelings": {"action": "drop"}}},
     "at '/podMonitor/relabelings': got object, want array"),
    ("podMonitor.metricRelabelings as a string", EXAMPLE, "gleaner", {"podMonitor": {"metricRelabelings": "drop"}},
     "at '/podMonitor/metricRelabelings': got string, want array"),
    ("podMonitor.additionalLabels as a list", EXAMPLE, "gleaner", {"podMonitor": {"additionalLabels": ["a"]}},
     "at '/podMonitor/additionalLabels': got array, want object"),
    ("networkPolicy.enabled as a string", EXAMPLE, "gleaner", {"networkPolicy": {"enabled": "yes"}},
     "at '/networkPolicy/enabled': got string, want boolean"),
    ("a NetworkPolicy port by name", EXAMPLE, "gleaner", {"networkPolicy": {"objectStore": {"ports": ["https"]}}},
     "at '/networkPolicy/objectStore/ports/0': got string, want integer"),
    ("a NetworkPolicy in library mode without selector", None, "gleaner", {"networkPolicy": {"enabled": True}},
     "networkPolicy.enabled in library and snippet modes needs networkPolicy.podSelector"),
    ("a NetworkPolicy in snippet mode without selector", SNIPPET_FILE, "gleaner", {"networkPolicy": {"enabled": True}},
     "networkPolicy.enabled in library and snippet modes needs networkPolicy.podSelector"),
    ("networkPolicy.podSelector as a list", EXAMPLE, "gleaner", {"networkPolicy": {"podSelector": ["app=web"]}},
     "at '/networkPolicy/podSelector': got array, want object"),
    ("networkPolicy.objectStore.to as a map", EXAMPLE, "gleaner",
     {"networkPolicy": {"objectStore": {"to": {"ipBlock": {"cidr": "10.0.0.0/8"}}}}},
     "at '/networkPolicy/objectStore/to': got object, want array"),
    ("networkPolicy.extraEgress as a map", EXAMPLE, "gleaner", {"networkPolicy": {"extraEgress": {"ports": []}}},
     "at '/networkPolicy/extraEgress': got object, want array"),
    ("networkPolicy.metadata as a string", EXAMPLE, "gleaner", {"networkPolicy": {"metadata": "no"}},
     "at '/networkPolicy/metadata': got string, want boolean"),
    ("sidecar.gateAppStart as a string", EXAMPLE, "gleaner", {"sidecar": {"gateAppStart": "no"}},
     "at '/sidecar/gateAppStart': got string, want boolean"),
    ("a snippet key that is no key", EXAMPLE, "gleaner", {"snippet": {"keys": {"volumes": "extra volumes"}}},
     "at '/snippet/keys/volumes': 'extra volumes' does not match pattern"),
    ("a label key with a dot", EXAMPLE, "gleaner", {"run": {"labels": {"fromPodLabels": {"app.name": "app"}}}},
     "does not match pattern '^[a-z][a-z0-9_]{0,62}$'"),
    ("a reserved label key", EXAMPLE, "gleaner", {"run": {"labels": {"static": {"date": "x"}}}},
     "run.labels.static: the label key date is reserved"),
    ("a static label value with a slash", EXAMPLE, "gleaner", {"run": {"labels": {"static": {"team": "a/b"}}}},
     "at '/run/labels/static/team': 'a/b' does not match pattern"),
    ("a label given twice", EXAMPLE, "gleaner", {"run": {"labels": {"static": {"node": "n1"}}}},
     "run.labels.static: the label node is given twice"),
    ("a partition that is no label", EXAMPLE, "gleaner",
     {"run": {"outputLayout": "hive", "labels": {"partitions": ["app"]}}},
     "run.labels.partitions: app is not a label"),
    ("a partition without the hive layout", EXAMPLE, "gleaner", {"run": {"labels": {"partitions": ["namespace"]}}},
     "run.labels.partitions: namespace is a folder of the hive layout: set run.outputLayout to hive"),
    ("GLEANER_LABELS in run.extraEnv", EXAMPLE, "gleaner",
     {"run": {"extraEnv": [{"name": "GLEANER_LABELS", "value": "a=b"}]}},
     "run.extraEnv: GLEANER_LABELS is set by the chart"),
    ("--label in run.extraArgs", EXAMPLE, "gleaner", {"run": {"extraArgs": ["--label=a=b"]}},
     "run.extraArgs: --label is set by the chart"),
]


@check("bad-values")
def bad_values():
    failures = []
    for what, base, chart, values, expected in BAD_VALUES:
        case = common.Case(what, chart, base, values)
        try:
            common.render(case)
        except helm.HelmError as e:
            message = common.error_text(e)
            if expected not in message:
                failures.append(f"{what}: the error does not say {expected!r}:\n  {message}")
            continue
        failures.append(f"{what}: rendered without an error")
    assert not failures, "\n".join(failures)
    return f"{len(BAD_VALUES)} cases, each with its own message"


# --------------------------------------------------------------------------------------------
SCHEMA = os.path.join(CHART, "values.schema.json")


def schema_keys(schema: dict, prefix: str = "") -> dict[str, dict]:
    """{dotted key: its schema} for every declared property, at every depth."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        out[path] = sub
        out.update(schema_keys(sub, path + "."))
    return out


def value_keys(values, prefix: str = "") -> list[str]:
    out = []
    if isinstance(values, dict):
        for key, sub in values.items():
            out.append(prefix + key)
            out += value_keys(sub, prefix + key + ".")
    return out


@check("schema")
def schema():
    doc = json.load(open(SCHEMA, encoding="utf-8"))
    problems = []

    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"]):
                ap = node.get("additionalProperties")
                # A map: of strings (labels), of numbers (an alert's params), or keyed by names
                # the schema lists (propertyNames: alerts, SLOs) or constrains (label names).
                free_map = isinstance(ap, dict) and (ap.get("type") in ("string", "number") or "propertyNames" in node)
                # A Kubernetes or prometheus-operator object passed through (affinity, a Volume,
                # a relabeling): its API checks it, and the renderings are validated strictly.
                passed_through = str(node.get("$comment", "")).startswith(("a Kubernetes ", "a prometheus-operator "))
                if ap is not False and not free_map and not passed_through and where != "global":
                    problems.append(f"{where or '(top)'}: additionalProperties is not false")
            for key, sub in node.items():
                if key == "properties":
                    for name, prop in sub.items():
                        walk(prop, f"{where}.{name}" if where else name)
                elif key in ("items", "additionalProperties"):
                    walk(sub, f"{where}[]")
                elif key in ("anyOf", "oneOf", "allOf"):
                    for alt in sub:
                        walk(alt, where)

    walk(doc, "")
    declared = {k for k in schema_keys(doc)}
    values = common.load_yaml(os.path.join(CHART, "values.yaml"))
    present = set(value_keys(values))
    for key in sorted(present - declared):
        problems.append(f"values.yaml has {key}, which the schema does not declare")
    # Every value the chart defines (a top-level key, or a key of a section whose keys are
    # documented one by one) is in values.yaml with its comment; keys inside a whole-object value
    # (securityContext.capabilities.add, …) are optional Kubernetes fields and need no default.
    rows = documented_values()
    row_keys = {path for path, _, _ in rows}
    sections = {path for path, _, is_section in rows if is_section}
    for key in sorted(declared - {"global", "enabled"}):
        parent = key.rsplit(".", 1)[0] if "." in key else None
        if (parent is None or parent in sections) and key not in row_keys:
            problems.append(f"the schema declares {key}, which values.yaml does not set and document")
    # Every alert and SLO of the generator can be tuned, and nothing else.
    tunable = doc["properties"]["prometheusRule"]["properties"]
    if tunable["alerts"]["propertyNames"]["enum"] != sorted(SKELETON["alerts"]):
        problems.append("values.schema.json's prometheusRule.alerts names are not deploy/generate.py's alerts: "
                        f"{sorted(set(tunable['alerts']['propertyNames']['enum']) ^ set(SKELETON['alerts']))}")
    if tunable["slos"]["propertyNames"]["enum"] != sorted(SKELETON["slos"]):
        problems.append("values.schema.json's prometheusRule.slos names are not deploy/slos.yaml's")
    if tunable["slos"]["additionalProperties"]["properties"]["target"]["enum"] != SKELETON["buckets"]:
        problems.append("values.schema.json's file-freshness targets are not the buckets of deploy/slos.yaml")
    # The defaults pass the schema, and the schema is what Helm applies.
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
    assert not problems, "\n".join(problems)
    return f"{len(declared)} keys declared, additionalProperties false wherever keys are fixed"


def _get(values, dotted):
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


# --------------------------------------------------------------------------------------------
TABLE_START = "<!-- values-table:start (generated by tests/k8s/chart_test.py from values.yaml; UPDATE_GOLDEN=1 rewrites it) -->"
TABLE_END = "<!-- values-table:end -->"
KEY_LINE = re.compile(r"^( *)([A-Za-z][A-Za-z0-9_]*):(?: (.*))?$")


def documented_values() -> list[tuple[str, str, bool]]:
    """[(dotted key, its comment, whether it is a section with documented children)] in file order.
    A key's comment is the block of `#` lines right above it. A key whose children have no comments
    of their own is one row (a whole object, like `resources`)."""
    lines = open(os.path.join(CHART, "values.yaml"), encoding="utf-8").read().splitlines()
    entries = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        if not stripped:
            comment = []
            continue
        m = KEY_LINE.match(line)
        if not m:
            comment = []
            continue
        depth = len(m.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = ".".join([s[1] for s in stack] + [m.group(2)])
        stack.append((depth, m.group(2)))
        entries.append((path, " ".join(comment)))
        comment = []
    documented = {p for p, c in entries if c}

    def is_section(key):
        return any(p.startswith(key + ".") for p in documented)

    rows = []
    problems = []
    for path, text in entries:
        parent = path.rsplit(".", 1)[0] if "." in path else None
        if parent is not None and not is_section(parent):
            continue  # inside a value documented as a whole
        if not text:
            problems.append(path)
        rows.append((path, text, is_section(path)))
    assert not problems, "values without a comment in values.yaml: " + ", ".join(problems)
    return rows


def type_of(schema: dict) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(e)}`" for e in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(type_of(s) for s in schema["anyOf"])
    t = schema.get("type", "any")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map of strings"
    if t == "array" and "items" in schema:
        item = schema["items"]
        return f"list of {type_of(item)}s" if item.get("type") != "object" else "list of objects"
    return t


def default_of(value) -> str:
    return "`" + json.dumps(value, separators=(", ", ": ")) + "`"


def values_table() -> str:
    doc = json.load(open(SCHEMA, encoding="utf-8"))
    keys = schema_keys(doc)
    values = common.load_yaml(os.path.join(CHART, "values.yaml"))
    out = ["| value | type | default | meaning |", "|---|---|---|---|"]
    for path, text, is_section in documented_values():
        schema = keys.get(path)
        assert schema is not None, f"{path} is not in values.schema.json"
        default = "" if is_section else default_of(_get(values, path))
        text = text.replace("|", "\\|")
        name = f"**`{path}`**" if is_section else f"`{path}`"
        out.append(f"| {name} | {type_of(schema) if not is_section else 'object'} | {default} | {text} |")
    return "\n".join(out) + "\n"


@check("values-table")
def values_table_check():
    readme_path = os.path.join(CHART, "README.md")
    readme = open(readme_path, encoding="utf-8").read()
    assert TABLE_START in readme and TABLE_END in readme, f"{readme_path} has no values-table markers"
    before, rest = readme.split(TABLE_START, 1)
    current, after = rest.split(TABLE_END, 1)
    table = values_table()
    if current.strip("\n") != table.strip("\n"):
        if UPDATE:
            with open(readme_path, "w", encoding="utf-8") as f:
                f.write(before + TABLE_START + "\n" + table + TABLE_END + after)
            return "rewritten"
        raise AssertionError("helm/gleaner/README.md's values table differs from values.yaml "
                             "(UPDATE_GOLDEN=1 tests/k8s/run.sh rewrites it)")
    return f"{table.count(chr(10)) - 2} rows"


# --------------------------------------------------------------------------------------------
def section(markdown: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert m, f"no section '## {title}'"
    return m.group(1)


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.S | re.M)


def normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


ELISION = re.compile(r"^\s*# …\s*$")


def contains_in_order(source: str, snippet: str) -> bool:
    """The snippet is in the source, line for line: its parts between `# …` lines (an elision)
    appear there as whole lines, in order."""
    lines = [line.rstrip() for line in source.splitlines()]
    parts, current = [], []
    for line in snippet.strip("\n").splitlines():
        if ELISION.match(line):
            parts.append(current)
            current = []
        else:
            current.append(line.rstrip())
    parts.append(current)
    at = 0
    for part in parts:
        if not part:
            continue
        found = next((i for i in range(at, len(lines) - len(part) + 1) if lines[i:i + len(part)] == part), None)
        if found is None:
            return False
        at = found + len(part)
    return True


@check("snippets")
def snippets():
    sources = {}
    for path in [*(c.values_file for c in common.cases() if c.values_file),
                 os.path.join(PARENT, "Chart.yaml"), os.path.join(PARENT, "values.yaml"),
                 *sorted(glob.glob(os.path.join(PARENT, "templates", "*.yaml"))),
                 os.path.join(CHART, "values.yaml"),
                 *sorted(glob.glob(os.path.join(ROOT, "deploy", "kustomize", "*.yaml"))),
                 *sorted(glob.glob(os.path.join(ROOT, "deploy", "kustomize", "gleaner", "*.yaml")))]:
        sources[os.path.relpath(path, ROOT)] = normalised(open(path, encoding="utf-8").read())
    examples = {os.path.relpath(c.values_file, ROOT) for c in common.cases() if c.values_file}
    problems = []
    counted = 0
    top = section(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(), "Run it in Kubernetes")
    chart_readme = open(os.path.join(CHART, "README.md"), encoding="utf-8").read()
    chart_readme = chart_readme.split(TABLE_START)[0] + chart_readme.split(TABLE_END)[-1]
    used_examples = set()
    for where, text in (("README.md, Run it in Kubernetes", top), ("helm/gleaner/README.md", chart_readme)):
        for lang, body in code_blocks(text):
            counted += 1
            if lang == "yaml":
                if not any(contains_in_order(src, body) for src in sources.values()):
                    problems.append(f"{where}: this YAML snippet is in no tested file:\n{body}")
            elif lang in ("sh", "bash", "console"):
                # The snippet's output, made in the same block from a tested example, is what a
                # third-party chart takes (the snippet check and pod_run.py feed it to one).
                snippet_out = re.search(r"--show-only templates/snippet\.yaml > (\S+)", body)
                for m in re.finditer(r"(?:-f|--values)\s+(\S+)", body):
                    used_examples.add(m.group(1))
                    if snippet_out and m.group(1) == snippet_out.group(1):
                        continue
                    if m.group(1) not in examples:
                        problems.append(f"{where}: `{m.group(0)}` names a file the tests do not render")
                for m in re.finditer(r"helm (?:install|upgrade --install|template) \S+ (\S+)", body):
                    if snippet_out and f"-f {snippet_out.group(1)}" in body[m.start():].split("\n")[0]:
                        continue
                    if m.group(1) not in ("helm/gleaner", "helm/examples/my-app"):
                        problems.append(f"{where}: `{m.group(0)}` installs a chart the tests do not render")
    missing = examples - used_examples
    if missing:
        problems.append("example values files shown nowhere in the READMEs: " + ", ".join(sorted(missing)))
    defined = re.findall(r'define "(gleaner\.[A-Za-z]+)"', open(os.path.join(CHART, "templates", "_gleaner.tpl")).read())
    for name in defined:
        if f"`{name}`" not in chart_readme:
            problems.append(f"the named template {name} is not documented in helm/gleaner/README.md")
    assert not problems, "\n".join(problems)
    return f"{counted} code blocks, {len(used_examples)} example files, {len(defined)} named templates"


# --------------------------------------------------------------------------------------------
def main() -> int:
    for run in CHECKS:
        run()
    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"chart: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
