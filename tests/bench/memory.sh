#!/usr/bin/env bash
# Memory and start-up of each service, as the Kubernetes requests/limits and startup
# probes are sized from (k8s/base/*.yaml, docs/deploy.md): starts the cluster with
# `mmc up`, records when each service reports SERVING, runs `mmc demo` (every flow:
# index, search, describe, meeting summary and questions, chat), then prints each
# process's current and peak resident memory (VmRSS, VmHWM from /proc).
# A command, not a test: run it on a quiet machine after `cargo build` and the model fetch.
#
#   bash tests/bench/memory.sh [BIN_DIR]      # default: target/release, else target/debug
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
bin=${1:-$([ -x target/release/mmc ] && echo target/release || echo target/debug)}
base=${MMC_BENCH_BASE_PORT:-56051}
metrics=${MMC_BENCH_METRICS_BASE_PORT:-19464}
data=$(mktemp -d)
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$data"' EXIT

rss() {
  printf '%-10s %12s %12s\n' SERVICE "RSS (MB)" "PEAK (MB)"
  for svc in embed caption speech textgen gateway; do
    pid=$(pgrep -f "$bin/mmc-$svc --listen" | head -1)
    [ -n "$pid" ] || continue
    awk -v s="$svc" '/VmRSS/{r=$2} /VmHWM/{h=$2} END{printf "%-10s %12.0f %12.0f\n", s, r/1024, h/1024}' "/proc/$pid/status"
  done
}

# As root, the services run as nobody (mmc up refuses root services unasked).
[ "$(id -u)" = 0 ] && export MMC_USER=${MMC_USER:-nobody}
start=$(date +%s.%N)
"$bin/mmc" up --base-port "$base" --metrics-base-port "$metrics" --http-port $((metrics + 5)) --data-dir "$data" \
  --bin-dir "$bin" > "$data/up.log" 2>&1 &
up=$!
echo "== start-up (seconds until SERVING, all five loading at once)"
declare -A ready=()
for _ in $(seq 1 1200); do
  for i in 0 1 2 3 4; do
    svc=$(echo embed caption speech textgen gateway | cut -d' ' -f$((i + 1)))
    [ -n "${ready[$svc]:-}" ] && continue
    if "$bin/mmc" health "http://127.0.0.1:$((base + i))" >/dev/null 2>&1; then
      ready[$svc]=1
      printf '%-10s %6.1f\n' "$svc" "$(echo "$(date +%s.%N) - $start" | bc)"
    fi
  done
  [ ${#ready[@]} -eq 5 ] && break
  kill -0 $up 2>/dev/null || { cat "$data/up.log"; exit 1; }
  sleep 0.5
done
echo; echo "== memory after start-up"; rss
MMC_GATEWAY_ENDPOINT="http://127.0.0.1:$((base + 4))" MMC_TEXTGEN_ENDPOINT="http://127.0.0.1:$((base + 3))" \
  "$bin/mmc" demo > "$data/demo.log" 2>&1 || { echo "mmc demo failed:"; tail -20 "$data/demo.log"; exit 1; }
echo; echo "== memory after mmc demo (every flow)"; rss
