#!/usr/bin/env bash
# Builds Gleaner's image without a Docker engine: the root filesystem the Dockerfile produces
# (the same files, modes and owners), and an OCI image layout made from it with umoci.
#
#   image/build-rootfs.sh OUT_DIR
#
# OUT_DIR/rootfs   the root filesystem: /usr/local/bin/gleaner (static, stripped),
#                  /etc/ssl/certs/ca-certificates.crt, /etc/passwd, /etc/group
# OUT_DIR/oci      an OCI image layout, tag gleaner:VERSION (only where umoci is installed:
#                  Debian's `umoci`; set GLEANER_IMAGE_OCI=0 to skip it)
#
# Environment: GLEANER_IMAGE_BINARY uses an existing static binary instead of building one
# (`cargo build --profile dist --target x86_64-unknown-linux-gnu` with crt-static, as the
# Dockerfile does); GLEANER_IMAGE_REVISION sets the revision label (default: HEAD's commit);
# GLEANER_IMAGE_EPOCH the files' mtimes and the image's times (default: HEAD's commit time).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: image/build-rootfs.sh OUT_DIR}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# The commit (the full id, as OCI's revision label wants it); GLEANER_IMAGE_REVISION overrides it.
revision=${GLEANER_IMAGE_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
# The description, as the Dockerfile sets it (one wording for both images).
description=$(sed -n 's/.*org\.opencontainers\.image\.description="\([^"]*\)".*/\1/p' Dockerfile)
binary=${GLEANER_IMAGE_BINARY:-}
if [ -z "$binary" ]; then
  # The commit given as release/release.sh gives it, so that its build of the same binary is
  # a no-op after this one (CI builds the static binary once).
  GLEANER_BUILD_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown) \
  RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --locked --quiet --profile dist --target x86_64-unknown-linux-gnu -p sidecar
  binary=target/x86_64-unknown-linux-gnu/dist/gleaner
fi
ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$ca_bundle" ]; then
  echo "no CA bundle at $ca_bundle: install Debian's ca-certificates" >&2
  exit 1
fi
# A static binary has no program interpreter: the image has no libraries to offer it.
if LC_ALL=C readelf -l "$binary" 2>/dev/null | grep -q 'program interpreter'; then
  echo "$binary is dynamically linked; the image needs a static one" >&2
  exit 1
fi

rm -rf "$out"
root="$out/rootfs"
install -d -m 0755 "$root/usr/local/bin" "$root/etc/ssl/certs"
install -m 0755 "$binary" "$root/usr/local/bin/gleaner"
install -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
install -m 0644 image/passwd "$root/etc/passwd"
install -m 0644 image/group "$root/etc/group"
chown -R 0:0 "$root" 2>/dev/null || true
bytes=$(du -sb "$root" | cut -f1)
echo "rootfs: $root, $bytes bytes, gleaner $version ($revision)"

if [ "${GLEANER_IMAGE_OCI:-1}" = 1 ]; then
  umoci=$(command -v umoci || true)
  [ -z "$umoci" ] && [ -x .tools/deb/usr/bin/umoci ] && umoci=$PWD/.tools/deb/usr/bin/umoci
  if [ -z "$umoci" ]; then
    echo "umoci not found (Debian: apt-get install umoci): no OCI image, the rootfs only"
    exit 0
  fi
  oci="$out/oci"
  tag="gleaner:$version"
  "$umoci" init --layout "$oci"
  "$umoci" new --image "$oci:$tag"
  "$umoci" unpack --image "$oci:$tag" "$out/bundle" >/dev/null
  cp -a "$root/." "$out/bundle/rootfs/"
  # Reproducible: every file's mtime and the config's times are the commit's time (or
  # GLEANER_IMAGE_EPOCH), so the same commit and binary give the same image digest.
  epoch=${GLEANER_IMAGE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  find "$out/bundle/rootfs" -exec touch -h -d "@$epoch" {} +
  "$umoci" repack --image "$oci:$tag" --history.created "$created" "$out/bundle"
  rm -rf "$out/bundle"
  "$umoci" config --image "$oci:$tag" --created "$created" --history.created "$created" \
    --config.user 65532:65532 \
    --config.entrypoint /usr/local/bin/gleaner \
    --config.cmd --help \
    --config.exposedports 9464/tcp \
    --config.env PATH=/usr/local/bin \
    --config.env GLEANER_METRICS_ADDR=0.0.0.0:9464 \
    --author "Gleaner developers" \
    --clear config.labels \
    --config.label "org.opencontainers.image.title=gleaner" \
    --config.label "org.opencontainers.image.description=$description" \
    --config.label "org.opencontainers.image.source=https://github.com/gleaner-dev/gleaner" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision"
  "$umoci" gc --layout "$oci"
  echo "OCI image: $oci:$tag ($(du -sb "$oci" | cut -f1) bytes, compressed layers)"
fi
