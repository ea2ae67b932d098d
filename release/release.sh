#!/usr/bin/env bash
# Gleaner's release, one command (README: "Install", "Release"):
#
#   release/release.sh check     the versions agree and CHANGELOG.md has the entry (release/check.py)
#   release/release.sh build     check, then build everything into dist/
#   release/release.sh publish   push dist/ to the OCI registry the environment names
#   release/release.sh           build, then publish if GLEANER_REGISTRY is set
#
# dist/ after `build` (VERSION from Cargo.toml, one version for everything):
#   gleaner-VERSION-x86_64-unknown-linux-gnu.tar.gz   the static binary (+ CHANGELOG.md, README.md)
#   gleaner-VERSION.oci/                  the image as an OCI layout (tag gleaner:VERSION)
#   gleaner-VERSION-image.digest          the image manifest's digest
#   gleaner-VERSION-crates.cdx.json       CycloneDX SBOM of the binary's crates (cargo-cyclonedx)
#   gleaner-VERSION-image.cdx.json        CycloneDX SBOM of the image's files
#   gleaner-VERSION.tgz                   the Helm chart, image pinned by digest
#   SHA256SUMS                            sha256sum -c SHA256SUMS verifies all of the files above
#   release.json                          what was built: version, commit, image, chart
#
# Environment:
#   GLEANER_REGISTRY           registry host[:port] (publish; build pins the chart to it)
#   GLEANER_REPOSITORY         namespace in it (default gleaner-dev): the image is
#                              REGISTRY/REPOSITORY/gleaner, the chart oci://REGISTRY/REPOSITORY/charts/gleaner
#   GLEANER_REGISTRY_USERNAME, GLEANER_REGISTRY_PASSWORD
#                              credentials (publish); without them a Docker config file:
#                              REGISTRY_AUTH_FILE, else $DOCKER_CONFIG/config.json, else ~/.docker/config.json
#   GLEANER_REGISTRY_PLAIN_HTTP=1   talk HTTP, not HTTPS (a registry on 127.0.0.1)
#   GLEANER_RELEASE_REQUIRE_TAG=1   refuse unless HEAD is tagged vVERSION and the tree is clean
#   GLEANER_DIST               where to build (default dist/)
# Without GLEANER_REGISTRY, `build` pins the chart to ghcr.io/gleaner-dev/gleaner, the name the
# chart has always used (a placeholder until a registry is chosen).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=release/tools.sh
source release/tools.sh

TARGET=x86_64-unknown-linux-gnu
DIST=${GLEANER_DIST:-$ROOT/dist}
REPOSITORY=${GLEANER_REPOSITORY:-gleaner-dev}
if [ -n "${GLEANER_REGISTRY:-}" ]; then
  IMAGE_REPO="$GLEANER_REGISTRY/$REPOSITORY/gleaner"
  CHART_REMOTE="oci://$GLEANER_REGISTRY/$REPOSITORY/charts"
else
  IMAGE_REPO="ghcr.io/$REPOSITORY/gleaner"
  CHART_REMOTE=""
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

die() { echo "release: $*" >&2; exit 1; }

check() { python3 release/check.py; }

build() {
  check
  release_tools
  local revision short epoch dirty=false
  revision=$(git rev-parse HEAD)
  short=$(git rev-parse --short=12 HEAD)
  epoch=$(git log -1 --format=%ct)
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    dirty=true
    echo "release: WARNING: the work tree has uncommitted changes; the artifacts are not commit $short"
  fi
  # Not exported: aws-lc-sys's build script watches SOURCE_DATE_EPOCH, and a change of it would
  # rebuild the binary the image step has just built. The SBOM tools get it on their own.
  local work="$DIST/.work"
  rm -rf "$DIST"
  mkdir -p "$work"

  # 1. The static binary, exactly as the image step builds it (so CI builds it once).
  GLEANER_BUILD_COMMIT=$short RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --locked --quiet --profile dist --target "$TARGET" -p sidecar
  local binary="target/$TARGET/dist/gleaner"
  "$binary" --version | grep -q "$version.*$short" \
    || die "$binary --version says '$("$binary" --version)', not $version ($short)"
  local name="gleaner-$version-$TARGET"
  mkdir -p "$work/$name"
  install -m 0755 "$binary" "$work/$name/gleaner"
  install -m 0644 CHANGELOG.md README.md "$work/$name/"
  tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf - "$name" \
    | gzip -n -9 >"$DIST/$name.tar.gz"

  # 2. The image: image/build-rootfs.sh's root filesystem and OCI layout, with this binary.
  GLEANER_IMAGE_BINARY="$binary" GLEANER_IMAGE_REVISION="$revision" PATH="$(dirname "$UMOCI"):$PATH" \
    image/build-rootfs.sh "$work/image" >/dev/null
  [ -f "$work/image/oci/index.json" ] || die "image/build-rootfs.sh made no OCI layout"
  mv "$work/image/oci" "$DIST/gleaner-$version.oci"
  local digest
  digest=$("$RELEASE_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' \
    "$DIST/gleaner-$version.oci/index.json")
  echo "$digest" >"$DIST/gleaner-$version-image.digest"

  # 3. SBOMs. cargo-cyclonedx writes beside each package's Cargo.toml: run it on a copy of the
  #    tracked and new files, not in the work tree.
  mkdir -p "$work/src"
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src" 2>/dev/null || true
  SOURCE_DATE_EPOCH=$epoch "$CYCLONEDX" cyclonedx --manifest-path "$work/src/crates/sidecar/Cargo.toml" --format json \
    --spec-version 1.5 --target "$TARGET" --override-filename sbom -q
  # The workspace's own crates are named by their path (path+file://…): the build's temporary
  # copy, not worth publishing; they become paths under /gleaner-VERSION, the tarball's name.
  "$RELEASE_PY" - "$work/src/crates/sidecar/sbom.json" "$work/src" "/gleaner-$version" \
    >"$DIST/gleaner-$version-crates.cdx.json" <<'PY'
import sys
path, tmp, fixed = sys.argv[1:]
sys.stdout.write(open(path, encoding="utf-8").read().replace(f"path+file://{tmp}/", f"path+file://{fixed}/"))
PY
  if grep -qF "$work" "$DIST/gleaner-$version-crates.cdx.json"; then die "the crates SBOM names the build's temporary directory"; fi
  SOURCE_DATE_EPOCH=$epoch "$RELEASE_PY" release/sbom_image.py "$work/image/rootfs" "$version" "$digest" \
    "gleaner-$version-crates.cdx.json" >"$DIST/gleaner-$version-image.cdx.json"

  # 4. The chart, from a copy: the default image becomes this repository, pinned by this digest
  #    (the tag stays, for humans); appVersion and version are the release's (check.py).
  mkdir -p "$work/chart"
  cp -a helm/gleaner "$work/chart/gleaner"
  "$RELEASE_PY" - "$work/chart/gleaner/values.yaml" "$IMAGE_REPO" "$version" "$digest" <<'PY'
import re, sys, yaml
path, repo, tag, digest = sys.argv[1:]
text = open(path, encoding="utf-8").read()
block = re.search(r"^image:\n(?:(?:  .*|\s*)\n)+", text, re.M)
new = block.group(0)
for key, value in (("repository", repo), ("tag", f'"{tag}"'), ("digest", f'"{digest}"')):
    new, n = re.subn(rf"^(  {key}:) .*$", rf"\1 {value}", new, count=1, flags=re.M)
    assert n == 1, f"values.yaml: no image.{key} line"
text = text[: block.start()] + new + text[block.end():]
image = yaml.safe_load(text)["image"]
assert (image["repository"], image["tag"], image["digest"]) == (repo, tag, digest), image
open(path, "w", encoding="utf-8").write(text)
PY
  "$RELEASE_PY" - "$work/chart/gleaner" "$DIST" "$version" "$digest" "$IMAGE_REPO" <<'PY'
import sys, helm_python as helm
chart_dir, dist, version, digest, repo = sys.argv[1:]
report = helm.lint(chart_dir, None, strict=True)
assert not report.get("errors"), report
archive = helm.package(chart_dir, destination=dist)
chart = helm.Chart.load(archive)
assert chart.version == version and chart.metadata["appVersion"] == version, chart.metadata
assert chart.values["image"]["digest"] == digest and chart.values["image"]["repository"] == repo
PY

  # 5. Checksums and what was built.
  ( cd "$DIST" && sha256sum "$name.tar.gz" "gleaner-$version.tgz" "gleaner-$version-image.digest" \
      "gleaner-$version-crates.cdx.json" "gleaner-$version-image.cdx.json" >SHA256SUMS )
  "$RELEASE_PY" - "$DIST/release.json" <<PY
import json, sys
json.dump({"version": "$version", "revision": "$revision", "dirty": $( $dirty && echo True || echo False ),
           "image": {"repository": "$IMAGE_REPO", "tag": "$version", "digest": "$digest",
                     "layout": "gleaner-$version.oci", "layout_ref": "gleaner:$version"},
           "chart": {"name": "gleaner", "version": "$version", "file": "gleaner-$version.tgz",
                     "remote": "$CHART_REMOTE"},
           "binary": "$name.tar.gz",
           "sboms": ["gleaner-$version-crates.cdx.json", "gleaner-$version-image.cdx.json"]},
          open(sys.argv[1], "w"), indent=2)
PY
  rm -rf "$work"
  echo "release: built gleaner $version ($short) into $DIST: image $IMAGE_REPO@$digest"
  (cd "$DIST" && ls -l)
}

publish() {
  [ -n "${GLEANER_REGISTRY:-}" ] || die "publish needs GLEANER_REGISTRY (and GLEANER_REPOSITORY, default gleaner-dev)"
  [ -f "$DIST/release.json" ] || die "no $DIST/release.json: run release/release.sh build first"
  release_tools
  local built
  built=$("$RELEASE_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["repository"])' "$DIST/release.json")
  [ "$built" = "$IMAGE_REPO" ] || die "$DIST was built for $built, not $IMAGE_REPO: the chart pins the image there. Build again with GLEANER_REGISTRY=$GLEANER_REGISTRY GLEANER_REPOSITORY=$REPOSITORY"
  (cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || die "$DIST does not match its SHA256SUMS"

  # Credentials: from the environment into a private Docker config file, else the user's one.
  local tmp auth=""
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  if [ -n "${GLEANER_REGISTRY_USERNAME:-}" ]; then
    [ -n "${GLEANER_REGISTRY_PASSWORD:-}" ] || die "GLEANER_REGISTRY_USERNAME is set, GLEANER_REGISTRY_PASSWORD is not"
    auth="$tmp/config.json"
    ( umask 077
      printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$GLEANER_REGISTRY" \
        "$(printf '%s:%s' "$GLEANER_REGISTRY_USERNAME" "$GLEANER_REGISTRY_PASSWORD" | base64 -w0)" >"$auth" )
  elif [ -n "${REGISTRY_AUTH_FILE:-}" ]; then
    auth=$REGISTRY_AUTH_FILE
  elif [ -n "${DOCKER_CONFIG:-}" ] && [ -f "$DOCKER_CONFIG/config.json" ]; then
    auth="$DOCKER_CONFIG/config.json"
  elif [ -f "$HOME/.docker/config.json" ]; then
    auth="$HOME/.docker/config.json"
  fi
  local plain=false tls=()
  if [ "${GLEANER_REGISTRY_PLAIN_HTTP:-0}" = 1 ]; then plain=true; tls=(--dest-tls-verify=false); fi
  local digest
  digest=$(cat "$DIST/gleaner-$version-image.digest")

  # 1. The image, byte for byte: its digest in the registry is the one the chart pins.
  "$SKOPEO" --policy "$SKOPEO_POLICY" copy --quiet --preserve-digests ${auth:+--authfile "$auth"} "${tls[@]}" \
    --digestfile "$tmp/pushed" "oci:$DIST/gleaner-$version.oci:gleaner:$version" \
    "docker://$IMAGE_REPO:$version" || die "pushing the image to $IMAGE_REPO failed"
  [ "$(cat "$tmp/pushed")" = "$digest" ] || die "the registry stored the image as $(cat "$tmp/pushed"), not $digest"
  echo "release: image $IMAGE_REPO:$version = $IMAGE_REPO@$digest"

  # 2. The chart, as Helm pushes it (helm-python-sdk embeds Helm 4).
  "$RELEASE_PY" - "$DIST/gleaner-$version.tgz" "$CHART_REMOTE" "$plain" "$auth" <<'PY' || die "pushing the chart failed"
import sys
from helm_python import registry
archive, remote, plain, auth = sys.argv[1:]
client = registry.RegistryClient(plain_http=plain == "true", credentials_file=auth or None)
client.push(archive, remote, plain_http=plain == "true")
version = archive.rsplit("gleaner-", 1)[1].removesuffix(".tgz")
print(f"release: chart {remote}/gleaner:{version} = {client.resolve(f'{remote}/gleaner:{version}')['digest']}")
PY

  # 3. The SBOMs, attached to the image's digest (a referrer, or the referrers tag).
  "$RELEASE_PY" release/oci.py attach --image "$IMAGE_REPO@$digest" ${auth:+--auth-file "$auth"} \
    $($plain && echo --plain-http) "$DIST/gleaner-$version-crates.cdx.json" "$DIST/gleaner-$version-image.cdx.json" \
    | tee "$DIST/sbom-attached.json"
  echo "release: published gleaner $version to $GLEANER_REGISTRY/$REPOSITORY"
}

# No options: nothing that could carry a credential is read from the command line (where `ps`
# and shell histories show it). Credentials come from the environment or a Docker config file.
if [ "$#" -gt 1 ]; then
  die "release/release.sh takes one word (check, build or publish) and no options (got $(($# - 1)) more, not repeated here: an argument may hold a secret). Registry, repository and credentials come from the environment (GLEANER_REGISTRY, GLEANER_REPOSITORY, GLEANER_REGISTRY_USERNAME and GLEANER_REGISTRY_PASSWORD) or a Docker config file (REGISTRY_AUTH_FILE, DOCKER_CONFIG, ~/.docker/config.json), never from arguments"
fi
case "${1:-all}" in
  check) check ;;
  build) build ;;
  publish) publish ;;
  all) build; if [ -n "${GLEANER_REGISTRY:-}" ]; then publish; fi ;;
  *) die "usage: release/release.sh [check|build|publish] (no options: everything else comes from the environment)" ;;
esac
