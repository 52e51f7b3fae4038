#!/usr/bin/env bash
# Text-generation benchmark: our engine vs llama.cpp on the same GGUF and thread count, in
# one run (prefill and decode tokens/s), plus our aggregate tokens/s with 1, 2 and 4
# concurrent streams. A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/textgen.sh [GGUF] [THREADS]
#
# llama.cpp comes from PyPI (llama-cpp-python, built from source with portable CPU flags,
# see MODELS.md's ggml pitfall) into a cached virtualenv; the first run builds it (minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MMC_MODELS_DIR:-$PWD/models}
gguf=${1:-$models/smollm2-135m-instruct-q4_1/model.gguf}
threads=${2:-$(nproc)}
venv=${MMC_BENCH_VENV:-$HOME/.cache/mmc/llama-cpp-venv}

[ -f "$gguf" ] || { echo "no $gguf: run 'mmc models fetch' first" >&2; exit 1; }
if ! "$venv/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
  echo "[bench] building llama-cpp-python 0.3.36 into $venv (once)" >&2
  python3 -m venv "$venv"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DLLAMA_CURL=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/pip" install -q llama-cpp-python==0.3.36 numpy
fi
# MMC_BENCH_PROFILE=dev reuses the test build (dependencies and mmc-llm at opt-level 3).
profile=${MMC_BENCH_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release -q -p mmc-textgen --bin mmc-textgen-bench; else profile=debug; cargo build -q -p mmc-textgen --bin mmc-textgen-bench; fi
ref=$(mktemp)
trap 'rm -f "$ref"' EXIT
"$venv/bin/python" tests/scripts/llama_cpp_bench.py "$gguf" --threads "$threads" > "$ref"
RAYON_NUM_THREADS=$threads ./target/$profile/mmc-textgen-bench --gguf "$gguf" --reference "$ref"
