#!/usr/bin/env bash
# Tests the release (release/release.sh) end to end against a real OCI registry on 127.0.0.1
# (tests/run.sh calls it after the image step, whose static build it reuses; it runs alone too):
#
#   0. .github/workflows/release.yml runs `release/release.sh` on v* tags and nothing else, with
#      the credentials from the forge's secrets in its environment;
#   1. refusals, in a throwaway clone: a chart version that differs from Cargo.toml's, a
#      changelog without the version's entry, a state format the changelog does not name, and
#      (GLEANER_RELEASE_REQUIRE_TAG=1) an untagged or dirty HEAD stop `release.sh build` with a
#      message naming the problem; the same clone tagged v<version> passes;
#   2. Debian's docker-registry (distribution 2.8) on a free 127.0.0.1 port, with htpasswd
#      credentials and storage in a temporary directory, stopped by PID;
#   3. `release.sh build` into a temporary dist/, then `sha256sum -c SHA256SUMS` passes, and
#      fails for a copy whose tarball has one byte changed (the control); a second build gives
#      the same tarball, image digest and SBOMs;
#   4. `release.sh publish`: arguments after the command are refused (no credential can come
#      from one, and the refusal does not repeat it); refused without credentials (the control);
#      done with credentials from the environment, under strace: no program it starts gets the
#      password as an argument, and none is left in dist/ or the log; done again with a Docker
#      config file, same digests;
#   5. as a consumer with a Docker config file (tests/release/consumer.py): the image pulled by
#      digest has the Dockerfile's files, labels, user, environment; `helm show` and the chart
#      pulled from oci:// name and render the pushed digest; the SBOM found from the image lists
#      the binary's crates of Cargo.lock with their versions; a parent chart depends on the chart
#      by oci:// and renders;
#   6. the pulled image run as its config says, in a network namespace of its own, answers
#      /metrics at its non-loopback address from a second namespace, as `docker run -p 9464:9464`
#      reaches it (tests/release/metrics_addr.sh); the control without GLEANER_METRICS_ADDR (the
#      binary's own default, 127.0.0.1:9464) does not.
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

# 0. The CI workflow: the same command, nothing more.
echo "0. CI workflow"
"$RELEASE_PY" - .github/workflows/release.yml <<'PY' || fail "the release workflow"
import re, sys, yaml
path = sys.argv[1]
wf = yaml.safe_load(open(path))
on = wf.get("on", wf.get(True))
assert on == {"push": {"tags": ["v*"]}}, f"{path}: runs on {on}, not on v* tags only"
(job,) = wf["jobs"].values()
steps = job["steps"]
runs = [s["run"] for s in steps if "run" in s]
assert runs == ["release/release.sh"], f"{path}: its run steps are {runs}, not the one command"
others = [s["uses"].split("@")[0] for s in steps if "run" not in s]
assert others == ["actions/checkout"], f"{path}: steps besides the command: {others}"
env = {k: str(v) for s in steps for k, v in (s.get("env") or {}).items()}
assert env.get("GLEANER_RELEASE_REQUIRE_TAG") == "1", f"{path}: GLEANER_RELEASE_REQUIRE_TAG is not 1"
for key in ("GLEANER_REGISTRY_USERNAME", "GLEANER_REGISTRY_PASSWORD"):
    assert re.fullmatch(r"\$\{\{ *[A-Za-z_.]+ *\}\}", env.get(key, "")), f"{path}: {key} is not from the forge's context"
assert "secrets." in env["GLEANER_REGISTRY_PASSWORD"], f"{path}: the password is not a secret"
print(f"  ok  {path}: on v* tags, checkout then `{runs[0]}` with the registry and credentials in its "
      f"environment ({', '.join(sorted(env))}); nothing else")
PY

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
# Reproducible: a second build of the same commit gives the same bytes, the chart's archive
# excepted (Helm stamps its entries with the time of packaging).
GLEANER_DIST="$work/dist2" release/release.sh build >"$work/build2.log" 2>&1 || { cat "$work/build2.log" >&2; fail "second build"; }
same=$(join <(sort -k2 "$GLEANER_DIST/SHA256SUMS" | awk '{print $2, $1}') <(sort -k2 "$work/dist2/SHA256SUMS" | awk '{print $2, $1}') \
  | awk '$2 == $3 {print $1}')
for f in "$tarball" "gleaner-$version-image.digest" "gleaner-$version-crates.cdx.json" "gleaner-$version-image.cdx.json"; do
  grep -qx -- "$f" <<<"$same" || fail "a second build of the same commit changed $f"
done
echo "  ok  a second build: the same tarball, image digest ($(cat "$work/dist2/gleaner-$version-image.digest" | cut -c1-19)…) and SBOMs, byte for byte"
rm -rf "$work/dist2"
tar -xzf "$GLEANER_DIST/$tarball" -C "$work"
"$work/gleaner-$version-x86_64-unknown-linux-gnu/gleaner" --version | sed 's/^/  ok  the tarball'"'"'s binary: /'

# 4. Publish.
echo "4. publish"
# No argument can carry a credential: release.sh takes one word and refuses anything more,
# without repeating it.
for args in "publish --password $password" "publish --username=publisher" "publish publisher:$password"; do
  # shellcheck disable=SC2086  # word splitting wanted: the arguments of the try
  if out=$(release/release.sh $args 2>&1); then fail "release.sh $args went ahead"; fi
  grep -q "no options" <<<"$out" || fail "release.sh with arguments: $out"
  if grep -qF -- "$password" <<<"$out"; then fail "the refusal repeats the password"; fi
done
echo "  ok  refused: arguments after the command (--password …, --username=…, user:password), the secret not repeated: '$(cut -c1-90 <<<"$out")…'"
if out=$(HOME="$work/nohome" DOCKER_CONFIG= release/release.sh publish 2>&1); then
  fail "publish without credentials went through"
fi
grep -q "authentication required" <<<"$out" || fail "publish without credentials: $out"
echo "  ok  control: without credentials: '$(grep -o 'unauthorized: authentication required' <<<"$out" | head -1)'"
# With credentials from the environment, every program the release starts is traced: none gets
# the password, or the base64 of user:password, as an argument (skopeo and the Python tools read
# a private Docker config file).
t=$SECONDS
trace=()
if command -v strace >/dev/null; then trace=(strace -f -qq -s 4096 -e trace=execve -o "$work/execve.trace"); fi
GLEANER_REGISTRY_USERNAME=publisher GLEANER_REGISTRY_PASSWORD=$password "${trace[@]}" release/release.sh publish \
  >"$work/publish.log" 2>&1 || { cat "$work/publish.log" >&2; fail "release.sh publish"; }
grep -v '^{' "$work/publish.log" | sed 's/^/  ok  /'
echo "  ok  SBOM attached: $(grep -o '"mode": "[^"]*"' "$work/publish.log"); publish took $((SECONDS - t))s"
basic=$(printf 'publisher:%s' "$password" | base64 -w0)
if [ -f "$work/execve.trace" ]; then
  if grep -qF -e "$password" -e "$basic" "$work/execve.trace"; then fail "a program got the credential as an argument"; fi
  echo "  ok  strace: $(grep -c 'execve(' "$work/execve.trace") programs started by publish, none with the password or user:password in its arguments"
else
  echo "  --  strace not installed: the arguments of publish's programs were not traced"
fi
if grep -rqF -e "$password" -e "$basic" "$GLEANER_DIST" "$work/publish.log"; then fail "the credential was left in dist/ or the log"; fi
echo "  ok  the credential is in neither dist/ nor the log"
# The same publish again, with a Docker config file instead (and the second run changes nothing:
# the image, chart and SBOM have the same digests, the referrers tag lists the SBOM once).
mkdir -p "$work/publisher"
( umask 077; printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$GLEANER_REGISTRY" "$basic" >"$work/publisher/config.json" )
DOCKER_CONFIG="$work/publisher" release/release.sh publish >"$work/publish2.log" 2>&1 \
  || { cat "$work/publish2.log" >&2; fail "release.sh publish with DOCKER_CONFIG"; }
diff <(grep '^release: \(image\|chart\)' "$work/publish.log") <(grep '^release: \(image\|chart\)' "$work/publish2.log") >/dev/null \
  || fail "publishing again gave other digests: $(cat "$work/publish2.log")"
echo "  ok  again with DOCKER_CONFIG's config.json: the same image and chart digests"

# 5. As a consumer, with a Docker config file.
echo "5. consumer"
mkdir -p "$work/consumer"
( umask 077; printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$GLEANER_REGISTRY" \
    "$(printf 'publisher:%s' "$password" | base64 -w0)" >"$work/consumer/config.json" )
DOCKER_CONFIG="$work/consumer" "$RELEASE_PY" tests/release/consumer.py \
  "$GLEANER_REGISTRY" "$GLEANER_REPOSITORY" "$version" "$GLEANER_DIST" "$work" || fail "consumer checks"

# 6. The image as `docker run -p 9464:9464 IMAGE run …` runs it: its environment, user and
#    entrypoint (from the runtime config umoci derives from the pulled image), a network namespace
#    of its own, scraped at its non-loopback address from a second namespace
#    (tests/release/metrics_addr.sh). Control: the same without GLEANER_METRICS_ADDR (the binary's
#    own default, which the image had before) is not reachable from outside.
echo "6. the image's metrics from outside its network namespace"
out=$(tests/release/metrics_addr.sh "$work/bundle") || fail "$out"
echo "  ok  $out"
cp "$work/bundle/config.json" "$work/config.json.image"
"$RELEASE_PY" - "$work/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("GLEANER_METRICS_ADDR=")]
json.dump(c, open(sys.argv[1], "w"))
PY
rc=0; out=$(tests/release/metrics_addr.sh "$work/bundle") || rc=$?
cp "$work/config.json.image" "$work/bundle/config.json"
[ "$rc" = 1 ] || fail "control: without GLEANER_METRICS_ADDR: exit $rc: $out"
echo "  ok  control: $out"

echo "release test passed in $((SECONDS - started))s"
