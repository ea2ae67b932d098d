"""What a platform team does with a published release, against the registry tests/release/run.sh
started: pull the image by digest and check it against the Dockerfile, pull and render the chart
from oci://, find the SBOM from the image and compare it with Cargo.lock, depend on the chart
from a parent chart by oci://.

    consumer.py REGISTRY REPOSITORY VERSION DIST_DIR WORK_DIR

Credentials come from the Docker config file in $DOCKER_CONFIG (as a consumer's would); the
registry speaks plain HTTP on 127.0.0.1. Prints one line per check with its figures; exits 1 at
the first failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import helm_python as helm
import yaml
from helm_python import registry

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "release"))
import oci  # noqa: E402  (release/oci.py: the same discovery a consumer's tool does)

REGISTRY, REPOSITORY, VERSION, DIST, WORK = sys.argv[1:6]
AUTH = os.path.join(os.environ["DOCKER_CONFIG"], "config.json")
IMAGE_REPO = f"{REGISTRY}/{REPOSITORY}/gleaner"
CHART_REF = f"oci://{REGISTRY}/{REPOSITORY}/charts/gleaner"
SKOPEO = [os.environ["SKOPEO"], "--policy", os.environ["SKOPEO_POLICY"]]
TARGET = "x86_64-unknown-linux-gnu"


def ok(what: str, figures: str) -> None:
    print(f"  ok  {what}: {figures}", flush=True)


def fail(message: str) -> None:
    print(f"release consumer FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(cond: bool, message: str) -> None:
    if not cond:
        fail(message)


def run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def dockerfile() -> dict:
    """The final stage of the Dockerfile: its COPY destinations, labels, USER, ENV, EXPOSE, …"""
    text = open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8").read().replace("\\\n", " ")
    final = text[text.index("FROM scratch"):]
    lines = [line.strip() for line in final.splitlines()]
    def instr(name: str) -> list[str]:
        return [line[len(name) + 1:].strip() for line in lines if line.startswith(name + " ")]
    return {
        "copies": sorted(c.split()[-1] for c in instr("COPY")),
        "labels": dict(re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"$]*)"', " ".join(instr("LABEL")))),
        "user": instr("USER")[0],
        "env": instr("ENV"),
        "expose": sorted(f"{p}/tcp" for p in " ".join(instr("EXPOSE")).split()),
        "entrypoint": json.loads(instr("ENTRYPOINT")[0]),
        "cmd": json.loads(instr("CMD")[0]),
    }


# --------------------------------------------------------------------------------------------
def image() -> tuple[str, str]:
    """The image, as the tag and by digest; returns (digest, unpacked rootfs)."""
    expected = open(os.path.join(DIST, f"gleaner-{VERSION}-image.digest")).read().strip()
    raw = run(*SKOPEO, "inspect", "--raw", "--authfile", AUTH, "--tls-verify=false",
              f"docker://{IMAGE_REPO}:{VERSION}")
    tag_digest = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    check(tag_digest == expected, f"{IMAGE_REPO}:{VERSION} is {tag_digest}, the release built {expected}")
    inspected = run(*SKOPEO, "inspect", "--format", "{{.Digest}}", "--authfile", AUTH, "--tls-verify=false",
                    f"docker://{IMAGE_REPO}:{VERSION}").strip()
    check(inspected == expected, f"skopeo inspect --format '{{{{.Digest}}}}' says {inspected}")
    ok("image tag", f"{IMAGE_REPO}:{VERSION} = {expected} (the manifest's SHA-256 and skopeo inspect's Digest), "
       "the digest release/release.sh built")

    layout = os.path.join(WORK, "pulled")
    run(*SKOPEO, "copy", "--quiet", "--authfile", AUTH, "--src-tls-verify=false",
        f"docker://{IMAGE_REPO}@{expected}", f"oci:{layout}:pulled")
    index = json.load(open(os.path.join(layout, "index.json")))
    check(index["manifests"][0]["digest"] == expected, f"pulled by digest, got {index['manifests'][0]['digest']}")
    bundle = os.path.join(WORK, "bundle")
    run(os.environ["UMOCI"], "unpack", "--image", f"{layout}:pulled", bundle)
    rootfs = os.path.join(bundle, "rootfs")
    manifest = json.load(open(os.path.join(layout, "blobs", *expected.split(":"))))
    config = json.load(open(os.path.join(layout, "blobs", *manifest["config"]["digest"].split(":"))))
    cfg = config["config"]

    want = dockerfile()
    files = sorted("/" + os.path.relpath(os.path.join(d, n), rootfs)
                   for d, _, names in os.walk(rootfs) for n in names)
    check(files == want["copies"], f"image files {files}, the Dockerfile copies {want['copies']}")
    binary = os.path.join(rootfs, "usr/local/bin/gleaner")
    check(os.stat(binary).st_mode & 0o777 == 0o755, "the binary is not mode 0755")
    check(all(os.lstat(os.path.join(rootfs, f.lstrip("/"))).st_uid == 0 for f in files), "files not owned by root")
    ok("image files", f"{len(files)} files, exactly the Dockerfile's COPYs ({', '.join(files)}), owned by root")

    labels = cfg.get("Labels") or {}
    for key, value in want["labels"].items():
        check(labels.get(key) == value, f"label {key}: {labels.get(key)!r}, the Dockerfile says {value!r}")
    check(labels.get("org.opencontainers.image.version") == VERSION, f"version label {labels.get('org.opencontainers.image.version')!r}")
    head = run("git", "-C", ROOT, "rev-parse", "HEAD").strip()
    check(labels.get("org.opencontainers.image.revision") == head,
          f"revision label {labels.get('org.opencontainers.image.revision')!r}, HEAD is {head}")
    ok("image labels", f"the Dockerfile's {len(want['labels'])} fixed labels, version {VERSION}, revision {head[:12]}")

    check(cfg.get("User") == want["user"], f"user {cfg.get('User')!r}, the Dockerfile says {want['user']!r}")
    check(not cfg["User"].startswith("0"), "the image runs as root")
    for env in want["env"]:
        check(env in cfg.get("Env", []), f"environment {cfg.get('Env')} lacks the Dockerfile's {env}")
    check(sorted(cfg.get("ExposedPorts", {})) == want["expose"], f"exposed {cfg.get('ExposedPorts')}")
    check(cfg.get("Entrypoint") == want["entrypoint"] and cfg.get("Cmd") == want["cmd"],
          f"entrypoint {cfg.get('Entrypoint')} {cfg.get('Cmd')}")
    ok("image config", f"user {cfg['User']}, env {cfg['Env']}, exposes {want['expose']}, entrypoint {cfg['Entrypoint']}")

    out = run(binary, "--version").strip()
    check(VERSION in out and head[:12] in out, f"`gleaner --version` says {out!r}")
    ok("image binary", out)
    return expected, rootfs


# --------------------------------------------------------------------------------------------
def gleaner_containers(rendered: dict[str, str]) -> list[dict]:
    found = []
    for path, text in rendered.items():
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") not in ("Deployment", "StatefulSet", "CronJob"):
                continue
            spec = doc["spec"]
            pod = spec["jobTemplate"]["spec"]["template"]["spec"] if doc["kind"] == "CronJob" else spec["template"]["spec"]
            found += pod.get("initContainers", []) + pod.get("containers", [])
    return found


def chart(digest: str) -> None:
    client = registry.RegistryClient(plain_http=True, credentials_file=AUTH)
    tags = client.tags(CHART_REF)
    check(VERSION in tags, f"{CHART_REF} has tags {tags}")
    pulled = os.path.join(WORK, "chart")
    os.makedirs(pulled)
    client.pull(CHART_REF, version=VERSION, destination=pulled, plain_http=True)
    archive = os.path.join(pulled, f"gleaner-{VERSION}.tgz")
    check(os.path.exists(archive), f"helm pull wrote {os.listdir(pulled)}")
    built = os.path.join(DIST, f"gleaner-{VERSION}.tgz")
    check(sha256_file(archive) == sha256_file(built), "the pulled chart differs from dist/'s (checksummed) one")
    ok("chart pull", f"helm pull {CHART_REF} --version {VERSION}: tags {tags}, the archive is dist/'s byte for byte")

    # `helm show chart|values oci://…`: what a platform reads before installing. (helm-python-sdk
    # 0.2.2's show() rejects its own `version` option: the version goes in the reference.)
    shown = yaml.safe_load(helm.show(f"{CHART_REF}:{VERSION}", client=client, output_format="chart", plain_http=True))
    check(shown["version"] == VERSION and shown["appVersion"] == VERSION, f"helm show chart: {shown}")
    shown_image = yaml.safe_load(helm.show(f"{CHART_REF}:{VERSION}", client=client, output_format="values",
                                           plain_http=True))["image"]
    check(shown_image["digest"] == digest and shown_image["repository"] == IMAGE_REPO, f"helm show values: {shown_image}")
    ok("chart show", f"helm show chart {CHART_REF} --version {VERSION}: appVersion {shown['appVersion']}; "
       f"helm show values: image.repository {shown_image['repository']}, image.digest {shown_image['digest']}, "
       f"image.tag {shown_image['tag']}")

    loaded = helm.Chart.load(archive)
    check(loaded.version == VERSION and loaded.metadata.get("appVersion") == VERSION,
          f"chart {loaded.version}, appVersion {loaded.metadata.get('appVersion')}")
    check(loaded.values["image"]["tag"] == VERSION, f"image.tag {loaded.values['image']['tag']}")
    pinned = f"{IMAGE_REPO}@{digest}"
    values = yaml.safe_load(open(os.path.join(ROOT, "helm/gleaner/examples/native-s3.yaml")))
    rendered = loaded.render(values, name="demo", namespace="default")
    images = {c["name"]: c["image"] for c in gleaner_containers(rendered)}
    check(images and all(i == pinned for i in images.values()), f"rendered images {images}, pushed {pinned}")
    cron = yaml.safe_load(open(os.path.join(ROOT, "helm/gleaner/examples/cronjob.yaml")))
    cron_images = {c["image"] for c in gleaner_containers(loaded.render(cron, name="demo", namespace="default"))}
    check(cron_images == {pinned}, f"cronjob images {cron_images}")
    report = helm.lint(archive, values, strict=True)
    check(not report.get("errors"), f"lint of the pulled chart: {report.get('errors')}")
    ok("chart render", f"version {VERSION}, appVersion {VERSION}; every container of examples/native-s3.yaml "
       f"({', '.join(sorted(images))}) and examples/cronjob.yaml runs {pinned}; strict lint clean")


# --------------------------------------------------------------------------------------------
def binary_crates() -> tuple[set, set, set, set]:
    """(lock, binary, other_platforms, dev_or_bench): (name, version) sets from Cargo.lock and cargo metadata."""
    lock = tomllib.load(open(os.path.join(ROOT, "Cargo.lock"), "rb"))
    locked = {(p["name"], p["version"]) for p in lock["package"]}

    def graph(filtered: bool, kinds: set) -> set:
        cmd = ["cargo", "metadata", "--format-version", "1", "--locked", "--manifest-path",
               os.path.join(ROOT, "Cargo.toml")] + (["--filter-platform", TARGET] if filtered else [])
        meta = json.loads(run(*cmd))
        nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
        packages = {p["id"]: (p["name"], p["version"]) for p in meta["packages"]}
        start = [i for i, p in packages.items() if p[0] == "sidecar"]
        seen, todo = set(), list(start)
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            for dep in nodes[i]["deps"]:
                if any(k["kind"] in kinds for k in dep["dep_kinds"]):
                    todo.append(dep["pkg"])
        return {packages[i] for i in seen}

    binary = graph(True, {None, "build"})
    all_platforms = graph(False, {None, "build"})
    return locked, binary, all_platforms - binary, locked - all_platforms


def components(bom: dict) -> set:
    out = set()
    todo = list(bom.get("components", []))
    while todo:
        c = todo.pop()
        if c.get("type") == "library":
            out.add((c["name"], c["version"]))
        todo += c.get("components", [])
    meta = bom["metadata"]["component"]
    out.add((meta["name"], meta["version"]))
    return out


def compare(sbom: set, binary: set, locked: set) -> list[str]:
    problems = [f"{n} {v} is in the SBOM, not in Cargo.lock" for n, v in sorted(sbom - locked)]
    problems += [f"{n} {v} is built into the binary, not in the SBOM" for n, v in sorted(binary - sbom)]
    problems += [f"{n} {v} is in the SBOM, not built into the binary" for n, v in sorted(sbom - binary)]
    return problems


def sbom(digest: str, rootfs: str) -> None:
    out = os.path.join(WORK, "sbom")
    found = json.loads(run(sys.executable, os.path.join(ROOT, "release/oci.py"), "find", "--plain-http",
                           "--image", f"{IMAGE_REPO}@{digest}", "--out", out))
    names = sorted(found["files"])
    check(names == [f"gleaner-{VERSION}-crates.cdx.json", f"gleaner-{VERSION}-image.cdx.json"], f"SBOM files {names}")
    ok("SBOM found from the image", f"{found['sbom']} via the {found['mode']}, files {names}")

    crates = json.load(open(os.path.join(out, names[0])))
    check(crates["bomFormat"] == "CycloneDX" and crates["specVersion"] == "1.5", "not CycloneDX 1.5")
    listed = components(crates)
    locked, binary, other_platforms, dev_or_bench = binary_crates()
    problems = compare(listed, binary, locked)
    check(not problems, "; ".join(problems[:10]))
    # The comparison is not vacuous: one version changed in the SBOM's list is caught.
    name, version = sorted(listed)[0]
    check(compare((listed - {(name, version)}) | {(name, version + "-changed")}, binary, locked),
          "a changed version in the SBOM went unnoticed")
    check(locked == binary | other_platforms | dev_or_bench, "the Cargo.lock split does not add up")
    ok("SBOM crates", f"{len(listed)} crates, same names and versions as the {len(binary)} Cargo.lock entries built "
       f"into the binary for {TARGET}; the other {len(locked) - len(binary)} of Cargo.lock's {len(locked)} are "
       f"target-specific dependencies not active on {TARGET} ({len(other_platforms)}: Windows, wasm, macOS, Android, cfg(loom), …) or dev/bench-only "
       f"({len(dev_or_bench)}); a changed version is caught (control)")

    image_bom = json.load(open(os.path.join(out, names[1])))
    hashed = {c["name"]: c["hashes"][0]["content"] for c in image_bom["components"] if c["type"] == "file"}
    actual = {"/" + os.path.relpath(os.path.join(d, n), rootfs): sha256_file(os.path.join(d, n))
              for d, _, ns in os.walk(rootfs) for n in ns}
    check(hashed == actual, f"image SBOM files {sorted(hashed)} differ from the pulled image's {sorted(actual)}")
    check(digest.split(":")[1] in image_bom["metadata"]["component"]["purl"], "the image SBOM names another image")
    ok("SBOM image files", f"{len(hashed)} files with the SHA-256 of the pulled image's files")


# --------------------------------------------------------------------------------------------
README_REG = "registry.example.org/gleaner-dev"  # the README's placeholder for REGISTRY/REPOSITORY


def readme_install() -> dict:
    """The README's "Install, verify, upgrade" section: the commands the test runs are its commands
    (with its placeholder registry replaced by this one); returns its parent-chart dependency."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Install, verify, upgrade"):text.index("## How it works")]
    check(f"REG={README_REG}" in section and f"VERSION={VERSION}" in section,
          f"the README's Install section does not set REG={README_REG} and VERSION={VERSION}")
    for command in ("helm show chart  oci://$REG/charts/gleaner --version $VERSION",
                    "helm show values oci://$REG/charts/gleaner --version $VERSION",
                    "helm install gleaner-demo oci://$REG/charts/gleaner --version $VERSION",
                    "DIGEST=$(skopeo inspect --format '{{.Digest}}' docker://$REG/gleaner:$VERSION)",
                    "$REG/gleaner@$DIGEST run --watch",
                    "sha256sum -c SHA256SUMS",
                    "python3 release/oci.py find --image $REG/gleaner@$DIGEST --out sbom/",
                    "helm dependency update ."):
        check(command in section, f"the README's Install section lacks the tested command `{command}`")
    deps = [d for block in re.findall(r"```yaml\n(.*?)```", section, re.S)
            for d in (yaml.safe_load(block) or {}).get("dependencies", [])]
    check(len(deps) == 1 and deps[0] == {"name": "gleaner", "version": VERSION,
                                         "repository": f"oci://{README_REG}/charts"},
          f"the README's parent-chart dependency: {deps}")
    ok("README commands", "the Install section's helm show/install, skopeo inspect, image by digest, "
       "sha256sum, oci.py find and parent-chart dependency are the ones run here, registry replaced")
    return deps[0]


def parent(digest: str) -> None:
    parent_dir = os.path.join(WORK, "my-app")
    shutil.copytree(os.path.join(ROOT, "helm/examples/my-app"), parent_dir,
                    ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = os.path.join(parent_dir, "Chart.yaml")
    text = open(chart_yaml).read()
    # The README's dependency, pointed at this registry.
    readme_dep = readme_install()
    remote = readme_dep["repository"].replace(README_REG, f"{REGISTRY}/{REPOSITORY}")
    check(remote == f"oci://{REGISTRY}/{REPOSITORY}/charts", f"the README's repository maps to {remote}")
    text, n = re.subn(r"repository: file://\S+", f"repository: {remote}", text)
    check(n == 1, "helm/examples/my-app/Chart.yaml has no file:// dependency to replace")
    open(chart_yaml, "w").write(text)
    os.environ["HELM_REGISTRY_CONFIG"] = AUTH
    helm.dependency_update(parent_dir, plain_http=True)
    lock = yaml.safe_load(open(os.path.join(parent_dir, "Chart.lock")))
    dep = lock["dependencies"][0]
    check((dep["name"], dep["version"], dep["repository"]) == ("gleaner", VERSION, remote), f"Chart.lock {dep}")
    fetched = os.path.join(parent_dir, "charts", f"gleaner-{VERSION}.tgz")
    check(sha256_file(fetched) == sha256_file(os.path.join(DIST, f"gleaner-{VERSION}.tgz")), "the dependency differs from dist/'s chart")
    rendered = helm.Chart.load(parent_dir).render(
        yaml.safe_load(open(os.path.join(parent_dir, "values.yaml"))), name="demo", namespace="default")
    containers = {c["name"]: c["image"] for c in gleaner_containers(rendered)}
    pinned = f"{IMAGE_REPO}@{digest}"
    gleaner = {n: i for n, i in containers.items() if "gleaner" in n}
    check(gleaner and all(i == pinned for i in gleaner.values()), f"parent chart's containers {containers}")
    ok("parent chart", f"my-app depends on {remote} gleaner {VERSION} (helm dependency update; Chart.lock), "
       f"renders {len(containers)} containers, Gleaner's ({', '.join(gleaner)}) runs {pinned}")


def main() -> int:
    digest, rootfs = image()
    chart(digest)
    sbom(digest, rootfs)
    parent(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
