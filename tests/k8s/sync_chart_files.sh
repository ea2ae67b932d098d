#!/usr/bin/env bash
# Copies the observability files the Helm chart ships from deploy/ (their source of truth) into
# helm/gleaner/files/, under the same relative paths: Helm reads only files inside the chart
# directory, so the chart keeps byte-identical copies.
#
#   tests/k8s/sync_chart_files.sh     after a change in deploy/ (UPDATE_GOLDEN=1 tests/k8s/run.sh
#                                     runs it too, before rewriting the golden files)
#
# Which files: every "files/…" path the chart's templates name (.Files.Get "files/prometheus/…"),
# so a template is the one list. tests/k8s/chart_test.py (check chart-files) fails while a copy
# differs from deploy/, is missing, or is left over.
set -euo pipefail
cd "$(dirname "$0")/../.."

chart=helm/gleaner
mapfile -t paths < <(grep -oh '"files/[^" ]\+"' "$chart"/templates/* | tr -d '"' | sed 's|^files/||' | sort -u)
if [ "${#paths[@]}" = 0 ]; then
  echo "no template of $chart names a files/… path" >&2
  exit 1
fi
for path in "${paths[@]}"; do
  if [ ! -f "deploy/$path" ]; then
    echo "$chart/templates name files/$path, but deploy/$path does not exist" >&2
    exit 1
  fi
done

# Start from nothing, so that a copy no template names any more goes away.
rm -rf "$chart/files"
for path in "${paths[@]}"; do
  mkdir -p "$chart/files/$(dirname "$path")"
  cp "deploy/$path" "$chart/files/$path"
  echo "deploy/$path -> $chart/files/$path"
done
