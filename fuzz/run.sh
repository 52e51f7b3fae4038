#!/usr/bin/env bash
# Runs every fuzz target (or those named) for MINUTES each (default 2) and prints what
# each did: executions, speed, coverage, and any crash (saved under fuzz/artifacts/).
# Not part of CI: it needs nightly Rust and minutes per target. The seeds are small real
# files of each format, made from the fetched models and test photos (mmc models fetch
# --profile bundled and --profile test-assets first).
#
#   bash fuzz/run.sh 2                       # all six targets, 2 minutes each
#   bash fuzz/run.sh 10 image_decode         # one target, 10 minutes
set -euo pipefail
cd "$(dirname "$0")"
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$HOME/.cargo/bin:$PATH"
minutes=${1:-2}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image_decode audio_decode gguf_parse tokenizer_build ct2_convert json_schema)
models=${MMC_MODELS_DIR:-$PWD/../models}
export MMC_MODELS_DIR=$models
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds.
mkdir -p corpus/{image_decode,audio_decode,gguf_parse,tokenizer_build,ct2_convert,json_schema} logs
if [ ! -f corpus/image_decode/seed.png ]; then
  # A 24x16 copy of a test photo in each format (Pillow, when python3 has it), and small
  # real files of the retrieval gallery.
  python3 - "$models/test-photos/cat.png" <<'PY' || true
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB").resize((24, 16))
for fmt in ("png", "jpeg", "webp", "gif"):
    im.save(f"corpus/image_decode/seed.{fmt}", fmt.upper())
PY
  find "$models/retrieval-gallery" -size -40k -type f \( -name '*.png' -o -name '*.jpg' \) -exec cp {} corpus/image_decode/ \;
fi
if [ ! -f corpus/audio_decode/seed.wav ]; then
  sox -n -r 16000 -c 1 -b 16 corpus/audio_decode/seed.wav synth 0.2 sine 440
  sox corpus/audio_decode/seed.wav corpus/audio_decode/seed.flac
  sox corpus/audio_decode/seed.wav -r 8000 -c 2 corpus/audio_decode/seed-stereo.wav
  opusenc --quiet corpus/audio_decode/seed.wav corpus/audio_decode/seed.opus
fi
cp -n ../tests/fixtures/tiny-gguf/llama.gguf corpus/gguf_parse/ 2>/dev/null || true
cp -n "$models/llama-cpp-vocabs/ggml-vocab-deepseek-coder.gguf" corpus/tokenizer_build/ 2>/dev/null || true
cp -n ../tests/fixtures/tiny-gguf/qwen2.gguf corpus/tokenizer_build/ 2>/dev/null || true
if [ ! -f corpus/ct2_convert/seed-header ]; then
  # A model.bin header with no variables (version 6, "WhisperSpec", revision 3), behind a
  # three-word vocabulary; and the first 4 KiB of the real tiny.en model.
  python3 - <<'PY'
import struct
spec = b"WhisperSpec\0"
body = struct.pack("<I", 6) + struct.pack("<H", len(spec)) + spec + struct.pack("<III", 3, 0, 0)
vocab = b"a\nb\nc\n"
open("corpus/ct2_convert/seed-header", "wb").write(bytes([len(vocab)]) + vocab + body)
PY
  head -c 4096 "$models/whisper-tiny.en-ct2/model.bin" | { printf '\0'; cat; } > corpus/ct2_convert/seed-real-head || true
fi
i=0
for s in '{"type":"object","properties":{"name":{"type":"string","pattern":"^[A-Z][a-z]+$"},"age":{"type":"integer","minimum":0}},"required":["name"]}' \
  '{"type":"array","items":{"enum":["red","green",3,null]},"minItems":1,"maxItems":3}' \
  '{"$defs":{"n":{"anyOf":[{"type":"string","format":"date"},{"$ref":"#/$defs/n"}]}},"$ref":"#/$defs/n"}' \
  '{"type":"object","additionalProperties":{"type":"number","exclusiveMaximum":10}}'; do
  i=$((i + 1))
  printf '%s' "$s" > "corpus/json_schema/seed-$i.json"
done

cargo +nightly fuzz build -O >/dev/null 2>logs/build.log || { tail -30 logs/build.log; exit 1; }
printf '%-16s %12s %10s %8s %8s %s\n' TARGET EXECUTIONS "EXEC/S" COV FEATURES RESULT
for t in "${targets[@]}"; do
  set +e
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"logs/$t.log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
  if [ $rc -eq 0 ]; then result="no crash"; else result="FAILED ($(grep -m1 -oE 'ERROR: [^ ]+.*|panicked at [^:]+' "logs/$t.log" | head -c 120)); see fuzz/logs/$t.log"; fi
  printf '%-16s %12s %10s %8s %8s %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
