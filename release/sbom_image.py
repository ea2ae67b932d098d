"""A CycloneDX 1.5 SBOM of the image's files.

    python3 release/sbom_image.py ROOTFS VERSION IMAGE_DIGEST CRATES_SBOM > image.cdx.json

Every regular file of the root filesystem is a `file` component with its SHA-256; the binary is
also the `application` component `gleaner` (whose crates the crates SBOM lists: it is named in
`externalReferences`), and the CA bundle is Debian's `ca-certificates` package, with the version
installed on the build machine (dpkg-query). The image itself is the SBOM's subject
(`metadata.component`, type `container`, its digest in the purl). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    rootfs, version, digest, crates_sbom = sys.argv[1:5]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or None
    when = datetime.fromtimestamp(epoch, timezone.utc) if epoch else datetime.now(timezone.utc)
    components = []
    for dirpath, _, names in sorted(os.walk(rootfs)):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            inside = "/" + os.path.relpath(path, rootfs)
            components.append({
                "type": "file",
                "bom-ref": f"file:{inside}",
                "name": inside,
                "hashes": [{"alg": "SHA-256", "content": sha256(path)}],
            })
    binary = next(c for c in components if c["name"] == "/usr/local/bin/gleaner")
    components.append({
        "type": "application",
        "bom-ref": "gleaner",
        "name": "gleaner",
        "version": version,
        "hashes": binary["hashes"],
        "purl": f"pkg:cargo/sidecar@{version}",
        "externalReferences": [{"type": "bom", "url": os.path.basename(crates_sbom),
                                "comment": "the crates the binary is built from (cargo-cyclonedx)"}],
        "properties": [{"name": "path", "value": "/usr/local/bin/gleaner"}],
    })
    ca = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "ca-certificates"],
                        capture_output=True, text=True).stdout.strip()
    if ca:
        components.append({
            "type": "data",
            "bom-ref": "ca-certificates",
            "name": "ca-certificates",
            "version": ca,
            "purl": f"pkg:deb/debian/ca-certificates@{ca}",
            "properties": [{"name": "path", "value": "/etc/ssl/certs/ca-certificates.crt"}],
        })
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # Derived from the image digest: the same image gives the same document.
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, digest)}",
        "version": 1,
        "metadata": {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "release/sbom_image.py"}]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": "gleaner",
                "version": version,
                "purl": f"pkg:oci/gleaner@{digest.replace(':', '%3A')}?tag={version}",
            },
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": [c["bom-ref"] for c in components]}],
    }
    json.dump(bom, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
