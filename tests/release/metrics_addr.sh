#!/usr/bin/env bash
# Is the image's /metrics reachable the way `docker run -p 9464:9464 IMAGE run …` reaches it?
#
#   tests/release/metrics_addr.sh BUNDLE
#
# BUNDLE is an image unpacked by `umoci unpack` (rootfs/ and the runtime config.json that umoci
# derives from the image's OCI config: environment, user, entrypoint). The image is run as its
# config says (its environment only, its uid:gid, its entrypoint, in a chroot of its rootfs) with
# `run …` as the command, in a network namespace of its own, the "container", that has one
# interface, eth0 10.254.0.2/24, paired with 10.254.0.1 in a second namespace, the "host".
# Docker's published port forwards to the container's eth0 address in the same way, never to
# its 127.0.0.1. The script then scrapes http://10.254.0.2:9464/metrics from the host side.
#
# Prints what it saw; exits 0 when the scrape from the host side answers with Gleaner's metrics,
# 1 when it does not (the binary's own default, 127.0.0.1:9464, answers only inside), 2 when the
# run itself failed. Needs root (namespaces, veth, chroot); nothing is left behind.
set -euo pipefail
bundle=$(cd "${1:?usage: metrics_addr.sh BUNDLE}" && pwd)
[ -f "$bundle/config.json" ] && [ -d "$bundle/rootfs" ] || { echo "$bundle: not an unpacked image" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -rf "$bundle/rootfs/metrics-test"' EXIT

# The process as the image configures it: environment, user, entrypoint (without the CMD).
python3 - "$bundle/config.json" "$work" <<'PY'
import json, sys
config, work = sys.argv[1:]
p = json.load(open(config))["process"]
open(f"{work}/env", "w").write("\n".join(p["env"]) + "\n")
open(f"{work}/user", "w").write(f"{p['user']['uid']}:{p['user']['gid']}\n")
# umoci puts ENTRYPOINT then CMD into args; the image's CMD is ["--help"]: drop it, as
# `docker run IMAGE run …` replaces it.
args = p["args"]
assert args[-1] == "--help", args
open(f"{work}/entrypoint", "w").write("\n".join(args[:-1]) + "\n")
PY
user=$(cat "$work/user")
data="$bundle/rootfs/metrics-test"
mkdir -p "$data/w" "$data/s" "$data/o"
chown -R "$user" "$data"

# The "host" namespace holds one end of the pair and runs curl; the "container" namespace (a
# child `unshare --net` holding the other end) runs gleaner.
unshare --net bash -ec '
  work=$1 rootfs=$2 user=$3
  ip link set lo up
  unshare --net sleep 60 &
  container=$!
  sleep 0.2
  ip link add host0 type veth peer name eth0
  ip link set eth0 netns "$container"
  ip addr add 10.254.0.1/24 dev host0
  ip link set host0 up
  nsenter -t "$container" -n sh -ec "ip link set lo up; ip addr add 10.254.0.2/24 dev eth0; ip link set eth0 up"
  mapfile -t env <"$work/env"
  mapfile -t entrypoint <"$work/entrypoint"
  nsenter -t "$container" -n env -i "${env[@]}" "$(command -v chroot)" --userspec="$user" "$rootfs" "${entrypoint[@]}" \
    run --watch /metrics-test/w --state file:///metrics-test/s --output file:///metrics-test/o \
    --source-id metrics-addr-test >"$work/gleaner.log" 2>&1 &
  gleaner=$!
  inside=no
  for _ in $(seq 1 100); do
    if nsenter -t "$container" -n curl -sf -o /dev/null http://127.0.0.1:9464/livez \
       || nsenter -t "$container" -n curl -sf -o /dev/null http://10.254.0.2:9464/livez; then
      inside=yes; break
    fi
    kill -0 "$gleaner" 2>/dev/null || break
    sleep 0.1
  done
  # 24F8 is port 9464; state 0A is LISTEN.
  listen=$(nsenter -t "$container" -n awk '\''$2 ~ /:24F8$/ && $4 == "0A" {print $2}'\'' /proc/net/tcp)
  code=$(curl -s -o "$work/metrics" -w "%{http_code}" --max-time 5 http://10.254.0.2:9464/metrics || true)
  kill -TERM "$gleaner" 2>/dev/null || true
  wait "$gleaner" || true
  kill "$container" 2>/dev/null || true
  echo "$inside $listen $code" >"$work/result"
' bash "$work" "$bundle/rootfs" "$user"

read -r inside listen code <"$work/result" || true
env_line=$(grep '^GLEANER_METRICS_ADDR=' "$work/env" || echo "GLEANER_METRICS_ADDR unset")
if [ "${inside:-no}" != yes ]; then
  echo "gleaner did not serve /livez even inside the container ($env_line):"
  cat "$work/gleaner.log"
  exit 2
fi
case "$listen" in
  00000000:24F8) addr=0.0.0.0:9464 ;;
  0100007F:24F8) addr=127.0.0.1:9464 ;;
  *) addr="'$listen'" ;;
esac
if [ "$code" = 200 ] && grep -q '^gleaner_build_info' "$work/metrics"; then
  echo "reachable: $env_line, user $user, listens on $addr; from the host side GET http://10.254.0.2:9464/metrics: 200, $(grep -c '^gleaner_' "$work/metrics") gleaner_ samples"
  exit 0
fi
echo "unreachable: $env_line, user $user, listens on $addr; from the host side GET http://10.254.0.2:9464/metrics: ${code:-no answer} (connection refused)"
exit 1
