# Sourced by the speech benchmarks (`source tests/bench/speech_common.sh "$@"`, after
# `set -euo pipefail`): runs from the repository root with the project's tools on PATH and
# sets `models`, `id` (argument 1, default tiny.en), `threads` (argument 2, default every
# core) and `ggml`, the whisper.cpp file of that model that WEIGHTS names (auto: the 8-bit
# Q8_0 file where it was fetched, else f16; q8_0; f16), as `mmc-speech --weights` chooses
# it; stops when it is missing.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
models=${MMC_MODELS_DIR:-$PWD/models}
id=${1:-whisper-tiny.en-ct2}
threads=${2:-$(nproc)}
case "${WEIGHTS:-auto}" in
  auto) ggml="$models/$id/ggml-model-q8_0.bin"; [ -f "$ggml" ] || ggml="$models/$id/ggml-model.bin" ;;
  q8_0) ggml="$models/$id/ggml-model-q8_0.bin" ;;
  f16) ggml="$models/$id/ggml-model.bin" ;;
  *) echo "WEIGHTS is auto, q8_0 or f16" >&2; exit 2 ;;
esac
[ -f "$ggml" ] || { echo "no $ggml: run 'mmc models fetch' first" >&2; exit 1; }
