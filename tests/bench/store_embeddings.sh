#!/usr/bin/env bash
# The store benchmark on real embeddings instead of drawn vectors: IMAGES caption-like
# sentences and a paraphrase of each (tests/scripts/caption_sentences.py) embedded by the
# bundled text model (all-MiniLM-L6-v2, 384-d) through the gateway's /v1/embeddings, plus
# 200 query sentences that are none of them; then `store.sh` on those vectors (each
# image's vectors are its caption's and its paraphrase's). The vectors are cached
# (~/.cache/mmc/bench/, keyed by IMAGES): embedding 100 000 images' 200 000 sentences takes
# about 25 minutes on two cores, the benchmark itself minutes.
# A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/store_embeddings.sh [IMAGES]   # default 100000; sizes measured: 10000 and IMAGES
#   STORES=embedded INDEX=scan BREADTH=100,400 bash tests/bench/store_embeddings.sh 100000
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
images=${1:-100000}
queries=200
cache=${MMC_BENCH_CACHE:-$HOME/.cache/mmc/bench}
vectors=$cache/minilm-captions-$images.f32
mkdir -p "$cache"
if [ ! -s "$vectors" ]; then
  cargo build -q -p mmc-embed -p mmc-gateway --bins
  bin=./target/debug
  export MMC_MODELS_DIR=${MMC_MODELS_DIR:-$PWD/models}
  $bin/mmc models fetch --profile bundled >/dev/null
  work=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
  base=$((40000 + RANDOM % 10000))
  $bin/mmc-embed --listen 127.0.0.1:$base --metrics-listen 127.0.0.1:$((base + 1)) 2>"$work/embed.log" &
  for _ in $(seq 1 300); do $bin/mmc health "http://127.0.0.1:$base" >/dev/null 2>&1 && break; sleep 1; done
  $bin/mmc-gateway --listen 127.0.0.1:$((base + 2)) --metrics-listen 127.0.0.1:$((base + 3)) --http-listen 127.0.0.1:$((base + 4)) \
    --embed-endpoint "http://127.0.0.1:$base" --data-dir "$work/data" 2>"$work/gateway.log" &
  for _ in $(seq 1 300); do $bin/mmc health "http://127.0.0.1:$((base + 2))" >/dev/null 2>&1 && break; sleep 1; done
  # 100 images more than measured: each size also times 20 single inserts.
  python3 tests/scripts/caption_sentences.py $((images + 100)) "$queries" "$work/texts.txt"
  python3 tests/scripts/embed_lines.py "http://127.0.0.1:$((base + 4))" "$work/texts.txt" "$work/vectors.f32"
  mv "$work/vectors.f32" "$vectors"
  kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true
fi
echo "== real embeddings: $vectors ($images images, all-MiniLM-L6-v2 of caption-like sentences)"
sizes=(10000 "$images")
if [ "$images" -le 10000 ]; then sizes=("$images"); fi
VECTORS=$vectors bash tests/bench/store.sh "${sizes[@]}"
