#!/usr/bin/env bash
# Speech-to-text benchmark, N runs (default 5), same audio, same thread count:
#   (a) faster-whisper (PyPI) on the ORIGINAL CTranslate2 files of the bundled Whisper, in
#       int8 (what it recommends on CPU) and in its default type (f32 on CPU),
#   (b) whisper.cpp on its own, built from the same sources whisper-rs compiled for us
#       (its own CPU build: ggml's kernels, no BLAS; ours sends the encoder's matmuls to
#       services/speech/src/engine/blas.rs), on the ggml file mmc-speech loads (8-bit
#       Q8_0 where fetched, else f16),
#   (c) mmc-speech's pipeline (decode, resample, chunk, whisper.cpp, guards) with 1 stream
#       (on one state with every thread, and on one thread per state with the idle states
#       lent to it), and its aggregate throughput with 2 and 4 concurrent streams.
# Prints each figure as the median and range over the runs, the ratios per run, and the
# CPU it ran on (model and the SIMD flags ggml and CTranslate2 can use): a figure from
# another machine is not this one's. A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/speech.sh [MODEL_ID] [THREADS]
#   RUNS=5 WEIGHTS=auto|q8_0|f16 FULL_WINDOW=1 bash tests/bench/speech.sh
#
# FULL_WINDOW=1 also times our pipeline with --encoder-window full (Whisper's 30 s window for
# every chunk, as whisper.cpp alone runs) beside the default fitted windows.
#
# Audio: ~87 s of speech made of Debian's pocketsphinx-testdata LibriVox clips and an
# espeak-ng meeting script, twice (deploy/setup.sh --test installs both).
set -euo pipefail
# shellcheck source=tests/bench/speech_common.sh
source "$(dirname "$0")/speech_common.sh" "$@"
venv=${MMC_BENCH_FW_VENV:-$HOME/.cache/mmc/faster-whisper-venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

runs=${RUNS:-5}
# The engine's version is pinned too: ctranslate2 4.6.0 ran this recording 1.3x slower than 4.8.5.
if ! "$venv/bin/python" -c "import faster_whisper, ctranslate2; assert ctranslate2.__version__ == '4.8.5'" 2>/dev/null; then
  echo "[bench] installing faster-whisper 1.2.1 (ctranslate2 4.8.5) into $venv (once)" >&2
  python3 -m venv "$venv" && "$venv/bin/pip" install -q faster-whisper==1.2.1 ctranslate2==4.8.5
fi

# The recording: LibriVox clips, a meeting script, both again (16 kHz mono).
# shellcheck source=tests/bench/recording.sh
source tests/bench/recording.sh
bench_recording "$work"
sox "$work/audio.wav" -t raw -e float -b 32 "$work/audio.f32"
echo "[bench] audio: $(soxi -D "$work/audio.wav") s, threads: $threads, runs: $runs, weights: $(basename "$ggml")" >&2

cargo build --release -q -p mmc-speech --bin mmc-speech-bench
# whisper.cpp alone: its own CPU build (ggml's kernels; no BLAS, as whisper.cpp builds by
# default) of the very sources whisper-rs-sys compiled for us, with the same CPU flags as
# .cargo/config.toml; built once under target/bench (incremental after).
src=$(cargo metadata --offline --format-version 1 --filter-platform "$(rustc -vV | sed -n 's/host: //p')" | python3 -c "import json, os, sys
print(next(os.path.dirname(p['manifest_path']) for p in json.load(sys.stdin)['packages'] if p['name'] == 'whisper-rs-sys'))")/whisper.cpp
wb=target/bench/whisper.cpp
cmake -S "$src" -B "$wb" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DWHISPER_BUILD_TESTS=OFF \
  -DWHISPER_BUILD_EXAMPLES=OFF -DGGML_OPENMP=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
  -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_LLAMAFILE=ON > "$wb.log" 2>&1 || { cat "$wb.log" >&2; exit 1; }
cmake --build "$wb" -j"$(nproc)" > "$wb.log" 2>&1 || { cat "$wb.log" >&2; exit 1; }
c++ -O2 -std=c++17 -I"$src/include" -I"$src/ggml/include" tests/bench/whisper_cpp_ref.cpp -L"$wb/src" -L"$wb/ggml/src" \
  -lwhisper -lggml -lggml-cpu -lggml-base -lpthread -o target/bench/whisper-cpp-ref

# Each run measures everything once, in the same order, so the host's drift hits all alike.
for r in $(seq 1 "$runs"); do
  echo "[bench] run $r of $runs" >&2
  ./target/bench/whisper-cpp-ref "$ggml" "$work/audio.f32" "$threads" 1 > "$work/wcpp.$r.json"
  "$venv/bin/python" tests/scripts/faster_whisper_bench.py "$models/$id" "$work/audio.wav" --threads "$threads" --runs 1 \
    --compute-type int8 2>/dev/null > "$work/fw_int8.$r.json"
  "$venv/bin/python" tests/scripts/faster_whisper_bench.py "$models/$id" "$work/audio.wav" --threads "$threads" --runs 1 \
    --compute-type default 2>/dev/null > "$work/fw_default.$r.json"
  ./target/release/mmc-speech-bench --ggml "$ggml" --audio "$work/audio.wav" --threads "$threads" --runs 1 \
    --json "$work/ours.$r.json" > "$work/ours.$r.txt"
  if [ -n "${FULL_WINDOW:-}" ]; then
    ./target/release/mmc-speech-bench --ggml "$ggml" --audio "$work/audio.wav" --threads "$threads" --runs 1 \
      --encoder-window full --json "$work/ours_full.$r.json" > /dev/null
  fi
done
[ "$runs" -ge 1 ] && grep -m1 "text:" "$work/ours.1.txt" | cut -c1-200 >&2
python3 tests/scripts/speech_bench_summary.py "$work" "$runs" "$(basename "$ggml")" "$id" "$threads"
