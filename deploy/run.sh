#!/usr/bin/env bash
# The main job on one machine: install prerequisites, build (release), fetch and verify
# the bundled models, start the five services and supervise them until Ctrl-C.
#
#   bash deploy/run.sh            # endpoints on 127.0.0.1:50051-50055, metrics 9464-9468
#   MMC_HOST=0.0.0.0 bash deploy/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

t() { local s=$SECONDS; "$@"; printf '[run] %-32s %4ds\n' "$1 ${2:-}" $((SECONDS - s)) >&2; }

t bash deploy/setup.sh
t cargo build --release --workspace --bins
t ./target/release/mmc models fetch --profile bundled
exec ./target/release/mmc up "$@"
