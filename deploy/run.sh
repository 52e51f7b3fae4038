#!/usr/bin/env bash
# The main job on one machine: install prerequisites, build (release), fetch and verify
# the bundled models (and the demo photos), start the five services, run the demo flows
# available so far, then keep the cluster running until Ctrl-C.
#
#   bash deploy/run.sh                 # gRPC on 127.0.0.1:50051-50055, metrics 9464-9468
#   MMC_BASE_PORT=6000 bash deploy/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Tools deploy/setup.sh installs without root (cmake for whisper.cpp).
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"

t() { local s=$SECONDS; "$@"; printf '[run] %-40s %4ds\n' "$*" $((SECONDS - s)) >&2; }

t bash deploy/setup.sh
t cargo build --release --workspace --bins
t ./target/release/mmc models fetch --profile bundled
t ./target/release/mmc models fetch --profile test-assets

# The services never run as root: as root, they run as the system user mmc (made once).
if [ "$(id -u)" = 0 ] && [ -z "${MMC_USER:-}" ] && [ "${MMC_ALLOW_ROOT:-}" != true ]; then
  id -u mmc >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin mmc
  export MMC_USER=mmc
fi

base=${MMC_BASE_PORT:-50051}
./target/release/mmc up "$@" &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up' INT TERM
echo "[run] waiting for the cluster (model loading)..." >&2
for _ in $(seq 1 600); do
  ./target/release/mmc health "http://127.0.0.1:$((base + 4))" >/dev/null 2>&1 \
    && ./target/release/mmc health "http://127.0.0.1:$base" >/dev/null 2>&1 \
    && ./target/release/mmc health "http://127.0.0.1:$((base + 1))" >/dev/null 2>&1 \
    && ./target/release/mmc health "http://127.0.0.1:$((base + 2))" >/dev/null 2>&1 \
    && ./target/release/mmc health "http://127.0.0.1:$((base + 3))" >/dev/null 2>&1 && break
  kill -0 $up 2>/dev/null || { echo "[run] mmc up exited" >&2; wait $up; exit 1; }
  sleep 1
done
MMC_GATEWAY_ENDPOINT="http://127.0.0.1:$((base + 4))" MMC_TEXTGEN_ENDPOINT="http://127.0.0.1:$((base + 3))" \
  ./target/release/mmc demo || echo "[run] demo failed" >&2
echo "[run] cluster running; web UI at http://127.0.0.1:${MMC_HTTP_PORT:-8080}/ ; Ctrl-C to stop" >&2
wait $up
