#!/usr/bin/env bash
# The model services on a GPU against the same binaries on its CPU (issue #31): outputs
# compared within stated bounds (embeddings, greedy tokens, transcript text; the bounds and
# their reasons are in services/mmc/src/bench_models.rs), and the figures side by side
# (embeddings/s, generated tokens/s at 1 and 16 streams, audio s/s at 1 and 8 streams).
# A command, not a test.
#
# Built in one place, run in another: a GPU machine need not have Rust, the crates or the
# model hubs (this project's lent GPU machines have none of them, and take at most 64 MiB of
# files per call). So:
#
#   bash tests/bench/gpu.sh pack       # on the build machine (x86_64 Linux, no GPU needed):
#                                      # CUDA binaries (deploy/cuda-toolchain.sh), models, a
#                                      # recording -> .gpu-bundle/part-NN/ (each <= 54 MiB)
#   bash tests/bench/gpu.sh stage NN   # on the GPU machine, once per part (in any order),
#                                      # each call carrying .gpu-bundle/part-NN
#   bash tests/bench/gpu.sh run        # on the GPU machine: joins the parts, checks their
#                                      # sha256, runs CPU then CUDA, prints the table
#   bash tests/bench/gpu.sh all        # pack and run on one machine that has both
#
# `run` writes five files under $OUT when that is set, else under .gpu-bundle/results/:
# lines.jsonl (every check and figure), machine.txt, table.md, outputs-cpu.json (the CPU's
# outputs) and services.log (the end of each service's log). Settings: CUDA_COMPUTE_CAP (pack; default 90 = H100/H200),
# GPU_BENCH_RUNS (runs per figure, default 3), GPU_BENCH_DEVICE (run; default cuda, `cpu`
# rehearses the whole script on a machine without a GPU, comparing the CPU with itself),
# GPU_BENCH_SPEECH=0 (pack without whisper.cpp's CUDA backend, the longest compile),
# GPU_BENCH_PROFILE (pack; cargo profile, default release; `dev` for a quick rehearsal),
# GPU_BENCH_ARGS (run; more `mmc bench models` options, e.g. "--streams 1,2"),
# GPU_BENCH_BUNDLE (the bundle's folder, default .gpu-bundle).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
bundle=${GPU_BENCH_BUNDLE:-$PWD/.gpu-bundle}
stage=${GPU_BENCH_STAGE:-/tmp/mmc-gpu-stage}
part_bytes=$((54 << 20))
profile=${GPU_BENCH_PROFILE:-release}
out_dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
say() { printf '\033[1m[gpu]\033[0m %s\n' "$*" >&2; }
mark() { date +%s; }

pack() {
  local t0 speech_feature=""
  t0=$(mark)
  local models=${MMC_MODELS_DIR:-$PWD/models}
  for f in all-minilm-l6-v2/model.safetensors efficientnet-lite0/model.safetensors smollm2-135m-instruct-q4_1/model.gguf \
           whisper-tiny.en-ct2/ggml-model-q8_0.bin test-photos; do
    [ -e "$models/$f" ] || { say "no $models/$f: run 'mmc models fetch --profile bundled' and '--profile test-assets' first"; exit 1; }
  done
  if [ "${GPU_BENCH_SPEECH:-1}" = 1 ]; then speech_feature=" mmc-speech/cuda"; fi
  # The CPU binaries first (the CLI, and mmc-speech's CPU build: the CUDA build of
  # whisper.cpp leaves out our CPU kernels, so the CPU side of the comparison uses this one).
  # The whole workspace, as the tests build it, so that nothing is rebuilt for other features.
  cargo build --profile "$profile" --locked -q --workspace --bins
  rm -rf "$bundle" && mkdir -p "$bundle/tree/bin" "$bundle/tree/models"
  # Which sources the binaries come from (a bundle outlives the checkout that made it).
  echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- services Cargo.lock || echo ' with uncommitted changes')" > "$bundle/tree/commit"
  cp "$out_dir/mmc" "$bundle/tree/bin/mmc"
  cp "$out_dir/mmc-speech" "$bundle/tree/bin/mmc-speech-cpu"
  say "CPU binaries: $(($(mark) - t0)) s"

  local t1
  t1=$(mark)
  if [ "${GPU_BENCH_DEVICE:-cuda}" = cpu ]; then
    # A rehearsal bundle for a machine without a GPU: the CPU builds in the CUDA builds' place.
    cp "$out_dir/mmc-embed" "$out_dir/mmc-textgen" "$bundle/tree/bin/"
    echo none > "$bundle/tree/compute_cap"
  else
    # The CUDA binaries as deploy/docker/Dockerfile.cuda builds them (the whole workspace
    # with the model services' `cuda` features), linked against deploy/cuda-toolchain.sh's
    # stubs. They overwrite the CPU ones in target/ (the next CPU build relinks those).
    local cuda_env
    cuda_env=$(bash deploy/cuda-toolchain.sh ${speech_feature:+--cublas})
    eval "$cuda_env"
    local features="mmc-embed/cuda mmc-caption/cuda mmc-textgen/cuda$speech_feature"
    CMAKE_CUDA_ARCHITECTURES="$CUDA_COMPUTE_CAP" cargo build --profile "$profile" --locked --workspace --bins --features "$features"
    cp "$out_dir/mmc-embed" "$out_dir/mmc-textgen" "$bundle/tree/bin/"
    [ -z "$speech_feature" ] || cp "$out_dir/mmc-speech" "$bundle/tree/bin/mmc-speech"
    echo "$CUDA_COMPUTE_CAP" > "$bundle/tree/compute_cap"
    say "CUDA binaries (compute capability $CUDA_COMPUTE_CAP, features $features): $(($(mark) - t1)) s"
  fi
  # Line tables are for debugging here; the bundle travels in 54 MiB parts.
  strip --strip-debug "$bundle"/tree/bin/*
  xz -T0 -6 "$bundle"/tree/bin/*

  # Models (only the files the services read), the test photos and the recording.
  local m=$bundle/tree/models
  mkdir -p "$m/all-minilm-l6-v2" "$m/efficientnet-lite0" "$m/smollm2-135m-instruct-q4_1" "$m/whisper-tiny.en-ct2"
  cp "$models"/all-minilm-l6-v2/{config.json,model.safetensors,pooling_config.json,tokenizer.json} "$m/all-minilm-l6-v2/"
  cp "$models"/efficientnet-lite0/model.safetensors "$m/efficientnet-lite0/"
  cp "$models"/smollm2-135m-instruct-q4_1/{model.gguf,tokenizer.json} "$m/smollm2-135m-instruct-q4_1/"
  cp "$models"/whisper-tiny.en-ct2/{config.json,ggml-model-q8_0.bin,tokenizer.json} "$m/whisper-tiny.en-ct2/"
  for id in all-minilm-l6-v2 efficientnet-lite0 smollm2-135m-instruct-q4_1 whisper-tiny.en-ct2; do
    cp "$models/$id/.mmc-verified.json" "$m/$id/" # the services' "fetched" stamp
  done
  cp -r "$models/test-photos" "$m/"
  # shellcheck source=tests/bench/recording.sh
  source tests/bench/recording.sh
  bench_recording "$bundle/tree"

  # One tar, cut into parts that each fit one call.
  tar -C "$bundle/tree" -cf "$bundle/bundle.tar" .
  local sum n
  sum=$(sha256sum "$bundle/bundle.tar" | cut -d' ' -f1)
  split -b "$part_bytes" -d -a 2 "$bundle/bundle.tar" "$bundle/bundle.tar."
  n=$(ls "$bundle"/bundle.tar.[0-9][0-9] | wc -l)
  for piece in "$bundle"/bundle.tar.[0-9][0-9]; do
    local k=${piece##*.}
    mkdir -p "$bundle/part-$k"
    mv "$piece" "$bundle/part-$k/"
    printf '%s %s\n' "$sum" "$n" > "$bundle/part-$k/SHA256-PARTS"
  done
  rm -rf "$bundle/tree" "$bundle/bundle.tar"
  say "bundle: $n parts of <= $((part_bytes >> 20)) MiB in $bundle (sha256 $sum), $(($(mark) - t0)) s in all"
  ls -l "$bundle"/part-*/ >&2
}

stage_part() {
  local k=${1:?part number, e.g. 00}
  mkdir -p "$stage"
  cp "$bundle/part-$k"/bundle.tar.* "$bundle/part-$k/SHA256-PARTS" "$stage/"
  say "staged part $k in $stage: $(ls "$stage"/bundle.tar.* | wc -l) of $(cut -d' ' -f2 "$stage/SHA256-PARTS") parts here"
}

# Starts a service binary in the background and waits until its health check says SERVING.
# Prints its gRPC endpoint.
start() {
  local name=$1 port=$2 log=$3
  shift 3
  "$@" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$((port + 1))" > "$log" 2>&1 &
  echo $! >> "$work/pids"
  for _ in $(seq 1 240); do
    if "$work/bin/mmc" health "http://127.0.0.1:$port" > /dev/null 2>&1; then
      echo "http://127.0.0.1:$port"
      return
    fi
    kill -0 "$(tail -1 "$work/pids")" 2>/dev/null || break
    sleep 0.5
  done
  say "$name did not start; its log:"
  tail -20 "$log" >&2
  return 1
}

stop_all() {
  [ -f "$work/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$work/pids"
  # They were started in command substitutions, so they are not this shell's children:
  # wait for them to go (draining ends within the services' drain timeout).
  while read -r pid; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done < "$work/pids"
  rm -f "$work/pids"
}

# One side: start the three services on `device`, then record or compare under `label`.
side() {
  local device=$1 label=$2 mode=$3 speech_bin=$4
  local m=$work/models runs=${GPU_BENCH_RUNS:-3}
  local embed textgen speech
  embed=$(start mmc-embed 46100 "$work/logs/embed-$label.log" "$work/bin/mmc-embed" --models-dir "$m" --device "$device")
  textgen=$(start mmc-textgen 46110 "$work/logs/textgen-$label.log" "$work/bin/mmc-textgen" --models-dir "$m" --device "$device" \
    --max-sequences 16)
  speech=$(start mmc-speech 46120 "$work/logs/speech-$label.log" "$work/bin/$speech_bin" --models-dir "$m" --device "$device" \
    --multilingual-model "" --concurrency 8 --spool-dir "$work")
  local status=0
  "$work/bin/mmc" bench models --label "$label" --embed "$embed" --textgen "$textgen" --speech "$speech" \
    --audio "$work/audio.wav" --photos "$m/test-photos" --runs "$runs" ${GPU_BENCH_ARGS:-} "$mode" "$results/outputs-cpu.json" \
    | tee -a "$results/lines.jsonl" || status=$?
  stop_all
  return "$status"
}

run() {
  local t0 device=${GPU_BENCH_DEVICE:-cuda}
  t0=$(mark)
  results=${OUT:-$bundle/results}
  mkdir -p "$results"
  : > "$results/lines.jsonl"
  work=$(mktemp -d)
  mkdir "$work/logs"
  # The services' logs end up in one file: a lent machine sends back at most 8 files.
  trap 'stop_all; tail -n 200 "$work"/logs/*.log > "$results/services.log" 2>/dev/null; rm -rf "$work"' EXIT

  # Join and check the parts (staged ones first, then any still in the bundle folder).
  local parts=()
  for k in $(seq -f '%02g' 0 99); do
    if [ -f "$stage/bundle.tar.$k" ]; then parts+=("$stage/bundle.tar.$k")
    elif [ -f "$bundle/part-$k/bundle.tar.$k" ]; then parts+=("$bundle/part-$k/bundle.tar.$k")
    else break; fi
  done
  local manifest
  manifest=$(cat "$stage/SHA256-PARTS" 2>/dev/null || cat "$bundle"/part-00/SHA256-PARTS)
  read -r sum n <<<"$manifest"
  [ "${#parts[@]}" -eq "$n" ] || { say "have ${#parts[@]} of $n parts: stage the others first"; exit 1; }
  [ "$(cat "${parts[@]}" | sha256sum | cut -d' ' -f1)" = "$sum" ] || { say "the joined parts do not match sha256 $sum"; exit 1; }
  cat "${parts[@]}" | tar -C "$work" -xf -
  xz -d "$work"/bin/*.xz
  chmod +x "$work"/bin/*

  # The GPU and the CUDA libraries: the driver's libcuda from the system, cuBLAS, cuRAND and
  # NVRTC from wherever this machine keeps them (a CUDA toolkit, or the pip wheels that
  # PyTorch uses).
  if [ "$device" != cpu ] && ! command -v nvidia-smi > /dev/null; then
    say "no nvidia-smi here: the NVIDIA driver is missing (or GPU_BENCH_DEVICE=cpu for a rehearsal)"
    exit 1
  fi
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) threads"
    if [ "$device" != cpu ]; then
      echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader)"
    fi
    echo "binaries: compute capability $(cat "$work/compute_cap"), commit $(cat "$work/commit" 2>/dev/null || echo unknown)"
  } | tee "$results/machine.txt" >&2
  if [ "$device" != cpu ]; then
    local dirs=""
    for lib in libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
      if ldconfig -p | grep -q "$lib"; then continue; fi
      local found
      found=$(find /usr/local/nvidia /usr/local/cuda*/ /usr/lib /opt /usr/local/lib -name "$lib" 2>/dev/null | head -1 || true)
      [ -n "$found" ] && dirs="$dirs:$(dirname "$found")"
    done
    export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    for b in mmc-embed mmc-textgen mmc-speech; do
      [ -f "$work/bin/$b" ] || continue
      if ldd "$work/bin/$b" | grep -q "not found"; then
        say "$b cannot load: $(ldd "$work/bin/$b" | grep 'not found' | tr -s ' \t' ' ')"
        exit 1
      fi
    done
  fi

  say "CPU side (the same binaries on --device cpu; speech: the CPU build)"
  side cpu cpu --record mmc-speech-cpu
  local gpu_speech=mmc-speech
  [ -f "$work/bin/mmc-speech" ] || { gpu_speech=mmc-speech-cpu; say "no CUDA build of mmc-speech in the bundle: speech runs on the CPU build"; }
  [ "$device" = cpu ] && gpu_speech=mmc-speech-cpu
  say "$device side"
  local status=0 label=$device
  [ "$device" = cpu ] && label=rehearsal
  side "$device" "$label" --compare "$gpu_speech" || status=$?

  python3 - "$results/lines.jsonl" "$label" > "$results/table.md" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
device = sys.argv[2]
figures = {}
for l in lines:
    if "figure" in l:
        figures.setdefault((l["service"], l["figure"], l["case"]), {})[l["label"]] = l
print(f"| service | figure | case | cpu median [min-max] | {device} median [min-max] | {device} / cpu |")
print("|---|---|---|---|---|---|")
for (service, name, case), by in figures.items():
    c, g = by.get("cpu"), by.get(device)
    cell = lambda f: f"{f['median']:.1f} [{f['min']:.1f}-{f['max']:.1f}]" if f else "-"
    ratio = f"{g['median'] / c['median']:.2f}x" if c and g and c["median"] > 0 else "-"
    print(f"| {service} | {name} | {case} | {cell(c)} | {cell(g)} | {ratio} |")
print()
print("| check | value | bound | held |")
print("|---|---|---|---|")
for l in lines:
    if "check" in l:
        print(f"| {l['service']}: {l['check']} | {l['value']:.4g} | {l['bound']} | {'yes' if l['held'] else 'NO'} |")
PY
  cat "$results/machine.txt" "$results/table.md"
  say "results in $results ($(($(mark) - t0)) s)"
  return "$status"
}

case "${1:-}" in
  pack) pack ;;
  stage) stage_part "${2:-}" ;;
  run) run ;;
  all) pack && run ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
