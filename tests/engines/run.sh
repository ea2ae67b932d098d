#!/usr/bin/env bash
# Engines read Gleaner's outputs (tests/run.sh calls this; it runs alone too):
#
#   tests/engines/run.sh            # DuckDB and Spark (local[2]); GLEANER_ENGINES=duckdb for DuckDB alone
#
# tests/engines/check.py writes the outputs of several sources with the real binary
# ($GLEANER_BIN, default target/debug/gleaner), flat and hive layouts, plain and gzipped, runs the
# queries of examples/queries/ with DuckDB and Spark, and compares their answers with a
# computation from the input files. duckdb and pyspark (PyPI) are installed into
# .tools/engines-venv when missing; Spark needs Java (`java` on the PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
VENV="$TOOLS_DIR/engines-venv"
DUCKDB_VERSION=1.4.2
PYSPARK_VERSION=4.0.1
export GLEANER_BIN="${GLEANER_BIN:-$PWD/target/debug/gleaner}"
[ -x "$GLEANER_BIN" ] || cargo build --quiet --locked -p sidecar
installed=$("$VENV/bin/pip" freeze 2>/dev/null || true)
if ! grep -q "^duckdb==$DUCKDB_VERSION$" <<<"$installed" \
   || ! grep -q "^pyspark==$PYSPARK_VERSION$" <<<"$installed"; then
  echo "installing duckdb $DUCKDB_VERSION and pyspark $PYSPARK_VERSION (PyPI) into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb==$DUCKDB_VERSION" "pyspark==$PYSPARK_VERSION"
fi
spark=(--spark)
if [ "${GLEANER_ENGINES:-all}" = duckdb ]; then
  spark=()
elif ! command -v java >/dev/null; then
  echo "engine test FAILED: Spark needs Java (apt-get install default-jre-headless), or run with GLEANER_ENGINES=duckdb" >&2
  exit 1
fi
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" tests/engines/check.py "${spark[@]}" 2>&1 \
  | grep -v -e '^WARNING: Using incubator modules' -e 'log4j2-defaults.properties' \
            -e 'NativeCodeLoader' -e 'Setting default log level' -e 'setLogLevel(newLevel)'
