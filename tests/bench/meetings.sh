#!/usr/bin/env bash
# Meeting-notes evaluation: the whole meeting chain (speech -> notes -> answers) through the
# gateway on the evaluation set (tests/fixtures/meetings), scored by `mmc eval meetings`
# against each meeting's facts: WER, decision precision and recall, action items with the
# right owner and due date, owner accuracy, invented items, question accuracy, invented
# answers. Starts the four services it needs on free ports, with the bundled models.
#
#   bash tests/bench/meetings.sh                                   # all meetings, 3 voices, 2 speeds
#   bash tests/bench/meetings.sh --meeting budget_planning --voice en-gb --speed 150
#   bash tests/bench/meetings.sh --prompt-version v1 --prompt-version v2   # A/B, side by side
#
# Extra arguments go to `mmc eval meetings` (see `mmc eval meetings --help`). A prompt
# directory for A/B (holding v2/ ...) is passed to the gateway with MMC_PROMPTS_DIR=DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
models=${MMC_MODELS_DIR:-$PWD/models}
# The test build by default (dependencies at opt-level 3, as the e2e tests run them); the
# whole workspace, so that the dependencies' features match and nothing is rebuilt.
profile=${MMC_BENCH_PROFILE:-debug}
if [ "$profile" = release ]; then cargo build --release -q --workspace --bins; else cargo build -q --workspace --bins; fi
bin=./target/$profile
export MMC_MODELS_DIR=$models
$bin/mmc models fetch --profile bundled >/dev/null
data=$(mktemp -d)
base=$((20000 + RANDOM % 20000))
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$data"' EXIT
i=0
for svc in speech textgen embed; do
  $bin/mmc-$svc --listen 127.0.0.1:$((base + i)) --metrics-listen 127.0.0.1:$((base + 10 + i)) 2>/dev/null &
  pids+=($!)
  i=$((i + 1))
done
prompts=()
[ -n "${MMC_PROMPTS_DIR:-}" ] && prompts=(--prompts-dir "$MMC_PROMPTS_DIR")
$bin/mmc-gateway --listen 127.0.0.1:$((base + 3)) --metrics-listen 127.0.0.1:$((base + 13)) --http-listen 127.0.0.1:0 \
  --speech-endpoint http://127.0.0.1:$base --textgen-endpoint http://127.0.0.1:$((base + 1)) \
  --embed-endpoint http://127.0.0.1:$((base + 2)) --data-dir "$data" "${prompts[@]}" 2>/dev/null &
pids+=($!)
for port in $base $((base + 1)) $((base + 2)) $((base + 3)); do
  for _ in $(seq 1 180); do $bin/mmc health http://127.0.0.1:$port >/dev/null 2>&1 && break; sleep 1; done
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; $(date -u +%Y-%m-%d)" >&2
$bin/mmc eval meetings --gateway http://127.0.0.1:$((base + 3)) "$@"
