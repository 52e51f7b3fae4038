# Sourced by the speech benchmarks: sets `ggml` to the whisper.cpp file of model `$id` under
# `$models` that WEIGHTS names (auto: the 8-bit Q8_0 file where it was fetched, else f16;
# q8_0; f16), as `mmc-speech --weights` chooses it, and stops when it is missing.
case "${WEIGHTS:-auto}" in
  auto) ggml="$models/$id/ggml-model-q8_0.bin"; [ -f "$ggml" ] || ggml="$models/$id/ggml-model.bin" ;;
  q8_0) ggml="$models/$id/ggml-model-q8_0.bin" ;;
  f16) ggml="$models/$id/ggml-model.bin" ;;
  *) echo "WEIGHTS is auto, q8_0 or f16" >&2; exit 2 ;;
esac
[ -f "$ggml" ] || { echo "no $ggml: run 'mmc models fetch' first" >&2; exit 1; }
