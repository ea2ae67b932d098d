"""Shared by the chart tests: where things are, and rendering with the real Helm (helm-python-sdk).

Every rendered case is listed in CASES: the chart's example values files (helm/gleaner/examples/,
found by glob, so a new example is tested at once), the chart's defaults, and the parent chart
helm/examples/my-app, which uses the named templates through a file:// dependency.
"""

from __future__ import annotations

import atexit
import copy
import glob
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

import helm_python as helm
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "helm", "gleaner")
PARENT = os.path.join(ROOT, "helm", "examples", "my-app")
GOLDEN = os.path.join(ROOT, "tests", "k8s", "golden")
RELEASE = "demo"
NAMESPACE = "default"
# The image's ENTRYPOINT: a container without `command` runs it (see the Dockerfile).
IMAGE_ENTRYPOINT = ["/usr/local/bin/gleaner"]
IMAGE_REPOSITORY = "ghcr.io/gleaner-dev/gleaner"


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's coalescing of values files, for plain dictionaries: override wins, maps merge."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


@dataclass
class Case:
    """One rendering: a chart (this one, or the parent chart) with a values file and overrides."""

    name: str
    chart: str  # "gleaner" or "my-app"
    values_file: str | None = None
    overrides: dict = field(default_factory=dict)

    def values(self) -> dict:
        values = load_yaml(self.values_file) if self.values_file else {}
        return deep_merge(values, self.overrides)

    def flavour(self) -> str:
        """The sidecar flavour the rendering uses (its values over the chart's defaults)."""
        defaults = load_yaml(os.path.join(CHART, "values.yaml"))
        values = self.values()
        if self.chart == "my-app":
            parent = load_yaml(os.path.join(PARENT, "values.yaml"))
            values = deep_merge(parent, values).get("gleaner", {})
        merged = deep_merge(defaults, values)
        if merged["mode"] == "cronjob":
            return "none"
        return merged["sidecar"]["flavour"]


def cases() -> list[Case]:
    found = [
        Case(os.path.splitext(os.path.basename(path))[0], "gleaner", path)
        for path in sorted(glob.glob(os.path.join(CHART, "examples", "*.yaml")))
    ]
    found.append(Case("defaults", "gleaner"))
    found.append(Case("my-app", "my-app"))
    found.append(Case("my-app-classic", "my-app", overrides={
        "gleaner": {"kubernetesVersion": "1.27", "sidecar": {"flavour": "classic"}}}))
    # In library mode the chart renders the monitoring alone: the PodMonitor for the parent's Pods,
    # the PrometheusRules and the dashboard ConfigMap (read from the subchart's files/), here with
    # the placeholder Grafana URL left as it is.
    found.append(Case("my-app-monitoring", "my-app", overrides={
        "gleaner": {"podMonitor": {"enabled": True, "podSelector": {"app.kubernetes.io/name": "my-app"}},
                    "prometheusRule": {"enabled": True},
                    "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                                         "annotations": {"grafana_folder": "Gleaner"}}}}))
    # The Pod-level values of the peers' charts in library mode, where the parent chart takes what
    # concerns Gleaner through the named templates (examples/platform.yaml and
    # examples/cronjob-rwo.yaml hold them for the example and cronjob modes).
    found.append(Case("my-app-platform", "my-app", overrides={"gleaner": LIBRARY_PLATFORM}))
    return found


LIBRARY_PLATFORM = {
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "podAnnotations": {"team.example.com/owner": "platform"},
    "podLabels": {"team.example.com/cost-center": "4711"},
    "extraVolumes": [{"name": "private-ca", "configMap": {"name": "private-ca"}}],
    "extraVolumeMounts": [{"name": "private-ca", "mountPath": "/etc/gleaner/ca", "readOnly": True}],
    "podMonitor": {"enabled": True, "podSelector": {"app.kubernetes.io/name": "my-app"},
                   "scrapeTimeout": "10s", "additionalLabels": {"release": "kube-prometheus-stack"},
                   "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
                   "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "gleaner_build_info",
                                          "action": "drop"}]},
    "networkPolicy": {"enabled": True, "podSelector": {"app.kubernetes.io/name": "my-app"}},
}

# Gleaner as values for another chart's extraInitContainers, extraVolumes, extraVolumeMounts (the
# example values file, also a rendering of its own: examples/snippet.yaml).
SNIPPET = load_yaml(os.path.join(CHART, "examples", "snippet.yaml"))


_parent_copy: str | None = None


def parent_chart_dir() -> str:
    """A copy of helm/examples/my-app with its file:// dependency built (`helm dependency build`),
    made once per run in a temporary directory, so that nothing is written into the repository."""
    global _parent_copy
    if _parent_copy is None:
        tmp = tempfile.mkdtemp(prefix="gleaner-my-app-")
        atexit.register(shutil.rmtree, tmp, True)
        # The dependency is ../../gleaner relative to the parent chart: keep that layout.
        shutil.copytree(CHART, os.path.join(tmp, "helm", "gleaner"))
        shutil.copytree(PARENT, os.path.join(tmp, "helm", "examples", "my-app"))
        _parent_copy = os.path.join(tmp, "helm", "examples", "my-app")
        helm.dependency_build(_parent_copy)
    return _parent_copy


_aliased_copy: str | None = None
ALIAS = "collector"


def aliased_parent_dir() -> str:
    """A parent chart with nothing but this chart as a dependency under the alias `collector`
    (its values then live under `collector:`, and Helm names the subchart `collector`), next to
    the copy of parent_chart_dir(), dependency built."""
    global _aliased_copy
    if _aliased_copy is None:
        root = os.path.dirname(os.path.dirname(parent_chart_dir()))  # <tmp>/helm
        path = os.path.join(root, "examples", "aliased")
        os.makedirs(path)
        with open(os.path.join(path, "Chart.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump({"apiVersion": "v2", "name": "aliased", "version": "0.1.0", "dependencies": [
                {"name": "gleaner", "version": "0.1.0", "repository": "file://../../gleaner", "alias": ALIAS}]}, f)
        helm.dependency_build(path)
        _aliased_copy = path
    return _aliased_copy


_values_only_copy: str | None = None
VALUES_ONLY_POD = """apiVersion: v1
kind: Pod
metadata:
  name: legacy
spec:
  terminationGracePeriodSeconds: {{ include "gleaner.terminationGracePeriodSeconds" .Values.gleaner }}
  initContainers:
    {{- include "gleaner.initContainers" .Values.gleaner | nindent 4 }}
  containers:
    - name: app
      image: ghcr.io/gleaner-dev/gleaner:0.1.0
      volumeMounts:
        {{- include "gleaner.volumeMounts" .Values.gleaner | nindent 8 }}
  volumes:
    {{- include "gleaner.volumes" .Values.gleaner | nindent 4 }}
"""


def values_only_parent_dir() -> str:
    """A parent chart that passes the named templates its `.Values.gleaner` alone, as parent
    charts written before the templates took the capabilities too (a Pod with the sidecar)."""
    global _values_only_copy
    if _values_only_copy is None:
        root = os.path.dirname(os.path.dirname(parent_chart_dir()))  # <tmp>/helm
        path = os.path.join(root, "examples", "values-only")
        os.makedirs(os.path.join(path, "templates"))
        with open(os.path.join(path, "Chart.yaml"), "w", encoding="utf-8") as f:
            yaml.safe_dump({"apiVersion": "v2", "name": "values-only", "version": "0.1.0", "dependencies": [
                {"name": "gleaner", "version": "0.1.0", "repository": "file://../../gleaner"}]}, f)
        with open(os.path.join(path, "templates", "pod.yaml"), "w", encoding="utf-8") as f:
            f.write(VALUES_ONLY_POD)
        helm.dependency_build(path)
        _values_only_copy = path
    return _values_only_copy


def render_values_only(values: dict) -> dict[str, str]:
    """Renders values_only_parent_dir() with these values (the subchart's under `gleaner:`)."""
    with helm.Chart.load(values_only_parent_dir()) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def render_aliased(values: dict) -> dict[str, str]:
    """Renders aliased_parent_dir() with these values (the subchart's under `collector:`)."""
    with helm.Chart.load(aliased_parent_dir()) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def chart_dir(case: Case) -> str:
    return CHART if case.chart == "gleaner" else parent_chart_dir()


def render(case: Case, extra: dict | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    """{template path: text} as Helm renders it (NOTES.txt included); raises on a failed render."""
    values = deep_merge(case.values(), extra or {})
    with helm.Chart.load(chart_dir(case)) as chart:
        return chart.render(values, name=RELEASE, namespace=namespace)


def manifests_text(rendered: dict[str, str]) -> str:
    """The manifests as `helm template` prints them: one `# Source:` document per template."""
    docs = []
    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        # Trailing spaces left by `nindent` of an empty include are dropped; YAML ignores them.
        body = "\n".join(line.rstrip() for line in text.strip("\n").splitlines())
        docs.append(f"---\n# Source: {path}\n{body}\n")
    return "".join(docs)


def notes_text(rendered: dict[str, str]) -> str:
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            return text.strip("\n") + "\n"
    return ""


def objects(rendered: dict[str, str]) -> list[dict]:
    """The Kubernetes objects rendered (not `mode: snippet`'s values document, which is none)."""
    out = []
    rendered = {p: t for p, t in rendered.items() if not p.endswith("templates/snippet.yaml")}
    for doc in yaml.safe_load_all(manifests_text(rendered)):
        if doc:
            out.append(doc)
    return out


def workload_pod(objs: list[dict]) -> tuple[dict, dict]:
    """(the workload, its Pod template) of the one Deployment or StatefulSet rendered."""
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    if len(workloads) != 1:
        raise AssertionError(f"expected one Deployment or StatefulSet, found {len(workloads)}")
    return workloads[0], workloads[0]["spec"]["template"]


# A Kubernetes quantity's suffixes, as the API server reads them (apimachinery's
# resource.Quantity): binary and decimal multipliers of bytes. Written out here, apart from the
# chart's gleaner.bytes helper, so that the tests check the chart against Kubernetes.
QUANTITY_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}


def quantity_bytes(quantity) -> int:
    """A whole number of bytes written as a Kubernetes quantity (`1Gi`, `500M`, `1000000`)."""
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?", str(quantity))
    if not m:
        raise ValueError(f"{quantity!r} is not a whole Kubernetes quantity of bytes")
    return int(m.group(1)) * QUANTITY_SUFFIXES[m.group(2) or ""]


def pod_spec(obj: dict) -> dict | None:
    """The Pod spec of a workload object (Deployment, StatefulSet, DaemonSet, Job, CronJob), else None."""
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def error_text(exc: Exception) -> str:
    return re.sub(r"\s+", " ", str(exc))
