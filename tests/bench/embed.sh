#!/usr/bin/env bash
# Latent-service benchmark, one run, same weights, inputs, batch sizes and thread count:
#   PyTorch (transformers' BertModel for all-MiniLM-L6-v2; EfficientNet-Lite0 in torch,
#   checked against the reference logits first) against our candle engines.
# A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/embed.sh [THREADS]
#
# PyTorch comes from PyPI into $MMC_BENCH_TORCH_VENV (default ~/.cache/mmc/torch-venv),
# installed once.
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MMC_MODELS_DIR:-$PWD/models}
threads=${1:-$(nproc)}
venv=${MMC_BENCH_TORCH_VENV:-$HOME/.cache/mmc/torch-venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for id in all-minilm-l6-v2 efficientnet-lite0; do
  [ -f "$models/$id/model.safetensors" ] || { echo "no $models/$id: run 'mmc models fetch' first" >&2; exit 1; }
done
if ! "$venv/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "[bench] installing torch 2.5.1 and transformers 4.46.3 into $venv (once)" >&2
  python3 -m venv "$venv" && "$venv/bin/pip" install -q torch==2.5.1 transformers==4.46.3 safetensors numpy
fi

cargo build --release -q -p mmc-embed --bin mmc-embed-bench
# The same heap settings on both sides: our services fix glibc's mmap and trim thresholds at
# start (services/runtime/src/memory.rs), which spares PyTorch's convolutions just as many
# page faults (EfficientNet-Lite0 in torch: about 37 -> 50 images/s here).
echo "[bench] PyTorch, $threads threads, heap as in our services" >&2
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647 \
OMP_NUM_THREADS=$threads "$venv/bin/python" tests/scripts/embed_torch_bench.py "$models" "$work/texts.txt" \
  --threads "$threads" > "$work/reference.json"
echo "[bench] ours, $threads threads" >&2
RAYON_NUM_THREADS=$threads ./target/release/mmc-embed-bench --models-dir "$models" --texts "$work/texts.txt" \
  --reference "$work/reference.json"
