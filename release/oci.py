"""The SBOM beside the image in an OCI registry: attach it to the image's digest, find it again.

    oci.py attach  --image HOST/REPO@sha256:… [--plain-http] [--auth-file F] FILE…
    oci.py find    --image HOST/REPO@sha256:… [--plain-http] [--auth-file F] --out DIR

`attach` pushes one artifact whose `subject` is the image manifest, `artifactType`
`application/vnd.cyclonedx+json`, the OCI empty config, and one layer per SBOM file (titled with
its file name). Where the registry serves the OCI 1.1 referrers API (it answers the push with an
`OCI-Subject` header, or `GET /v2/REPO/referrers/DIGEST` returns an index), that is all: clients
find the artifact through the API. Where it does not (the CNCF distribution registry 2.8, Debian's
`docker-registry`, answers 404), it also maintains the distribution spec's fallback, the
"referrers tag schema": an image index tagged `sha256-<hex of the image digest>` that lists the
image's referrers; an existing index there is kept and the new descriptor added. It prints which
of the two it used.

`find` does what a consumer does: asks the referrers API first, falls back to the tag, picks the
referrer with the CycloneDX artifact type, checks its subject is the image, and downloads its
layers into DIR (each checked against its digest). It prints the artifact's digest and the mode.

Credentials: a Docker config file (`--auth-file`, else $DOCKER_CONFIG/config.json, else
~/.docker/config.json), read by oras-py; never from arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import oras.container
import oras.defaults
import oras.provider
import requests

SBOM_TYPE = "application/vnd.cyclonedx+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"


class Registry:
    def __init__(self, image: str, plain_http: bool, auth_file: str | None):
        if "@" not in image:
            raise SystemExit(f"{image}: give the image by digest (HOST/REPO@sha256:…)")
        self.name, self.digest = image.split("@", 1)
        self.host, self.repo = self.name.split("/", 1)
        self.base = f"{'http' if plain_http else 'https'}://{self.host}/v2/{self.repo}"
        # oras-py's default "token" backend treats every challenge as a Bearer token service and
        # fails on a registry that asks for Basic credentials (htpasswd): ask the registry which
        # it wants, and pick the backend for it.
        challenge = requests.get(self.base.split("/v2/")[0] + "/v2/", timeout=30).headers.get("Www-Authenticate", "")
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        self.reg = oras.provider.Registry(hostname=self.host, insecure=plain_http, auth_backend=backend)
        config = auth_file
        if config is None and os.environ.get("DOCKER_CONFIG"):
            config = os.path.join(os.environ["DOCKER_CONFIG"], "config.json")
        self.container = oras.container.Container(self.name, registry=self.host)
        self.reg.auth.load_configs(self.container, configs=[config] if config and os.path.exists(config) else None)
        if backend == "basic" and not getattr(self.reg.auth, "_basic_auth", None):
            raise SystemExit(f"{self.host} asks for credentials, and the Docker config file "
                             f"({config or '~/.docker/config.json'}) has none for it")

    def request(self, method: str, path: str, **kwargs):
        return self.reg.do_request(f"{self.base}/{path}", method, **kwargs)

    def manifest(self, ref: str, accept: str) -> tuple[dict | None, bytes]:
        r = self.request("GET", f"manifests/{ref}", headers={"Accept": accept})
        if r.status_code == 404:
            return None, b""
        r.raise_for_status()
        return r.json(), r.content

    def put_manifest(self, ref: str, body: bytes, media_type: str):
        r = self.request("PUT", f"manifests/{ref}", data=body, headers={"Content-Type": media_type})
        if r.status_code not in (200, 201):
            raise SystemExit(f"PUT manifests/{ref}: {r.status_code} {r.text}")
        return r

    def put_blob(self, data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.request("HEAD", f"blobs/{digest}").status_code == 200:
            return {"digest": digest, "size": len(data)}
        r = self.request("POST", "blobs/uploads/")
        if r.status_code != 202:
            raise SystemExit(f"POST blobs/uploads/: {r.status_code} {r.text}")
        location = r.headers["Location"]
        if location.startswith("/"):
            location = self.base.split("/v2/")[0] + location
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        r = self.reg.do_request(url, "PUT", data=data, headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise SystemExit(f"PUT blob {digest}: {r.status_code} {r.text}")
        return {"digest": digest, "size": len(data)}

    def blob(self, digest: str) -> bytes:
        r = self.request("GET", f"blobs/{digest}")
        r.raise_for_status()
        if "sha256:" + hashlib.sha256(r.content).hexdigest() != digest:
            raise SystemExit(f"blob {digest}: the registry sent other bytes")
        return r.content

    def referrers_api(self) -> dict | None:
        """The referrers index from the API, or None where the registry has no such API."""
        r = self.request("GET", f"referrers/{self.digest}", headers={"Accept": INDEX_TYPE})
        if r.status_code == 200 and r.headers.get("Content-Type", "").startswith(INDEX_TYPE):
            return r.json()
        return None

    def fallback_tag(self) -> str:
        return self.digest.replace(":", "-")


def attach(args) -> int:
    reg = Registry(args.image, args.plain_http, args.auth_file)
    _, subject_bytes = reg.manifest(reg.digest, MANIFEST_TYPE)
    if not subject_bytes:
        raise SystemExit(f"{args.image}: no such manifest in the registry")
    if "sha256:" + hashlib.sha256(subject_bytes).hexdigest() != reg.digest:
        raise SystemExit(f"{args.image}: the registry's manifest has another digest")
    subject = {"mediaType": MANIFEST_TYPE, "digest": reg.digest, "size": len(subject_bytes)}
    reg.put_blob(b"{}")
    layers = []
    for path in args.files:
        with open(path, "rb") as f:
            blob = reg.put_blob(f.read())
        layers.append({"mediaType": SBOM_TYPE, **blob, "annotations": {TITLE: os.path.basename(path)}})
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": SBOM_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": 2, "data": "e30="},
        "layers": layers,
        "subject": subject,
        "annotations": {"org.opencontainers.image.description": "CycloneDX SBOMs of the image"},
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    r = reg.put_manifest(digest, body, MANIFEST_TYPE)
    descriptor = {"mediaType": MANIFEST_TYPE, "digest": digest, "size": len(body),
                  "artifactType": SBOM_TYPE, "annotations": manifest["annotations"]}
    if r.headers.get("OCI-Subject") == reg.digest or reg.referrers_api() is not None:
        mode = "referrers API"
    else:
        # The referrers tag schema: keep what the index lists, add this artifact once.
        tag = reg.fallback_tag()
        index, _ = reg.manifest(tag, INDEX_TYPE)
        index = index or {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}
        index["manifests"] = [m for m in index["manifests"] if m["digest"] != digest] + [descriptor]
        reg.put_manifest(tag, json.dumps(index, separators=(",", ":")).encode(), INDEX_TYPE)
        mode = f"referrers tag {tag}"
    print(json.dumps({"sbom": f"{reg.name}@{digest}", "subject": reg.digest, "mode": mode}))
    return 0


def find(args) -> int:
    reg = Registry(args.image, args.plain_http, args.auth_file)
    index = reg.referrers_api()
    mode = "referrers API"
    if index is None:
        index, _ = reg.manifest(reg.fallback_tag(), INDEX_TYPE)
        mode = f"referrers tag {reg.fallback_tag()}"
    if not index:
        raise SystemExit(f"{args.image}: no referrers (neither the API nor the tag {reg.fallback_tag()})")
    sboms = [m for m in index["manifests"] if m.get("artifactType") == SBOM_TYPE]
    if not sboms:
        raise SystemExit(f"{args.image}: no referrer of type {SBOM_TYPE}")
    found = sboms[-1]
    manifest, body = reg.manifest(found["digest"], MANIFEST_TYPE)
    if "sha256:" + hashlib.sha256(body).hexdigest() != found["digest"]:
        raise SystemExit(f"{found['digest']}: the registry sent another manifest")
    if manifest.get("subject", {}).get("digest") != reg.digest:
        raise SystemExit(f"{found['digest']}: its subject is not {reg.digest}")
    os.makedirs(args.out, exist_ok=True)
    files = []
    for layer in manifest["layers"]:
        name = os.path.basename(layer["annotations"][TITLE])
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(reg.blob(layer["digest"]))
        files.append(name)
    print(json.dumps({"sbom": f"{reg.name}@{found['digest']}", "mode": mode, "files": files}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("attach", "find"):
        p = sub.add_parser(name)
        p.add_argument("--image", required=True)
        p.add_argument("--plain-http", action="store_true")
        p.add_argument("--auth-file")
        if name == "attach":
            p.add_argument("files", nargs="+")
        else:
            p.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        return attach(args) if args.command == "attach" else find(args)
    except (requests.RequestException, ValueError) as e:
        raise SystemExit(f"oci.py {args.command} {args.image}: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
