#!/usr/bin/env bash
# Text-generation benchmark: our engine vs llama.cpp on the same GGUF and thread count, in
# the same run (prefill and decode tokens/s), plus our aggregate tokens/s with 1, 2 and 4
# concurrent streams. RUNS runs (default 5); prints each figure's median and range and the
# ratios ours/llama.cpp per run, with the CPU and its flags. A command, not a test: run it on
# a quiet machine.
#
#   bash tests/bench/textgen.sh [GGUF] [THREADS]
#   RUNS=3 MMC_BENCH_PROFILE=dev bash tests/bench/textgen.sh   # reuse the test build
#
# llama.cpp comes from PyPI (llama-cpp-python 0.3.36, built from source) into cached
# virtualenvs, the first run builds them (minutes each): one with portable AVX2 flags (see
# MODELS.md's ggml pitfall), and, on a CPU with AVX-512, one with the best flags that run
# here: AVX-512 (+VNNI, +BF16 where present), AMX off (llama.cpp's AMX path is a separate
# backend, not what a CPU build of ours is compared with).
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MMC_MODELS_DIR:-$PWD/models}
gguf=${1:-$models/smollm2-135m-instruct-q4_1/model.gguf}
threads=${2:-$(nproc)}
runs=${RUNS:-5}
[ -f "$gguf" ] || { echo "no $gguf: run 'mmc models fetch' first" >&2; exit 1; }

has() { grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -qx "$1"; }
common="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF"
builds=("avx2|${MMC_BENCH_VENV:-$HOME/.cache/mmc/llama-cpp-venv}|$common -DGGML_AVX512=OFF")
if has avx512f; then
  flags="$common -DGGML_AVX512=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  name=avx512
  if has avx512_vnni; then flags="$flags -DGGML_AVX512_VNNI=ON"; name=$name+vnni; fi
  if has avx512_bf16; then flags="$flags -DGGML_AVX512_BF16=ON"; name=$name+bf16; fi
  if has avx512vbmi; then flags="$flags -DGGML_AVX512_VBMI=ON"; name=$name+vbmi; fi
  builds+=("$name|$HOME/.cache/mmc/llama-cpp-avx512-venv|$flags")
fi
for b in "${builds[@]}"; do
  IFS='|' read -r name venv flags <<< "$b"
  if ! "$venv/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
    echo "[bench] building llama-cpp-python 0.3.36 ($name) into $venv (once)" >&2
    python3 -m venv "$venv"
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/pip" install -q --no-cache-dir llama-cpp-python==0.3.36 numpy
  fi
done
# MMC_BENCH_PROFILE=dev reuses the test build (dependencies and mmc-llm at opt-level 3).
profile=${MMC_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -q -p mmc-textgen --bin mmc-textgen-bench; else profile=debug; cargo build -q -p mmc-textgen --bin mmc-textgen-bench; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for run in $(seq 1 "$runs"); do
  echo "[bench] run $run of $runs" >&2
  for b in "${builds[@]}"; do
    IFS='|' read -r name venv flags <<< "$b"
    "$venv/bin/python" tests/scripts/llama_cpp_bench.py "$gguf" --threads "$threads" --build "$name" > "$work/ref-$name.$run.json"
  done
  RAYON_NUM_THREADS=$threads ./target/$profile/mmc-textgen-bench --gguf "$gguf" --json > "$work/ours.$run.json"
done
python3 tests/scripts/textgen_bench_summary.py "$work" "$runs" "$gguf" "$threads"
