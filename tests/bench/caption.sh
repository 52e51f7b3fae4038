#!/usr/bin/env bash
# Image-description benchmark: captions/s and p50/p95 latency of the bundled chain
# (embed.v1.EncodeImage with EfficientNet-Lite0 -> caption.v1.Caption with SmolLM2-135M, alt
# text) on the test photos, with 1 and 4 concurrent clients, against release builds of the
# two services started here. The decoder's speed against llama.cpp on the same GGUF is
# measured by tests/bench/textgen.sh. A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/caption.sh [CLIENTS=1,4] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MMC_MODELS_DIR:-$PWD/models}
clients=${1:-1,4}
rounds=${2:-2}
[ -d "$models/test-photos" ] || { echo "no $models/test-photos: run 'mmc models fetch --profile test-assets'" >&2; exit 1; }
# MMC_BENCH_PROFILE=debug uses the dev build (dependencies at opt-level 3) to skip a
# release build; the model code is in those dependencies.
profile=${MMC_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -q -p mmc -p mmc-embed -p mmc-caption --bins; else cargo build -q -p mmc -p mmc-embed -p mmc-caption --bins; fi
bin=./target/$profile
export MMC_MODELS_DIR=$models
base=$((20000 + RANDOM % 20000))
$bin/mmc-embed --listen 127.0.0.1:$base --metrics-listen 127.0.0.1:$((base + 2)) 2>/dev/null &
embed=$!
$bin/mmc-caption --listen 127.0.0.1:$((base + 1)) --metrics-listen 127.0.0.1:$((base + 3)) 2>/dev/null &
caption=$!
trap 'kill $embed $caption 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 1 120); do
  $bin/mmc health http://127.0.0.1:$base >/dev/null 2>&1 && $bin/mmc health http://127.0.0.1:$((base + 1)) >/dev/null 2>&1 && break
  sleep 1
done
$bin/mmc-caption-bench --embed http://127.0.0.1:$base --caption http://127.0.0.1:$((base + 1)) \
  --photos "$models/test-photos" --clients "$clients" --rounds "$rounds"
