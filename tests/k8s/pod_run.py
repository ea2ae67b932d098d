"""The Pod, run for real without a cluster.

For each case below, the chart is rendered with real Helm and the Pod template of the rendered
Deployment or StatefulSet is run the way the kubelet would run it, with local processes:

  * every container runs its `command` (or the image's ENTRYPOINT, /usr/local/bin/gleaner, which
    is $GLEANER_BIN here) with its `args` and its environment: `env` (the downward API's
    metadata.name and metadata.namespace filled in with the Pod's name and namespace, secretKeyRef
    from the case's stand-in Secrets), `envFrom`, and $(VAR) references expanded;
  * every volume mount is a directory under a temporary directory: an emptyDir is one directory,
    shared by the containers that mount it, as in the Pod; paths in args and env under a mount
    path are mapped to it;
  * run as root (as CI does), each process runs under the rendered runAsUser/runAsGroup with the
    Pod's fsGroup as supplementary group (setpriv), and the emptyDir is group-owned by the fsGroup
    and setgid, as the kubelet makes it;
  * start order: a native sidecar (an init container with restartPolicy Always) starts first,
    and the main containers start once its startupProbe (HTTP GET, as rendered) passes; classic
    containers start together. While running, the liveness probe's endpoint must answer 200;
  * stop order, as Kubernetes does it for the flavour: native, SIGTERM to the main containers,
    and to the sidecar only after they exited; classic, SIGTERM to all at once. Whatever still
    runs when the rendered terminationGracePeriodSeconds is over gets SIGKILL (and fails the case).

While the Pod runs, Gleaner's /metrics is scraped: gleaner_watch_capacity_bytes is the Pod's emptyDir
sizeLimit in bytes, read as Kubernetes reads the quantity (the binary parsed the flag the chart
rendered), next to gleaner_watch_bytes.

Then: every file the emitter completed (it prints each one's path) is in the outputs exactly once
(the last ones included), with the Pod's name as source id, nothing else is; no file is left in
the emptyDir (`--after delete`) and nothing had to be shipped as leftovers; every container
exited 0. Outputs and state go to a local directory, or to S3 on a moto server (the native-s3
example, as it is: only the endpoint and keys that IRSA would provide are added).

Prints one line per case and a summary; exits 1 if any case failed.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter

import yaml

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from common import CHART, PARENT, ROOT  # noqa: E402

GLEANER_BIN = os.path.abspath(os.environ.get("GLEANER_BIN", os.path.join(ROOT, "target", "debug", "gleaner")))
MOTO_SERVER = os.environ.get("MOTO_SERVER", os.path.join(ROOT, ".tools", "moto", "bin", "moto_server"))
RUN_SECONDS = float(os.environ.get("POD_RUN_SECONDS", "5"))
NAMESPACE = common.NAMESPACE
NODE = "node-1"  # the node every Pod runs on here (spec.nodeName)
# The image's USER (Dockerfile: USER 65532:65532): what a container of it runs as when neither its
# securityContext nor the Pod's sets runAsUser.
IMAGE_USER = (65532, 65532)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e).encode()


# ------------------------------------------------------------------------------------------------
class Moto:
    """moto's S3 server on a free 127.0.0.1 port, stopped by its PID."""

    def __init__(self, workdir: str):
        if not os.access(MOTO_SERVER, os.X_OK):
            raise AssertionError(f"{MOTO_SERVER} not found (tests/k8s/run.sh installs moto into .tools/moto)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(workdir, "moto.log"), "wb")
        self.proc = subprocess.Popen([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(150):
            if http_get(self.url + "/moto-api/", 1)[0]:
                return
            time.sleep(0.1)
        self.stop()
        raise AssertionError("moto did not start: " + open(self.log.name).read()[-2000:])

    def create_bucket(self, bucket: str) -> None:
        req = urllib.request.Request(f"{self.url}/{bucket}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status

    def objects(self, bucket: str, prefix: str) -> dict[str, bytes]:
        """Every object under prefix, read through the S3 API with boto3 (installed with moto, so
        run by moto's Python), signed as a client would (moto refuses anonymous reads)."""
        script = (
            "import base64, json, sys, boto3\n"
            "s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',"
            " aws_access_key_id='gleaner-test', aws_secret_access_key='gleaner-test')\n"
            "out = {}\n"
            "for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):\n"
            "    for o in page.get('Contents', []):\n"
            "        body = s3.get_object(Bucket=sys.argv[2], Key=o['Key'])['Body'].read()\n"
            "        out[o['Key']] = base64.b64encode(body).decode()\n"
            "print(json.dumps(out))\n"
        )
        python = os.path.join(os.path.dirname(MOTO_SERVER), "python")
        proc = subprocess.run([python, "-c", script, self.url, bucket, prefix], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {k: base64.b64decode(v) for k, v in json.loads(proc.stdout).items()}

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def stop_process(proc: subprocess.Popen, wait: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------
class Container:
    def __init__(self, spec: dict, sidecar: bool):
        self.spec = spec
        self.name = spec["name"]
        self.sidecar = sidecar
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self.killed = False
        self.exit_code: int | None = None
        self.log_path = ""

    def port(self, name_or_number) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        for p in self.spec.get("ports", []):
            if p.get("name") == name_or_number:
                return p["containerPort"]
        raise AssertionError(f"{self.name}: no port named {name_or_number}")

    def probe(self, kind: str) -> tuple[int, bytes]:
        probe = self.spec[kind]
        get = probe["httpGet"]
        return http_get(f"http://127.0.0.1:{self.port(get['port'])}{get['path']}", probe.get("timeoutSeconds", 1))


class Pod:
    """A rendered Pod template, run with local processes."""

    def __init__(self, workload: dict, template: dict, workdir: str, secrets: dict, injected_env: dict,
                 namespace: str = NAMESPACE, configmaps: dict | None = None):
        self.spec = template["spec"]
        self.labels = template.get("metadata", {}).get("labels", {})
        self.node = NODE
        self.namespace = namespace
        self.kind = workload["kind"]
        self.name = {"StatefulSet": f"{workload['metadata']['name']}-0",
                     "DaemonSet": f"{workload['metadata']['name']}-q8x2v"}.get(
            self.kind, f"{workload['metadata']['name']}-5d8f7c9b6d-x2k4q")
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        os.chmod(workdir, 0o755)
        self.secrets = secrets
        self.configmaps = configmaps or {}
        self.injected_env = injected_env
        self.grace = self.spec.get("terminationGracePeriodSeconds", 30)
        self.pod_sc = self.spec.get("securityContext", {})
        self.volumes: dict[str, str] = {}
        for vol in self.spec.get("volumes", []):
            path = os.path.join(workdir, "volumes", vol["name"])
            os.makedirs(path)
            if "configMap" in vol or "secret" in vol:
                # A ConfigMap's or Secret's keys as files (read-only data, readable by all), from
                # the case's stand-ins.
                source = self.configmaps if "configMap" in vol else self.secrets
                name = vol["configMap"]["name"] if "configMap" in vol else vol["secret"]["secretName"]
                assert name in source, f"volume {vol['name']}: {'ConfigMap' if 'configMap' in vol else 'Secret'} {name} does not exist"
                for key, value in source[name].items():
                    with open(os.path.join(path, key), "w", encoding="utf-8") as f:
                        f.write(value)
                    os.chmod(os.path.join(path, key), 0o644)
                os.chmod(path, 0o755)
                self.volumes[vol["name"]] = path
                continue
            assert "emptyDir" in vol, f"volume {vol['name']}: only emptyDir, configMap and secret volumes can stand in here"
            # The kubelet makes an emptyDir 0777, and with fsGroup group-owned and setgid.
            os.chmod(path, 0o777)
            if os.geteuid() == 0 and "fsGroup" in self.pod_sc:
                os.chown(path, 0, self.pod_sc["fsGroup"])
                os.chmod(path, 0o2777)
            self.volumes[vol["name"]] = path
        inits = self.spec.get("initContainers") or []
        for c in inits:
            assert c.get("restartPolicy") == "Always", f"init container {c['name']} is not a sidecar: not supported here"
        self.sidecars = [Container(c, True) for c in inits]
        self.mains = [Container(c, False) for c in self.spec["containers"]]
        self.native = bool(self.sidecars)

    def identity(self, c: Container) -> tuple[int, int, list[int]]:
        """(uid, gid, supplementary groups) of a container's processes, as the kubelet sets them:
        the container's securityContext over the Pod's, else the image's USER; fsGroup and
        supplementalGroups of the Pod added to every container."""
        sc = {**{k: v for k, v in self.pod_sc.items() if k in ("runAsUser", "runAsGroup")},
              **c.spec.get("securityContext", {})}
        uid = sc.get("runAsUser", IMAGE_USER[0])
        gid = sc.get("runAsGroup", IMAGE_USER[1] if "runAsUser" not in sc else uid)
        groups = ([self.pod_sc["fsGroup"]] if "fsGroup" in self.pod_sc else []) + list(
            self.pod_sc.get("supplementalGroups", []))
        return uid, gid, groups

    def as_identity(self, c: Container, argv: list[str]) -> list[str]:
        """argv run under the container's identity (setpriv; as root, as CI runs)."""
        if os.geteuid() != 0:
            return argv
        uid, gid, groups = self.identity(c)
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}",
                f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
                "--no-new-privs", "--"] + argv

    # -- the container's process, as the kubelet would start it ---------------------------------
    def mounts(self, c: Container) -> dict[str, str]:
        return {m["mountPath"]: self.volumes[m["name"]] for m in c.spec.get("volumeMounts", [])}

    def map_path(self, value: str, mounts: dict[str, str]) -> str:
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return mounts[mount_path] + value[len(mount_path):]
        return value

    def map_arg(self, arg: str, mounts: dict[str, str]) -> str:
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            return f"{flag}={self.map_path(value, mounts)}"
        return self.map_path(arg, mounts)

    def environment(self, c: Container, mounts: dict[str, str]) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOSTNAME": self.name, "HOME": "/"}
        env.update(self.injected_env)
        for src in c.spec.get("envFrom", []):
            if "configMapRef" in src:
                name = src["configMapRef"]["name"]
                assert name in self.configmaps, f"{c.name}: envFrom ConfigMap {name} does not exist"
                env.update({k: self.map_path(v, mounts) for k, v in self.configmaps[name].items()})
                continue
            name = src["secretRef"]["name"]
            assert name in self.secrets, f"{c.name}: envFrom Secret {name} does not exist"
            env.update(self.secrets[name])
        for var in c.spec.get("env", []):
            if "value" in var:
                env[var["name"]] = self.map_path(expand(var["value"], env), mounts)
                continue
            src = var["valueFrom"]
            if "fieldRef" in src:
                field = src["fieldRef"]["fieldPath"]
                label = re.fullmatch(r"metadata\.labels\['(.+)'\]", field)
                env[var["name"]] = self.labels.get(label.group(1), "") if label else {
                    "metadata.name": self.name, "metadata.namespace": self.namespace, "spec.nodeName": self.node}[field]
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                assert ref["name"] in self.secrets and ref["key"] in self.secrets[ref["name"]], \
                    f"{c.name}: Secret {ref['name']} has no key {ref['key']}"
                env[var["name"]] = self.secrets[ref["name"]][ref["key"]]
            else:
                raise AssertionError(f"{c.name}: env {var['name']}: {list(src)} not supported here")
        return env

    def start(self, c: Container) -> None:
        spec = c.spec
        assert spec["image"].startswith(common.IMAGE_REPOSITORY + ":"), spec["image"]
        mounts = self.mounts(c)
        env = self.environment(c, mounts)
        command = spec.get("command") or common.IMAGE_ENTRYPOINT
        argv = [expand(a, env) for a in command + spec.get("args", [])]
        argv = [self.map_arg(a, mounts) for a in argv]
        assert argv[0] == common.IMAGE_ENTRYPOINT[0], f"{c.name}: runs {argv[0]}, not the image's gleaner"
        argv[0] = self.binary
        argv = self.as_identity(c, argv)
        c.log_path = os.path.join(self.workdir, f"{c.name}.log")
        c.argv = argv
        c.env = env
        log = open(c.log_path, "wb")
        # The umask the image's entrypoint leaves (Kubernetes has no umask field): the runner's own
        # unless a case sets one.
        umask = getattr(c, "umask", None)
        c.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log, cwd="/",
                                  start_new_session=True,
                                  preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
        c.started = time.monotonic()

        def read_stdout():
            for line in c.proc.stdout:
                c.stdout_lines.append(line.decode("utf-8", "replace").rstrip("\n"))
        c.reader = threading.Thread(target=read_stdout, daemon=True)
        c.reader.start()

    def wait_started(self, c: Container) -> float:
        """The kubelet's startupProbe loop: every periodSeconds, up to failureThreshold attempts.
        Without a startup probe a container counts as started once its process runs."""
        if "startupProbe" not in c.spec:
            # Started once its process runs: the kubelet goes on to the next container, and
            # restarts a sidecar that exits (restartPolicy Always) without holding the others.
            return time.monotonic() - c.started
        probe = c.spec["startupProbe"]
        for attempt in range(probe.get("failureThreshold", 3)):
            if attempt:
                time.sleep(probe.get("periodSeconds", 10))
            assert c.proc.poll() is None, f"{c.name} exited with {c.proc.returncode} before its startup probe passed"
            status, _ = c.probe("startupProbe")
            if status == 200:
                return time.monotonic() - c.started
        raise AssertionError(f"{c.name}: the startup probe never passed")

    # -- the Pod's life ------------------------------------------------------------------------
    def start_all(self, binary: str) -> dict:
        """Starts the Pod's containers in the kubelet's order: each native sidecar, once the one
        before it started (its startup probe passed), then the main containers."""
        self.binary = binary
        report = {}
        for c in self.sidecars:
            self.start(c)
            report[f"{c.name} started" + (" (startup probe)" if "startupProbe" in c.spec else "")] = \
                f"{self.wait_started(c):.1f}s"
        for c in self.mains:
            self.start(c)
        for c in self.mains:
            if "startupProbe" in c.spec:
                report[f"{c.name} started (startup probe)"] = f"{self.wait_started(c):.1f}s"
        return report

    def check_running(self) -> None:
        for c in self.sidecars + self.mains:
            assert c.proc.poll() is None, f"{c.name} exited early with {c.proc.returncode}:\n{tail(c.log_path)}"
            if "livenessProbe" in c.spec:
                # As the kubelet: a restart after failureThreshold failures in a row (a container
                # without a startup probe is probed from its start, when it may not listen yet).
                status, body = c.probe("livenessProbe")
                c.liveness_failures = 0 if status == 200 else getattr(c, "liveness_failures", 0) + 1
                assert c.liveness_failures < c.spec["livenessProbe"].get("failureThreshold", 3), (
                    f"{c.name}: liveness probe failed {c.liveness_failures} times in a row, last {status}: {body[:200]!r}")

    def run(self, binary: str, while_running=None) -> dict:
        """Runs the Pod for RUN_SECONDS, calls while_running() (if given) once its time is up,
        before the Pod is stopped, and stops it."""
        return run_pods([self], binary, while_running)[0]

    def terminate(self) -> dict:
        t0 = time.monotonic()
        deadline = t0 + self.grace
        report = {}

        def wait_all(containers):
            for c in containers:
                remaining = deadline - time.monotonic()
                try:
                    c.proc.wait(max(remaining, 0))
                except subprocess.TimeoutExpired:
                    pass

        if self.native:
            for c in self.mains:
                c.proc.send_signal(signal.SIGTERM)
            wait_all(self.mains)
            report["main containers stopped"] = f"{time.monotonic() - t0:.1f}s"
            for c in reversed(self.sidecars):
                if c.proc.poll() is None:
                    c.proc.send_signal(signal.SIGTERM)
            wait_all(self.sidecars)
        else:
            for c in self.mains:
                c.proc.send_signal(signal.SIGTERM)
            wait_all(self.mains)
        for c in self.sidecars + self.mains:
            if c.proc.poll() is None:
                c.killed = True
                os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
            c.reader.join(5)
            c.exit_code = c.proc.returncode
        report["Pod stopped"] = f"{time.monotonic() - t0:.1f}s of a {self.grace}s grace period"
        return report


    def kill_all(self) -> None:
        """After a failed case: no process of the Pod outlives the test."""
        for c in self.sidecars + self.mains:
            if c.proc is not None and c.proc.poll() is None:
                os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait()


def run_pods(pods: list[Pod], binary: str, while_running=None) -> list[dict]:
    """Runs several Pods at once (each as Pod.run would): all started, RUN_SECONDS of running
    with their liveness probes checked, while_running() (its report goes to the first Pod's),
    then all stopped together, each in its own Kubernetes order."""
    reports = [pod.start_all(binary) for pod in pods]
    end = time.monotonic() + RUN_SECONDS
    while time.monotonic() < end:
        for pod in pods:
            pod.check_running()
        time.sleep(1)
    if while_running:
        reports[0].update(while_running())
    stopped: list[dict | BaseException] = [{} for _ in pods]

    def stop(i):
        try:
            stopped[i] = pods[i].terminate()
        except BaseException as e:  # noqa: BLE001 (reported below)
            stopped[i] = e
    threads = [threading.Thread(target=stop, args=(i,)) for i in range(len(pods))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for report, result in zip(reports, stopped):
        if isinstance(result, BaseException):
            raise result
        report.update(result)
    return reports


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ is a literal $)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-lines:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
def setting(pod: Pod, c: Container, flag: str, env_name: str) -> str | None:
    """A setting of `gleaner run` as its container gets it: its `--flag=value` argument, else the
    environment variable (flags win over the environment, as in Gleaner)."""
    for arg in c.spec.get("args", []):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return pod.environment(c, pod.mounts(c)).get(env_name)


def gleaner_container(pod: Pod) -> Container:
    return next(c for c in pod.sidecars + pod.mains if (c.spec.get("args") or [None])[0] == "run")


def emitter_container(pod: Pod) -> Container:
    return next(c for c in pod.mains if (c.spec.get("args") or [None])[0] == "emit")


def read_results(objects: dict[str, bytes]) -> list[dict]:
    lines = []
    for key, body in sorted(objects.items()):
        if key.endswith(".gz"):
            body = gzip.decompress(body)
        for line in body.decode("utf-8").splitlines():
            if line.strip():
                lines.append({**json.loads(line), "_object": key})
    return lines


def local_objects(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def metric_value(exposition: str, name: str) -> float | None:
    for line in exposition.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return None


def check_capacity_metrics(pod: Pod, gleaner: Container) -> dict:
    """gleaner_watch_capacity_bytes, scraped from the running Gleaner, is its emptyDir's sizeLimit."""
    status, body = http_get(f"http://127.0.0.1:{gleaner.port(gleaner.spec['ports'][0]['name'])}/metrics", 5)
    assert status == 200, f"/metrics answered {status}: {body[:200]!r}"
    exposition = body.decode("utf-8", "replace")
    mount = gleaner.spec["volumeMounts"][0]["name"]
    volume = next(v for v in pod.spec["volumes"] if v["name"] == mount)
    limit = common.quantity_bytes(volume["emptyDir"]["sizeLimit"])
    capacity = metric_value(exposition, "gleaner_watch_capacity_bytes")
    used = metric_value(exposition, "gleaner_watch_bytes")
    assert capacity == limit, (f"gleaner_watch_capacity_bytes is {capacity}, but the emptyDir's sizeLimit "
                               f"{volume['emptyDir']['sizeLimit']} is {limit} bytes")
    assert used is not None and 0 < used < limit, f"gleaner_watch_bytes is {used}"
    return {"gleaner_watch_capacity_bytes": f"{capacity:.0f} (sizeLimit {volume['emptyDir']['sizeLimit']})",
            "gleaner_watch_bytes": f"{used:.0f}"}


RUNBOOKS = os.path.join(ROOT, "docs", "runbooks.md")
# A `kubectl exec` into the Gleaner container, as docs/runbooks.md writes them.
EXEC_IN_GLEANER = re.compile(r"^kubectl\b.*?\bexec\s+POD\s+-c\s+gleaner\s+--\s+(.+?)\s*(?:#.*)?$")


def runbook_commands() -> list[str]:
    """Every command the runbooks run in the Gleaner container (`kubectl … exec POD -c gleaner --
    COMMAND`), once each, in the order they first appear."""
    text = open(RUNBOOKS, encoding="utf-8").read()
    found: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang in ("sh", "bash", "console"):
            for line in body.splitlines():
                m = EXEC_IN_GLEANER.match(line.strip())
                if m and m.group(1) not in found:
                    found.append(m.group(1))
    return found


def check_runbook_commands(pod: Pod, gleaner: Container) -> dict:
    """Runs every runbook command of the Gleaner container the way `kubectl exec` runs it: in the
    running container, with its environment as the kubelet made it, as its user, from /. The
    image holds nothing but the gleaner binary (no shell), so that is all a command can run."""
    commands = runbook_commands()
    assert commands, f"{RUNBOOKS} has no `kubectl exec POD -c gleaner -- …` command (this check would prove nothing)"
    problems = []
    for command in commands:
        argv = shlex.split(command)
        if argv[0] != "gleaner":
            problems.append(f"`{command}`: the image has no {argv[0]}: it holds nothing but "
                            f"/usr/local/bin/gleaner (no shell)")
            continue
        proc = subprocess.run(pod.as_identity(gleaner, [pod.binary] + argv[1:]), env=gleaner.env, cwd="/",
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            problems.append(f"`{command}` exited with {proc.returncode} in the container's environment:\n"
                            f"{(proc.stdout + proc.stderr).strip()[-800:]}")
    assert not problems, "runbook commands that fail in the chart's container:\n" + "\n".join(problems)
    return {"runbook commands": f"{len(commands)} ran in the container's environment, each exit 0 "
                                f"({'; '.join(commands)})"}


def local_store(workdir: str) -> dict:
    """Directories outside the Pods' volumes standing in for the object store: {state, output} URLs."""
    store = os.path.join(workdir, "store")
    for sub in ("state", "results"):
        os.makedirs(os.path.join(store, sub), exist_ok=True)
        if os.geteuid() == 0:
            os.chown(os.path.join(store, sub), 65532, 65532)
    return {"state": f"file://{store}/state", "output": f"file://{store}/results"}


def stored_objects(output: str, moto: Moto | None) -> dict[str, bytes]:
    """Every object under the output location, keyed relative to it."""
    if output.startswith("s3://"):
        bucket, prefix = re.match(r"s3://([^/]+)/(.*)", output).groups()
        objects = moto.objects(bucket, prefix.rstrip("/") + "/")
        return {k[len(prefix.rstrip("/")) + 1:]: v for k, v in objects.items()}
    return local_objects(output[len("file://"):])


def check_pod(pod: Pod, objects: dict[str, bytes], source_id: str) -> tuple[list[str], list[str]]:
    """(problems, files emitted) of a Pod that ran: every container exited 0 within the grace
    period, every file its emitter completed is in the outputs of its source id exactly once (the
    last ones included) and nothing else is, nothing was left or shipped raw, and with --after
    delete the emptyDir is empty."""
    gleaner = gleaner_container(pod)
    emitter = emitter_container(pod)
    problems = []
    for c in pod.sidecars + pod.mains:
        if c.killed:
            problems.append(f"{c.name} was still running after the grace period ({pod.grace}s): SIGKILLed")
        elif c.exit_code != 0:
            problems.append(f"{c.name} exited with {c.exit_code}")
    emitted = [line for line in emitter.stdout_lines if line]
    if len(emitted) < 3:
        problems.append(f"the emitter completed only {len(emitted)} files in {RUN_SECONDS}s")
    leftovers = [k for k in objects if k.startswith(".leftovers/")]
    if leftovers:
        problems.append(f"files were left and shipped raw: {leftovers[:5]}")
    results = read_results({k: v for k, v in objects.items()
                            if not k.startswith(".leftovers/") and k.startswith(source_id + "/")})
    counts = Counter(r["path"] for r in results)
    missing = [p for p in emitted if counts[p] == 0]
    twice = sorted(p for p, n in counts.items() if n > 1)
    unknown = sorted(set(counts) - set(emitted))
    if missing:
        problems.append(f"{len(missing)} of {len(emitted)} emitted files are in no output of source id "
                        f"{source_id}: {missing[:5]}"
                        + (" (the last one included)" if emitted and emitted[-1] in missing else ""))
    if twice:
        problems.append(f"files in the outputs more than once: {twice[:5]}")
    if unknown:
        problems.append(f"outputs for files the emitter did not report: {unknown[:5]}")
    errors = [r for r in results if "error" in r]
    if errors:
        problems.append(f"{len(errors)} files failed: {errors[:2]}")
    # The chart's default labels, from the downward API, in every line.
    labels = {"pod": pod.name, "namespace": pod.namespace, "node": pod.node}
    unlabelled = [r for r in results if {k: r.get("labels", {}).get(k) for k in labels} != labels]
    if unlabelled:
        problems.append(f"{len(unlabelled)} lines without the labels {labels}: {unlabelled[:1]}")
    wrong_source = {r["source_id"] for r in results} - {source_id}
    if wrong_source:
        problems.append(f"source ids {wrong_source} under <output>/{source_id}/")
    watch = pod.volumes[gleaner.spec["volumeMounts"][0]["name"]]
    left = [os.path.relpath(os.path.join(d, f), watch) for d, _, fs in os.walk(watch) for f in fs
            if not f.startswith(".gleaner-root")]
    if setting(pod, gleaner, "--after", "GLEANER_AFTER") == "delete" and left:
        problems.append(f"files left in the emptyDir despite --after delete: {left[:5]}")
    return problems, emitted


def pod_logs(pod: Pod) -> str:
    return "\n".join(f"--- {pod.namespace}/{pod.name} {c.name} ({' '.join(getattr(c, 'argv', []))})\n"
                     f"{tail(c.log_path)}" for c in pod.sidecars + pod.mains)


def run_and_check(pods: list[Pod], binary: str, output: str, moto: Moto | None = None,
                  source_ids: list[str] | None = None, while_running=None) -> str:
    """Runs the Pods at once, stops them, and checks each against the outputs (check_pod). The
    source id each Pod's results must carry: source_ids, else the chart's default,
    `<namespace>.<Pod name>`."""
    try:
        reports = run_pods(pods, binary, while_running)
        objects = stored_objects(output, moto)
    finally:
        for pod in pods:
            pod.kill_all()
    problems, details = [], []
    for i, pod in enumerate(pods):
        source_id = source_ids[i] if source_ids else f"{pod.namespace}.{pod.name}"
        found, emitted = check_pod(pod, objects, source_id)
        if found:
            problems += [f"{pod.namespace}/{pod.name}: {p}" for p in found] + [pod_logs(pod)]
            continue
        timing = ", ".join(f"{k} {v}" for k, v in reports[i].items())
        details.append(f"{pod.namespace}/{pod.name} ({'native' if pod.native else 'classic'}, source id "
                       f"{source_id}): {len(emitted)} files emitted, each in the outputs once "
                       f"(last: {emitted[-1]}); {timing}")
    if problems:
        raise AssertionError("\n".join(problems))
    return "; ".join(details)


def chart_pod(case: common.Case, workdir: str, values: dict, secrets: dict | None = None,
              injected: dict | None = None, namespace: str = NAMESPACE, configmaps: dict | None = None) -> Pod:
    """The Pod of a chart rendering (values over the case's; under `gleaner:` for the parent
    chart), with a metrics port of its own (each Pod has its own network namespace)."""
    values = common.deep_merge({"metrics": {"port": free_port()}}, values)
    extra = {"gleaner": values} if case.chart == "my-app" else values
    objs = common.objects(common.render(case, extra, namespace=namespace))
    workload, template = common.workload_pod(objs)
    return Pod(workload, template, workdir, secrets or {}, injected if injected is not None else {},
               namespace=namespace, configmaps=configmaps)


# Stand-ins for the objects examples/platform.yaml and the platform renderings refer to.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PLATFORM_CONFIGMAPS = {"private-ca": {"ca-certificates.crt": open(SYSTEM_CA_BUNDLE, encoding="utf-8").read()
                                      if os.path.exists(SYSTEM_CA_BUNDLE) else ""}}
PLATFORM_SECRETS = {"minio-credentials": {"AWS_ACCESS_KEY_ID": "gleaner-test", "AWS_SECRET_ACCESS_KEY": "gleaner-test"}}


def run_chart_case(case: common.Case, storage: str, binary: str, workdir: str) -> str:
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    injected: dict[str, str] = {}
    values = {"run": local_store(workdir)} if storage == "local" else {}
    pod = chart_pod(case, os.path.join(workdir, "pod"), values, injected=injected, secrets=PLATFORM_SECRETS,
                    configmaps=PLATFORM_CONFIGMAPS)
    gleaner = gleaner_container(pod)
    output = setting(pod, gleaner, "--output", "GLEANER_OUTPUT")
    moto = None
    try:
        if storage == "s3":
            moto = Moto(workdir)
            moto.create_bucket(re.match(r"s3://([^/]+)/", output).group(1))
            # What IRSA provides in the cluster (web identity credentials), and where S3 is.
            injected.update({"AWS_ENDPOINT": moto.url, "AWS_ALLOW_HTTP": "true",
                             "AWS_ACCESS_KEY_ID": "gleaner-test", "AWS_SECRET_ACCESS_KEY": "gleaner-test"})
        def while_running():
            return {**check_capacity_metrics(pod, gleaner), **check_runbook_commands(pod, gleaner)}
        # The source id as the container gets it (clusterName in front, when set).
        source_id = setting(pod, gleaner, "--source-id", "GLEANER_SOURCE_ID")
        return f"{storage}: " + run_and_check([pod], binary, output, moto, source_ids=[source_id],
                                              while_running=while_running)
    finally:
        if moto:
            moto.stop()


def run_two_namespaces(binary: str, workdir: str) -> str:
    """Two releases of the example as a StatefulSet, one per namespace, same release name (so the
    same StatefulSet and Pod names), one state and output prefix, run at the same time: the
    default source ids (`<namespace>.<Pod name>`) keep them apart, so neither fences the other off
    and each Pod's files are in the outputs once, under its own source id."""
    os.makedirs(workdir)
    store = local_store(workdir)
    case = common.Case("two-namespaces", "gleaner", None, {"mode": "example", "example": {"kind": "StatefulSet"}})
    pods = [chart_pod(case, os.path.join(workdir, ns), {"run": store}, namespace=ns) for ns in ("team-a", "team-b")]
    assert pods[0].name == pods[1].name, (pods[0].name, pods[1].name)
    return run_and_check(pods, binary, store["output"], source_ids=[f"{p.namespace}.{p.name}" for p in pods])


def run_kustomized(binary: str, workdir: str) -> str:
    """deploy/kustomize (the component added by name to a third-party Deployment and
    StatefulSet), built by the real `kubectl kustomize`: both Pods run at once, as built (settings
    from the generated ConfigMap, state and results in S3 on moto)."""
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    proc = subprocess.run([os.environ.get("KUBECTL", "kubectl"), "kustomize", os.path.join(ROOT, "deploy", "kustomize")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    moto = Moto(workdir)
    try:
        injected = {"AWS_ENDPOINT": moto.url, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                    "AWS_ACCESS_KEY_ID": "gleaner-test", "AWS_SECRET_ACCESS_KEY": "gleaner-test"}
        pods = []
        for kind, name in (("Deployment", "web"), ("StatefulSet", "db")):
            w = next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
            pods.append(Pod(w, w["spec"]["template"], os.path.join(workdir, name), {}, injected,
                            configmaps=configmaps))
        for pod in pods:  # each Pod has its own network namespace: its own metrics port here
            g = gleaner_container(pod)
            port = free_port()
            g.spec["ports"][0]["containerPort"] = port
            cm = next(src["configMapRef"]["name"] for src in g.spec["envFrom"])
            pod.configmaps = {**pod.configmaps, cm: {**configmaps[cm], "GLEANER_METRICS_ADDR": f"0.0.0.0:{port}"}}
        output = configmaps[next(src["configMapRef"]["name"] for src in gleaner_container(pods[0]).spec["envFrom"])][
            "GLEANER_OUTPUT"]
        moto.create_bucket(re.match(r"s3://([^/]+)/", output).group(1))
        return run_and_check(pods, binary, output, moto,
                             while_running=lambda: check_runbook_commands(pods[0], gleaner_container(pods[0])))
    finally:
        moto.stop()


def run_snippet(binary: str, workdir: str) -> str:
    """`mode: snippet`'s values fed to a third-party-style chart (tests/k8s/fixtures/third-party-chart,
    extraInitContainers, extraVolumes, extraVolumeMounts, ...): its Pod runs with Gleaner."""
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    store = local_store(workdir)
    values = common.deep_merge(common.SNIPPET, {"run": store, "metrics": {"port": free_port()}})
    out = common.render(common.Case("snippet", "gleaner", None, values))
    doc = next(d for d in yaml.safe_load_all(common.manifests_text(out)) if d)
    import helm_python as helm
    with helm.Chart.load(os.path.join(ROOT, "tests", "k8s", "fixtures", "third-party-chart")) as chart:
        objs = common.objects(chart.render(doc, name="web", namespace=NAMESPACE))
    workload, template = common.workload_pod(objs)
    pod = Pod(workload, template, os.path.join(workdir, "pod"), {}, {})
    return run_and_check([pod], binary, store["output"],
                         while_running=lambda: check_runbook_commands(pod, gleaner_container(pod)))


def run_uid_contract(binary: str, workdir: str) -> str:
    """The uid contract in my-app's Pod, with an application that has an identity of its own (uid
    and gid 1000, as its image's USER would give it; the chart sets none for it) writing into
    subdirectories of the shared volume. Umask 022 (directories 0755): Gleaner, uid 65532 in the
    fsGroup, commits every file once but may not delete them; it says why in its log (uid, groups,
    the directory, umask 002) and counts gleaner_cleanup_total{result="permission_denied"}. Umask
    002 (directories 0775): every file committed once and deleted, nothing refused."""
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    report = []
    for umask in (0o022, 0o002):
        sub = os.path.join(workdir, f"umask-{umask:03o}")
        os.makedirs(sub)
        os.chmod(sub, 0o755)
        store = local_store(sub)
        pod = chart_pod(common.Case("my-app", "my-app"), os.path.join(sub, "pod"), {"run": store})
        app = emitter_container(pod)
        assert "securityContext" not in app.spec and "runAsUser" not in pod.pod_sc, \
            "my-app's app container must get no identity from the chart"
        app.spec = {**app.spec, "securityContext": {"runAsUser": 1000, "runAsGroup": 1000}}
        app.umask = umask
        gleaner = gleaner_container(pod)
        denied = {}

        def scrape():
            # Files are ready after run.minAge (5 s) and cleaned up after their commit: with umask
            # 022, wait (up to 20 s) for the first refusal to be counted.
            deadline = time.monotonic() + (20 if umask == 0o022 else 0)
            while True:
                status, body = http_get(f"http://127.0.0.1:{gleaner.port(gleaner.spec['ports'][0]['name'])}/metrics", 5)
                assert status == 200, status
                text = body.decode("utf-8", "replace")
                denied["count"] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                                      if line.startswith("gleaner_cleanup_total{") and 'result="permission_denied"' in line)
                done = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("gleaner_cleanup_total{") and 'result="done"' in line)
                denied["done"] = done
                if denied["count"] > 0 or time.monotonic() > deadline:
                    return {}
                time.sleep(1)
        try:
            run_pods([pod], binary, scrape)
            objects = stored_objects(store["output"], None)
        finally:
            pod.kill_all()
        problems, emitted = check_pod(pod, objects, f"{pod.namespace}.{pod.name}")
        log = open(gleaner.log_path, encoding="utf-8", errors="replace").read()
        left = [p for p in problems if p.startswith("files left in the emptyDir despite --after delete")]
        others = [p for p in problems if p not in left]
        assert not others, f"umask {umask:03o}: " + "\n".join(others) + "\n" + pod_logs(pod)
        if umask == 0o022:
            assert left and denied.get("count", 0) > 0, (
                f"umask 022: expected refused deletes, got {problems}, permission_denied {denied}")
            assert "uid 65532" in log and "umask 002" in log and "groups [" in log, \
                f"umask 022: the log does not explain the refused delete:\n{tail(gleaner.log_path)}"
            report.append(f"umask 022: {len(emitted)} files each in the outputs once, deletes refused "
                          f"(gleaner_cleanup_total{{result=\"permission_denied\"}} {denied['count']:.0f}, the log "
                          f"names uid 65532, its groups and umask 002)")
        else:
            assert not left and denied.get("count", 0) == 0, f"umask 002: {problems}, permission_denied {denied}"
            report.append(f"umask 002: {len(emitted)} files each in the outputs once and deleted, none refused")
    return "app as uid 1000: " + "; ".join(report)


def run_gate(binary: str, workdir: str) -> str:
    """sidecar.gateAppStart, both ways, with a Gleaner that cannot start (an unknown flag: exit 2,
    as a misconfigured or fenced one exits): gated (the default), the kubelet never starts the
    application (Gleaner's startup probe never passes); not gated, the application starts and
    writes its files while Gleaner fails."""
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    store = local_store(workdir)
    report = []
    for gate_value in (True, False):
        case = common.Case(f"gate {gate_value}", "gleaner", None, {
            "mode": "example", "kubernetesVersion": "1.30", "run": {**store, "extraArgs": ["--no-such-flag"]},
            "sidecar": {"gateAppStart": gate_value}})
        pod = chart_pod(case, os.path.join(workdir, f"gate-{gate_value}"), {})
        emitter = emitter_container(pod)
        try:
            started_error = None
            try:
                pod.start_all(binary)
            except AssertionError as e:
                started_error = str(e)
            time.sleep(3)
            written = len([l for l in emitter.stdout_lines if l])
            if gate_value:
                assert started_error is not None and emitter.proc is None, (
                    f"gated: the application started although Gleaner failed ({written} files written)")
                report.append(f"gated: application not started ({started_error.splitlines()[0]})")
            else:
                assert started_error is None and emitter.proc is not None and written > 0, (
                    f"not gated: the application did not run ({started_error}, {written} files)")
                g = gleaner_container(pod)
                report.append(f"not gated: application started, {written} files written while Gleaner exited "
                              f"{g.proc.poll()}")
        finally:
            for c in pod.sidecars + pod.mains:
                if c.proc is not None and c.proc.poll() is None:
                    os.killpg(c.proc.pid, signal.SIGKILL)
                    c.proc.wait()
    return "; ".join(report)


def main() -> int:
    if not os.access(GLEANER_BIN, os.X_OK):
        print(f"FAIL  pod-run: GLEANER_BIN {GLEANER_BIN} is not an executable (build it, or set GLEANER_BIN)")
        print("pod: 0 passed, 1 failed")
        return 1
    base = tempfile.mkdtemp(prefix="gleaner-pod-")
    os.chmod(base, 0o755)
    # A copy, so that a rebuild while the test runs does not swap the binary under it, readable by
    # the Pod's uid.
    binary = os.path.join(base, "gleaner")
    shutil.copy2(GLEANER_BIN, binary)
    os.chmod(binary, 0o755)
    examples = os.path.join(CHART, "examples")
    runs = [
        ("native-s3 on moto", lambda d: run_chart_case(
            common.Case("native-s3", "gleaner", os.path.join(examples, "native-s3.yaml")), "s3", binary, d)),
        ("classic", lambda d: run_chart_case(
            common.Case("classic", "gleaner", os.path.join(examples, "classic.yaml")), "local", binary, d)),
        ("my-app (named templates)", lambda d: run_chart_case(common.Case("my-app", "my-app"), "local", binary, d)),
        ("two namespaces, one StatefulSet name, one state prefix", lambda d: run_two_namespaces(binary, d)),
        ("platform values (examples/platform.yaml)", lambda d: run_chart_case(
            common.Case("platform", "gleaner", os.path.join(examples, "platform.yaml")), "local", binary, d)),
        ("my-app with the platform values (library mode)", lambda d: run_chart_case(
            common.Case("my-app-platform", "my-app", overrides={"gleaner": common.LIBRARY_PLATFORM}), "local", binary, d)),
        ("kustomize component on a third-party Deployment and StatefulSet", lambda d: run_kustomized(binary, d)),
        ("snippet in a third-party chart's extraInitContainers", lambda d: run_snippet(binary, d)),
        ("gateAppStart, both ways, Gleaner failing", lambda d: run_gate(binary, d)),
        ("uid contract: the app with its own uid, umask 022 and 002", lambda d: run_uid_contract(binary, d)),
    ]
    only = os.environ.get("POD_RUN_ONLY")
    passed = failed = 0
    for i, (name, run) in enumerate(runs):
        if only and only not in name:
            continue
        started = time.monotonic()
        try:
            detail = run(os.path.join(base, f"case{i}"))
            print(f"ok    pod-run {name}  ({time.monotonic() - started:.0f}s) {detail}", flush=True)
            passed += 1
        except Exception as e:
            text = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            print(f"FAIL  pod-run {name}\n" + "\n".join("      " + l for l in text.splitlines()), flush=True)
            failed += 1
    if failed == 0:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"      (processes' logs and volumes kept in {base})")
    print(f"pod: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
