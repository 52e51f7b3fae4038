#!/usr/bin/env bash
# Word error rate of mmc-speech's pipeline (decode, chunk at pauses, whisper.cpp, guards)
# on an evaluation set, for each encoder window (--encoder-window fit and full), so a speed
# change to the pipeline is checked against the transcripts it gives:
# the five LibriVox clips of Debian's pocketsphinx-testdata (human transcripts) and every
# scripted meeting of tests/fixtures/meetings in three espeak-ng voices (tests/scripts/speech_wer.py).
# A command, not a test (a few minutes); prints a Markdown table.
#
#   bash tests/bench/speech_wer.sh [MODEL_ID] [THREADS]
#   VOICES=en-us,en-gb,en-us+f3 SPEED=150 WINDOWS="fit full" WEIGHTS=auto|q8_0|f16 bash tests/bench/speech_wer.sh
set -euo pipefail
# shellcheck source=tests/bench/speech_common.sh
source "$(dirname "$0")/speech_common.sh" "$@"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

files=$(python3 tests/scripts/speech_wer.py render "$work" "${VOICES:-en-us,en-gb,en-us+f3}" "${SPEED:-150}")
cargo build --release -q -p mmc-speech --bin mmc-speech-bench
windows=${WINDOWS:-fit full}
for w in $windows; do
  echo "[wer] $(basename "$ggml"), encoder window $w" >&2
  # shellcheck disable=SC2086
  ./target/release/mmc-speech-bench --ggml "$ggml" --threads "$threads" --encoder-window "$w" --json "$work/$w.json" --transcribe $files
done
echo "model $id, weights $(basename "$ggml"), $threads threads, greedy"
# shellcheck disable=SC2086
python3 tests/scripts/speech_wer.py score "$work" $windows
