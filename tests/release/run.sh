#!/usr/bin/env bash
# Tests the release (release/release.sh) end to end against a real OCI registry on 127.0.0.1
# (tests/run.sh calls it after the image step, whose static build it reuses; it runs alone too):
#
#   1. refusals, in a throwaway clone: a chart version that differs from Cargo.toml's, a
#      changelog without the version's entry, a state format the changelog does not name, and
#      (GLEANER_RELEASE_REQUIRE_TAG=1) an untagged or dirty HEAD stop `release.sh build` with a
#      message naming the problem; the same clone tagged v<version> passes;
#   2. Debian's docker-registry (distribution 2.8) on a free 127.0.0.1 port, with htpasswd
#      credentials and storage in a temporary directory, stopped by PID;
#   3. `release.sh build` into a temporary dist/, then `sha256sum -c SHA256SUMS` passes, and
#      fails for a copy whose tarball has one byte changed (the control);
#   4. `release.sh publish`: refused without credentials, done with credentials from the
#      environment;
#   5. as a consumer with a Docker config file (tests/release/consumer.py): the image pulled by
#      digest has the Dockerfile's files, labels, user, environment; the chart pulled from
#      oci:// renders the pushed digest; the SBOM found from the image lists the binary's crates
#      of Cargo.lock with their versions; a parent chart depends on the chart by oci://;
#   6. the pulled image's default serves /metrics on 0.0.0.0:9464 (in a private network
#      namespace), where the binary alone serves 127.0.0.1:9464.
#
# Tools: release/tools.sh installs them once into .tools/ (pinned). Needs root for the network
# namespace and umoci's unpack (as the image test does).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
started=$SECONDS
export TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
# shellcheck source=release/tools.sh
source release/tools.sh
release_tools
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

work=$(mktemp -d)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ]; then
    kill -TERM "$registry_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$registry_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "release test FAILED: $*" >&2; exit 1; }

# 1. Refusals.
echo "1. refusals (a clone of HEAD)"
clone="$work/clone"
git clone --quiet --shared "$ROOT" "$clone"
git -C "$clone" -c user.name=t -c user.email=t@t tag "v$version" 2>/dev/null || true
refused() {  # refused WHAT EXPECTED_MESSAGE: release.sh build in the clone must stop with it
  local what=$1 expected=$2 out
  if out=$(cd "$clone" && release/release.sh build 2>&1); then
    fail "release.sh build went ahead with $what"
  fi
  grep -qF -- "$expected" <<<"$out" || fail "$what: expected '$expected', got: $out"
  echo "  ok  refused: $what: $(grep -F -- "$expected" <<<"$out" | sed 's/^ *- //')"
  git -C "$clone" checkout --quiet -- .
}
(cd "$clone" && release/release.sh check >/dev/null) || fail "the clone of HEAD does not pass the release check"
sed -i "s/^version: .*/version: 9.9.9/" "$clone/helm/gleaner/Chart.yaml"
refused "a chart version of its own" "helm/gleaner/Chart.yaml: version is '9.9.9', Cargo.toml says $version"
sed -i "s/^appVersion: .*/appVersion: \"0.0.1\"/" "$clone/helm/gleaner/Chart.yaml"
refused "an appVersion of its own" "helm/gleaner/Chart.yaml: appVersion is '0.0.1', Cargo.toml says $version"
sed -i "/^## \[$version\]/d" "$clone/CHANGELOG.md"
refused "no changelog entry" "CHANGELOG.md has no entry for $version"
sed -i 's/const FORMAT_VERSION: u16 = \([0-9]*\);/const FORMAT_VERSION: u16 = 99;/' "$clone/crates/state-store/src/codec.rs"
refused "a state format the changelog does not name" "CHANGELOG.md does not name 'State format 99'"
git -C "$clone" tag -d "v$version" >/dev/null
export GLEANER_RELEASE_REQUIRE_TAG=1
refused "an untagged HEAD" "HEAD is not tagged v$version"
git -C "$clone" -c user.name=t -c user.email=t@t tag "v$version"
echo "# edited" >>"$clone/README.md"
refused "a dirty work tree at the tag" "the work tree has uncommitted changes"
(cd "$clone" && release/release.sh check) | sed 's/^/  ok  at the tag: /' || fail "the tagged clone does not pass"
unset GLEANER_RELEASE_REQUIRE_TAG

# 2. The registry.
echo "2. registry"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
"$RELEASE_PY" -c "import bcrypt, sys; print('publisher:' + bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=6)).decode())" \
  "$password" >"$work/htpasswd"
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
  secret: release-test
auth:
  htpasswd:
    realm: gleaner-release-test
    path: $work/htpasswd
EOF
"$REGISTRY" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = 401 ] && break
  kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; fail "the registry exited"; }
  sleep 0.1
done
echo "  ok  $("$REGISTRY" --version | cut -d' ' -f2-) on 127.0.0.1:$port (pid $registry_pid), htpasswd credentials"
export GLEANER_REGISTRY="127.0.0.1:$port" GLEANER_REPOSITORY=gleaner-dev GLEANER_REGISTRY_PLAIN_HTTP=1
export GLEANER_DIST="$work/dist"

# 3. Build and checksums.
echo "3. build"
t=$SECONDS
release/release.sh build >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "release.sh build"; }
grep '^release: built' "$work/build.log" | sed 's/^/  ok  /'
echo "  ok  build took $((SECONDS - t))s (the static binary is the image step's)"
(cd "$GLEANER_DIST" && sha256sum -c SHA256SUMS) | sed 's/^/  ok  sha256sum -c: /' || fail "SHA256SUMS does not verify"
tampered="$work/tampered"
cp -a "$GLEANER_DIST" "$tampered"
tarball="gleaner-$version-x86_64-unknown-linux-gnu.tar.gz"
printf '\x00' | dd of="$tampered/$tarball" bs=1 seek=4096 count=1 conv=notrunc status=none
if out=$(cd "$tampered" && sha256sum -c SHA256SUMS 2>&1); then
  fail "sha256sum -c accepted a tampered tarball"
fi
grep -q "^$tarball: FAILED$" <<<"$out" || fail "the tampered tarball is not named: $out"
echo "  ok  control: one byte changed in the tarball: '$(grep FAILED <<<"$out" | head -1)'"
tar -xzf "$GLEANER_DIST/$tarball" -C "$work"
"$work/gleaner-$version-x86_64-unknown-linux-gnu/gleaner" --version | sed 's/^/  ok  the tarball'"'"'s binary: /'

# 4. Publish.
echo "4. publish"
if out=$(HOME="$work/nohome" DOCKER_CONFIG= release/release.sh publish 2>&1); then
  fail "publish without credentials went through"
fi
grep -q "authentication required" <<<"$out" || fail "publish without credentials: $out"
echo "  ok  control: without credentials: '$(grep -o 'unauthorized: authentication required' <<<"$out" | head -1)'"
t=$SECONDS
GLEANER_REGISTRY_USERNAME=publisher GLEANER_REGISTRY_PASSWORD=$password release/release.sh publish \
  >"$work/publish.log" 2>&1 || { cat "$work/publish.log" >&2; fail "release.sh publish"; }
grep -v '^{' "$work/publish.log" | sed 's/^/  ok  /'
echo "  ok  SBOM attached: $(grep -o '"mode": "[^"]*"' "$work/publish.log"); publish took $((SECONDS - t))s"

# 5. As a consumer, with a Docker config file.
echo "5. consumer"
mkdir -p "$work/consumer"
( umask 077; printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$GLEANER_REGISTRY" \
    "$(printf 'publisher:%s' "$password" | base64 -w0)" >"$work/consumer/config.json" )
DOCKER_CONFIG="$work/consumer" "$RELEASE_PY" tests/release/consumer.py \
  "$GLEANER_REGISTRY" "$GLEANER_REPOSITORY" "$version" "$GLEANER_DIST" "$work" || fail "consumer checks"

# 6. The image's default address, in a network namespace of its own (nothing is served on the
#    machine's interfaces): with the image's environment, 0.0.0.0:9464, which a published port
#    reaches; without it (the binary's default), 127.0.0.1:9464 only.
echo "6. the image's default address"
listening() {  # listening ENV_FILE: the address gleaner run listens on, from /proc/net/tcp
  mkdir -p "$work/w" "$work/s" "$work/o"
  unshare --net sh -ec '
    ip link set lo up
    env -i $(cat "$1") "$2" run --watch "$3/w" --state "file://$3/s" --output "file://$3/o" --source-id addr-test \
      >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if curl -sf -o /dev/null http://127.0.0.1:9464/livez; then break; fi
      sleep 0.1
    done
    # 24F8 is 9464; state 0A is LISTEN.
    awk '\''$2 ~ /:24F8$/ && $4 == "0A" {print $2}'\'' /proc/net/tcp
    kill -TERM "$pid"; wait "$pid" || true
  ' sh "$1" "$work/bundle/rootfs/usr/local/bin/gleaner" "$work"
}
[ -f "$work/image-env" ] || fail "the consumer step left no image environment"
with_image=$(listening "$work/image-env")
: >"$work/no-env"
alone=$(listening "$work/no-env")
[ "$with_image" = "00000000:24F8" ] || fail "with the image's environment gleaner listens on '$with_image', not 0.0.0.0:9464"
[ "$alone" = "0100007F:24F8" ] || fail "without it gleaner listens on '$alone', not 127.0.0.1:9464"
echo "  ok  with the image's environment ($(tr '\n' ' ' <"$work/image-env")): 0.0.0.0:9464; the binary alone: 127.0.0.1:9464"

echo "release test passed in $((SECONDS - started))s"
