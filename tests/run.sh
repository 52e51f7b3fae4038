#!/usr/bin/env bash
# The whole test suite on a fresh machine: prerequisites, build, bundled models, then
# every test (unit, numeric, e2e with real processes on loopback). Prints how long each
# part took so the CI budget stays visible.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tools deploy/setup.sh installs without root (cmake for whisper.cpp).
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"

# CI builds from a clean clone, so incremental caches buy nothing there and cost tens of
# GB (they ran one CI machine out of disk mid-build). Developers may override.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

declare -a timings=()
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name" >&2
  "$@"
  timings+=("$(printf '%-28s %5ds' "$name" $((SECONDS - start)))")
}
report() {
  echo "==> timings" >&2
  for line in "${timings[@]}"; do echo "    $line" >&2; done
  # Disk is a budget too: the build's footprint and what is left beside it.
  echo "==> disk: target/ $(du -sh target 2>/dev/null | cut -f1), free $(df -h . | awk 'NR==2 {print $4}')" >&2
}
echo "==> disk free at start: $(df -h . | awk 'NR==2 {print $4}')" >&2
trap report EXIT

step "setup (system packages)" bash deploy/setup.sh --test
# One profile (dev, dependencies at opt-level 3) for the binaries and the tests, so the
# e2e tests run the very binaries built here.
# Style and lint gates first: they fail in seconds to minutes, before the long build.
# (Both are rustup components of the one toolchain; a toolchain without them is said
# loudly rather than failing the run.)
if cargo fmt --version >/dev/null 2>&1; then
  step "format (cargo fmt --check)" cargo fmt --all -- --check
else
  echo "==> WARNING: rustfmt is not installed: the format gate is skipped" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  step "lint (clippy -D warnings)" cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "==> WARNING: clippy is not installed: the lint gate is skipped" >&2
fi
step "build" cargo build --workspace --bins --tests --locked
step "models fetch (bundled)" ./target/debug/mmc models fetch --profile bundled
step "test assets fetch (photos, vocabularies)" ./target/debug/mmc models fetch --profile test-assets
step "tests" cargo test --workspace --locked --no-fail-fast
# The GPU path compiles without a GPU (issue #31): CUDA 13.0's compiler from PyPI wheels
# (deploy/cuda-toolchain.sh, pinned; it also writes the link stubs), then candle's kernels
# (nvcc, compute capability 9.0: H100/H200) and the embed, caption and textgen services'
# Rust code with their `cuda` features. A check, not a link, and without whisper.cpp's CUDA
# backend (mmc-speech/cuda): those two take about 40 minutes more on 2 cores;
# `tests/bench/gpu.sh pack` builds and links all four (docs/deploy.md).
cuda_check() (
  eval "$(bash deploy/cuda-toolchain.sh)"
  CUDA_COMPUTE_CAP=90 cargo check --locked --bins -p mmc-embed -p mmc-caption -p mmc-textgen \
    --features mmc-embed/cuda,mmc-caption/cuda,mmc-textgen/cuda
)
step "cuda compile check (sm_90)" cuda_check
