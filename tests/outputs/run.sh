#!/usr/bin/env bash
# Checks output objects against the JSON Schemas in schema/ (tests/run.sh calls this with the
# outputs the end-to-end tests wrote, kept through GLEANER_OUTPUT_ARCHIVE; it runs alone too):
#
#   tests/outputs/run.sh PATH...      # output objects, or directories holding them
#
# fastjsonschema (PyPI) is installed into .tools/outputs-venv when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
VENV="$TOOLS_DIR/outputs-venv"
FASTJSONSCHEMA_VERSION=2.22.3
installed=$("$VENV/bin/pip" show fastjsonschema 2>/dev/null || true)
if ! grep -q "^Version: $FASTJSONSCHEMA_VERSION$" <<<"$installed"; then
  echo "installing fastjsonschema $FASTJSONSCHEMA_VERSION (PyPI) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "fastjsonschema==$FASTJSONSCHEMA_VERSION"
fi
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" tests/outputs/validate.py "$@"
