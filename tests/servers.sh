# Real storage servers for the tests: moto (S3) and Azurite (Azure Blob), installed from PyPI and
# npm into .tools/, started on 127.0.0.1 on free ports, stopped by PID when the shell exits.
#
# Source it, then call `start_servers`; it exports what the tests read:
#   GLEANER_TEST_S3=s3://BUCKET        plus AWS_ENDPOINT, AWS_ALLOW_HTTP, AWS_REGION and keys
#   GLEANER_TEST_AZURE=az://CONTAINER  plus AZURE_STORAGE_ACCOUNT_NAME/_KEY/_ENDPOINT, AZURE_ALLOW_HTTP
# (GCS: no emulator works with object_store's GCS client; the tests cover its configuration only.)

MOTO_VERSION=5.2.5
AZURITE_VERSION=3.35.0
TOOLS_DIR="${TOOLS_DIR:-$PWD/.tools}"
SERVER_PIDS=()

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for URL NAME LOG: poll until the server answers HTTP at all (any status).
wait_for() {
  local url=$1 name=$2 log=$3
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null "$url"; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

stop_servers() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${SERVER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${SERVER_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

install_servers() {
  mkdir -p "$TOOLS_DIR"
  if ! "$TOOLS_DIR/moto/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    echo "installing moto $MOTO_VERSION (PyPI)"
    python3 -m venv "$TOOLS_DIR/moto"
    "$TOOLS_DIR/moto/bin/pip" install --quiet --disable-pip-version-check \
      "moto[s3]==$MOTO_VERSION" flask flask-cors
  fi
  local azurite_main="$TOOLS_DIR/azurite/node_modules/azurite/dist/src/blob/main.js"
  if ! grep -q "\"version\": \"$AZURITE_VERSION\"" "$TOOLS_DIR/azurite/node_modules/azurite/package.json" 2>/dev/null \
     || [ ! -f "$azurite_main" ]; then
    echo "installing azurite $AZURITE_VERSION (npm)"
    mkdir -p "$TOOLS_DIR/azurite"
    npm install --prefix "$TOOLS_DIR/azurite" --silent --no-audit --no-fund "azurite@$AZURITE_VERSION"
  fi
}

start_servers() {
  install_servers
  trap stop_servers EXIT
  local logs="$TOOLS_DIR/logs"
  mkdir -p "$logs"

  local s3_port bucket=gleaner-test
  s3_port=$(free_port)
  "$TOOLS_DIR/moto/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >"$logs/moto.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_for "http://127.0.0.1:$s3_port/moto-api/" moto "$logs/moto.log"
  curl -sf -X PUT "http://127.0.0.1:$s3_port/$bucket" >/dev/null
  export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=gleaner-test AWS_SECRET_ACCESS_KEY=gleaner-test \
    GLEANER_TEST_S3="s3://$bucket"
  echo "moto (S3)        http://127.0.0.1:$s3_port  bucket $bucket  pid ${SERVER_PIDS[-1]}"

  local az_port
  az_port=$(free_port)
  # node runs main.js directly, so that the PID held is the server's own.
  node "$TOOLS_DIR/azurite/node_modules/azurite/dist/src/blob/main.js" \
    --blobHost 127.0.0.1 --blobPort "$az_port" --silent --inMemoryPersistence \
    --disableTelemetry --skipApiVersionCheck \
    >"$logs/azurite.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_for "http://127.0.0.1:$az_port/devstoreaccount1?comp=list" Azurite "$logs/azurite.log"
  # The emulator's published development account and key.
  export AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1 \
    AZURE_STORAGE_ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==' \
    AZURE_STORAGE_ENDPOINT="http://127.0.0.1:$az_port/devstoreaccount1" AZURE_ALLOW_HTTP=true \
    GLEANER_TEST_AZURE=az://gleaner-test
  echo "Azurite (Azure)  http://127.0.0.1:$az_port  container gleaner-test (created by the tests)  pid ${SERVER_PIDS[-1]}"
}
