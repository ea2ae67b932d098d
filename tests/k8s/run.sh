#!/usr/bin/env bash
# The Helm chart's tests (helm/gleaner and the parent-chart example helm/examples/my-app), with
# real tools and no cluster:
#
#   tests/k8s/run.sh                  everything
#   UPDATE_GOLDEN=1 tests/k8s/run.sh  copy deploy/ files into helm/gleaner/files/, rewrite
#                                     tests/k8s/golden/ and the chart README's values table
#
#   1. chart_test.py: the chart's copies of deploy/ files (helm/gleaner/files/, synced by
#      tests/k8s/sync_chart_files.sh, which UPDATE_GOLDEN=1 runs) equal to deploy/, strict lint by
#      real Helm (helm-python-sdk), golden renders, kubernetes-validate --strict (every minor
#      version from 1.29.0 to the newest it knows, 1.27.0 for classic), the PodMonitor and
#      PrometheusRules against the prometheus-operator models (npm), the PrometheusRules and the
#      dashboard ConfigMap equal to the deploy/ files, every PodMonitor's job matching the alerts'
#      job selector, the peers' values rendered, `mode: snippet` fed to a third-party-style chart,
#      deploy/kustomize built by the real `kubectl kustomize` (on the machine, or $KUBECTL), a table
#      of bad values and their messages, the schema's strictness, the chart README's values table,
#      the README snippets
#   2. pod_run.py: the rendered Pods run as local processes ($GLEANER_BIN, default
#      target/debug/gleaner: the demo emitter and Gleaner), stopped in Kubernetes' order, every
#      emitted file in the outputs exactly once (local directory, and S3 on moto): the examples,
#      my-app, two namespaces with one StatefulSet name, the kustomized third-party Deployment and
#      StatefulSet, the snippet in a third-party chart, sidecar.gateAppStart both ways, the uid
#      contract (the application as uid 1000, umask 022 and 002)
#
# Installs its tools once into .tools/ (reused while their pinned versions match): a Python venv
# .tools/k8s-venv (PyPI), npm packages in .tools/npm-k8s, moto in .tools/moto (the version of
# tests/servers.sh). Needs python3, node/npm. Exits non-zero if any check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$SECONDS
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
VENV="$TOOLS_DIR/k8s-venv"
NPM_DIR="$TOOLS_DIR/npm-k8s"
export GLEANER_BIN="${GLEANER_BIN:-$PWD/target/debug/gleaner}"

PY_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pyyaml==6.0.3)
NPM_PACKAGES=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0)
MOTO_VERSION=$(sed -n 's/^MOTO_VERSION=//p' tests/servers.sh)

mkdir -p "$TOOLS_DIR"
if [ "$(cat "$VENV/.pinned" 2>/dev/null)" != "${PY_PACKAGES[*]}" ]; then
  echo "installing ${PY_PACKAGES[*]} (PyPI) into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" > "$VENV/.pinned"
fi
if [ "$(cat "$NPM_DIR/.pinned" 2>/dev/null)" != "${NPM_PACKAGES[*]}" ]; then
  echo "installing ${NPM_PACKAGES[*]} (npm) into $NPM_DIR"
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --silent --no-audit --no-fund "${NPM_PACKAGES[@]}"
  echo "${NPM_PACKAGES[*]}" > "$NPM_DIR/.pinned"
fi
# moto, exactly as tests/servers.sh installs it (the same venv serves both).
if ! "$TOOLS_DIR/moto/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "installing moto $MOTO_VERSION (PyPI)"
  python3 -m venv "$TOOLS_DIR/moto"
  "$TOOLS_DIR/moto/bin/pip" install --quiet --disable-pip-version-check \
    "moto[s3]==$MOTO_VERSION" flask flask-cors
fi
echo "k8s tools ready ($((SECONDS - started))s)"

export K8S_NPM_DIR="$NPM_DIR" MOTO_SERVER="$TOOLS_DIR/moto/bin/moto_server"
status=0
"$VENV/bin/python" tests/k8s/chart_test.py || status=1
"$VENV/bin/python" tests/k8s/pod_run.py || status=1

if [ "$status" = 0 ]; then
  echo "k8s: all chart and Pod checks passed in $((SECONDS - started))s"
else
  echo "k8s: FAILED (see above) after $((SECONDS - started))s"
fi
exit "$status"
