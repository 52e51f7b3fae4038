#!/usr/bin/env bash
# The three user jobs end to end through the gateway, per stage and in total, with the
# gateway's own cost of each hop to a model service (its stage time minus the time the model
# service reports, goal ≤ 1 ms p50):
#   - indexing: photos/s for 50 photos, captions included; describe p50/p95;
#   - search: p50/p95 by words at 1 000 and 10 000 indexed images, 1 and 16 at once (the
#     store is filled past the real photos with random vectors of the same space by
#     `mmc-store fill`, between gateway runs: search costs the same whatever the vectors);
#   - meetings: seconds per minute of audio for 1, 10 and 45 minutes (espeak-ng speaking the
#     evaluation set's lines), then ask p50/p95.
# Starts the five services on free ports with the bundled models, runs all of it RUNS times
# (default 3; a fresh gateway store each time), writes every measurement as a JSON line,
# prints a table of the medians over the runs (each p50 with its range) and draws the stage
# breakdown per job (docs/jobs.png by default; matplotlib 3.9.2 goes into a venv of its own
# once). Prints the CPU first: figures
# of another machine are not this one's. A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/jobs.sh                                    # everything, 3 runs (about 20 min here)
#   RUNS=1 MINUTES=1,10 SIZES="1000" bash tests/bench/jobs.sh   # a shorter run
#   PLOT=/tmp/jobs.png RESULTS=/tmp/jobs.jsonl bash tests/bench/jobs.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
models=${MMC_MODELS_DIR:-$PWD/models}
runs=${RUNS:-3}
minutes=${MINUTES:-1,10,45}
sizes=${SIZES:-1000 10000}
plot=${PLOT:-docs/jobs.png}
# The test build by default (optimized, as the e2e tests run it); the whole workspace, so
# that the dependencies' features match and nothing is rebuilt.
profile=${MMC_BENCH_PROFILE:-debug}
if [ "$profile" = release ]; then cargo build --release -q --workspace --bins; else cargo build -q --workspace --bins; fi
bin=./target/$profile
export MMC_MODELS_DIR=$models
$bin/mmc models fetch --profile bundled >/dev/null
$bin/mmc models fetch --profile test-assets >/dev/null
venv=${MMC_BENCH_PLOT_VENV:-$HOME/.cache/mmc/plot-venv}
if ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "[bench] installing matplotlib 3.9.2 into $venv (once)" >&2
  python3 -m venv "$venv" && "$venv/bin/pip" install -q matplotlib==3.9.2
fi

work=$(mktemp -d)
results=${RESULTS:-$work/results.jsonl}
: > "$results"
base=$((20000 + RANDOM % 20000))
pids=()
gateway_pid=
trap 'kill "${pids[@]}" $gateway_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
wait_serving() { for _ in $(seq 1 300); do $bin/mmc health "http://127.0.0.1:$1" >/dev/null 2>&1 && return 0; sleep 1; done; echo "port $1 never served" >&2; exit 1; }
i=0
for svc in embed caption speech textgen; do
  $bin/mmc-$svc --listen 127.0.0.1:$((base + i)) --metrics-listen 127.0.0.1:$((base + 10 + i)) 2>>"$work/services.log" &
  pids+=($!)
  i=$((i + 1))
done
gw=127.0.0.1:$((base + 4))
gw_metrics=127.0.0.1:$((base + 14))
start_gateway() {
  $bin/mmc-gateway --listen "$gw" --metrics-listen "$gw_metrics" --http-listen 127.0.0.1:0 --data-dir "$work/data" \
    --embed-endpoint http://127.0.0.1:$base --caption-endpoint http://127.0.0.1:$((base + 1)) \
    --speech-endpoint http://127.0.0.1:$((base + 2)) --textgen-endpoint http://127.0.0.1:$((base + 3)) 2>>"$work/gateway.log" &
  gateway_pid=$!
  wait_serving $((base + 4))
}
stop_gateway() { kill -TERM "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true; gateway_pid=; }
for port in $base $((base + 1)) $((base + 2)) $((base + 3)); do wait_serving $port; done

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
echo "== CPU: $cpu; flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|amx_tile)$' | tr '\n' ' ')"
jobs_cmd() { $bin/mmc bench jobs --gateway "http://$gw" --gateway-metrics "$gw_metrics" "$@" | tee -a "$results"; }
t0=$(date +%s)
for run in $(seq 1 "$runs"); do
  echo "== run $run of $runs: indexing and describe"
  rm -rf "$work/data"
  start_gateway
  jobs_cmd --part index
  for size in $sizes; do
    echo "== run $run of $runs: search at $size images"
    stop_gateway
    $bin/mmc-store fill --store "redb:$work/data" --count "$size"
    start_gateway
    jobs_cmd --part search --case "$size images"
  done
  echo "== run $run of $runs: meetings ($minutes minutes) and ask"
  jobs_cmd --part meeting --minutes "$minutes"
  stop_gateway
done
echo "== done in $(($(date +%s) - t0)) s"
"$venv/bin/python" tests/scripts/jobs_plot.py "$results" "$plot" --title "mmc jobs, $cpu, $(date -u +%Y-%m-%d)"
