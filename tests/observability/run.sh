#!/usr/bin/env bash
# Gleaner's observability files, tested against the real tools and servers:
#
#   tests/observability/run.sh          (GLEANER_BIN=path/to/gleaner, default target/debug/gleaner)
#
# * deploy/prometheus/slo-rules.yaml is generated from deploy/slos.yaml, and
#   deploy/grafana/gleaner.json from its generator, and neither was edited by hand;
# * promtool check rules on every rule file; promtool test rules: every alert fires in one series
#   history and stays silent in another (the SLOs' minimum-traffic guard included), each history
#   with a classic-histogram label run twice: as Prometheus 2 stores it (le="7200") and as
#   Prometheus 3 does (le="7200.0", prom3_histories.py);
# * amtool check-config; routes per severity; the Slack templates rendered by amtool;
# * every alert's runbook section exists, every metric a rule or the dashboard names exists in the
#   code, every dashboard query parses (check_static.py); the dashboard validates against
#   Grafana's dashboard JSON schema (check-jsonschema, schema kept in this directory);
# * end to end (e2e.py): a real Prometheus scrapes the real gleaner, an unwritable output
#   directory makes the shipped rules fire into a real Alertmanager, whose Slack receivers post to
#   a webhook on 127.0.0.1; the firing and the resolved messages are checked.
#
# Tools: promtool, amtool, prometheus and Alertmanager from Debian (when missing, the packages
# are downloaded and unpacked into .tools/deb, no service; Alertmanager's default templates are
# copied to the fixed path Debian's build reads them from, which needs root once), check-jsonschema
# and PyYAML in a venv in .tools/obs-venv.
# Servers listen on 127.0.0.1 only and are stopped by PID. Takes about a minute.
#
# dashboard.jsonschema.json is Grafana's dashboard schema (draft-07) as published in the
# grafana-foundation-sdk repository, jsonschema/dashboard.jsonschema.json, commit f178d5a42a89
# (main, 2026-06-16), kept here as test data.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1

GLEANER_BIN="${GLEANER_BIN:-target/debug/gleaner}"
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
VENV="$TOOLS_DIR/obs-venv"
CHECK_JSONSCHEMA_VERSION=0.39.0
PYYAML_VERSION=6.0.3

started=$SECONDS
passed=0
failed=0
step() { printf '\n--> %s  (%ds)\n' "$*" "$((SECONDS - started))"; }
run_check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
  fi
}

step "tools"
# Debian's prometheus and prometheus-alertmanager are static Go binaries: unpacked into
# .tools/deb (no service), unless the machine has them already.
export PATH="$TOOLS_DIR/deb/usr/bin:$PATH"
if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null \
   || ! command -v prometheus >/dev/null \
   || ! { command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null; }; then
  echo "fetching prometheus and prometheus-alertmanager (Debian) into $TOOLS_DIR/deb"
  mkdir -p "$TOOLS_DIR/deb"
  ( cd "$TOOLS_DIR/deb" \
    && { apt-get download prometheus prometheus-alertmanager >/dev/null 2>&1 \
         || { apt-get update -qq >/dev/null && apt-get download prometheus prometheus-alertmanager >/dev/null; }; } \
    && for deb in prometheus_*.deb prometheus-alertmanager_*.deb; do dpkg -x "$deb" .; done \
    && rm -f ./*.deb )
fi
# Debian builds Alertmanager without its embedded assets: it reads its default notification
# templates (default.tmpl, email.tmpl) from this fixed directory (no flag moves it), and refuses
# any configuration without them. The package would put them there; unpacked, they are copied.
AM_TEMPLATES=/usr/share/prometheus/alertmanager
for tmpl in default.tmpl email.tmpl; do
  [ -f "$AM_TEMPLATES/$tmpl" ] && continue
  if [ -f "$TOOLS_DIR/deb$AM_TEMPLATES/$tmpl" ] \
     && install -D -m 0644 "$TOOLS_DIR/deb$AM_TEMPLATES/$tmpl" "$AM_TEMPLATES/$tmpl" 2>/dev/null; then
    echo "installed Alertmanager's $tmpl into $AM_TEMPLATES (from $TOOLS_DIR/deb)"
  else
    echo "Alertmanager needs $AM_TEMPLATES/$tmpl: run as root once, or apt-get install prometheus-alertmanager" >&2
    exit 1
  fi
done
if ! "$VENV/bin/python" -c "import sys, yaml; sys.exit(yaml.__version__ != '$PYYAML_VERSION')" 2>/dev/null \
   || [ "$("$VENV/bin/check-jsonschema" --version 2>/dev/null)" != "check-jsonschema, version $CHECK_JSONSCHEMA_VERSION" ]; then
  echo "installing check-jsonschema $CHECK_JSONSCHEMA_VERSION and PyYAML (PyPI) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "pyyaml==$PYYAML_VERSION"
fi
PY="$VENV/bin/python"
promtool --version 2>&1 | head -1
amtool --version 2>&1 | head -1
"$VENV/bin/check-jsonschema" --version

step "generated files are up to date"
run_check "slo-rules.yaml generated from slos.yaml" "$PY" deploy/generate_slo_rules.py --check
run_check "gleaner.json generated" "$PY" deploy/grafana/generate_dashboard.py --check

step "promtool check rules"
run_check "promtool check rules" promtool check rules deploy/prometheus/alerts.yaml deploy/prometheus/slo-rules.yaml

step "promtool test rules (every alert fires in one history, stays silent in another), as Prometheus 2 and 3 store the series"
# Prometheus 3 stores a classic histogram's le="7200" as le="7200.0" (prom3_histories.py): every
# history that has such a label runs twice, once as Gleaner writes it (what Prometheus 2 keeps),
# once as Prometheus 3 keeps it, and each must fire and stay silent alike. The two runs go in
# parallel (the SLO tests take most of the time, over 26 hours of series each).
prom3_dir=$(mktemp -d)
prom3_tests=$("$PY" tests/observability/prom3_histories.py "$prom3_dir" tests/observability/*.test.yaml)
promtool test rules tests/observability/*.test.yaml >"$prom3_dir/prom2.log" 2>&1 &
prom2_pid=$!
# shellcheck disable=SC2086 # one path a line, no spaces (mktemp)
promtool test rules $prom3_tests >"$prom3_dir/prom3.log" 2>&1 &
prom3_pid=$!
prom2_ok=0; wait "$prom2_pid" || prom2_ok=$?
prom3_ok=0; wait "$prom3_pid" || prom3_ok=$?
echo "- as Prometheus 2 stores them (le=\"7200\"):"; cat "$prom3_dir/prom2.log"
echo "- as Prometheus 3 stores them (le=\"7200.0\"):"; cat "$prom3_dir/prom3.log"
run_check "promtool test rules (Prometheus 2 label values)" test "$prom2_ok" = 0
run_check "promtool test rules (Prometheus 3 label values)" test "$prom3_ok" = 0
rm -rf "$prom3_dir"

step "amtool check-config"
run_check "amtool check-config" amtool check-config deploy/alertmanager/alertmanager.yaml

step "static checks: alerts, runbooks, metric names, dashboard queries, routes, templates"
run_check "check_static.py" "$PY" tests/observability/check_static.py

step "dashboard against Grafana's dashboard JSON schema"
run_check "check-jsonschema" "$VENV/bin/check-jsonschema" \
  --schemafile tests/observability/dashboard.jsonschema.json deploy/grafana/gleaner.json

step "end to end: gleaner -> Prometheus -> Alertmanager -> Slack webhook"
for _ in $(seq 1 60); do
  [ -x "$GLEANER_BIN" ] && break
  echo "waiting for $GLEANER_BIN"
  sleep 2
done
run_check "end to end" "$PY" tests/observability/e2e.py "$GLEANER_BIN"

step "observability: $passed passed, $failed failed"
echo "observability: $passed passed, $failed failed"
[ "$failed" = 0 ]
