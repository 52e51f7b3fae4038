#!/usr/bin/env bash
# The gateway's two stores on random unit vectors of the bundled space's shape (384
# dimensions, two per image), loaded up to each size in turn: bulk load rate, search
# p50/p99 at concurrency 1 and 16 (top 10, fused scores), recall@10 against exact search,
# and one durable insert; then the bulk load of `mmc-store copy` (embedded -> PostgreSQL,
# the largest size, COPY_SIZE to change it). The embedded store in a temporary directory;
# PostgreSQL 16.2 + pgvector 0.6.2 (deploy/test-tools.sh installs it) started here on
# loopback, as the unprivileged user nobody when run as root. Prints the CPU first: figures of another
# machine are not this one's.
# A command, not a test: run it on a quiet machine.
#
#   bash tests/bench/store.sh [SIZES...]    # default: 10000 100000
#   MMC_BENCH_BIN=target/debug bash tests/bench/store.sh 10000
#   STORE_DATA=clustered bash tests/bench/store.sh    # vectors around 1 000 centres, like real embeddings
#   STORES=embedded bash tests/bench/store.sh 1000000 # one store only (embedded or postgres)
#   BREADTH=400,800,1600 bash tests/bench/store.sh     # recall and latency at each search breadth
#   INDEX="graph scan" bash tests/bench/store.sh       # the search indexes, each store (default: both)
#   COPY_SIZE=0 bash tests/bench/store.sh 1000000     # no copy measured (at a million it builds pgvector's HNSW: an hour)
#   VECTORS=embeddings.f32 bash tests/bench/store.sh   # your own embeddings (f32, 384 each; image, caption pairs; queries last)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/bin:$PATH"
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(10000 100000); fi
bin=${MMC_BENCH_BIN:-target/release}
if [ "$bin" = target/release ]; then
  cargo build --release -q -p mmc-gateway --bin mmc-store
fi

echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores;" \
  "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|amx_tile)$' | tr '\n' ' ')"

data=$(mktemp -d)
chmod 755 "$data"
trap 'rm -rf "$data"' EXIT
stores=${STORES:-embedded postgres}
port=${MMC_BENCH_PG_PORT:-25433}
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u nobody -- "$@"; else "$@"; fi; }
# PostgreSQL only when it is measured.
start_postgres() {
  bash deploy/test-tools.sh >/dev/null 2>&1
  install=$(readlink -f "${MMC_TOOLS_DIR:-$HOME/.cache/mmc}/deploy-tools/postgres")
  if [ "$(id -u)" = 0 ]; then
    # nobody cannot enter root's home: a copy of the wheel's tree (its binaries find their
    # libraries relative to themselves).
    cp -a "$install/../.." "$data/pgserver" && chmod -R a+rX "$data/pgserver"
    install=$data/pgserver/pgserver/pginstall
    chown nobody "$data"
  fi
  pg=$install/bin
  if "$pg/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    echo "port $port already answers (another store.sh?): set MMC_BENCH_PG_PORT" >&2
    exit 1
  fi
  run_pg "$pg/initdb" -D "$data/pg" -U postgres -A trust -E UTF8 --no-sync --no-instructions >/dev/null
  # A quarter of the memory for shared buffers, as PostgreSQL's own tuning advice; HNSW
  # builds and searches want the index in memory.
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 / 4)}' /proc/meminfo)
  run_pg "$pg/postgres" -D "$data/pg" -p "$port" -k "$data" -c listen_addresses=127.0.0.1 \
    -c shared_buffers="${mem_mb}MB" -c maintenance_work_mem=1GB -c max_wal_size=4GB > "$data/pg.log" 2>&1 &
  pg_pid=$!
  # pg_ctl, not a signal to $pg_pid: as root that is runuser, which does not pass SIGINT on.
  trap 'run_pg "$pg/pg_ctl" -D "$data/pg" -m fast stop >/dev/null 2>&1; wait $pg_pid 2>/dev/null; rm -rf "$data"' EXIT
  for _ in $(seq 1 100); do "$pg/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
}

# Drawn vectors (--data), or your own embeddings from a file (VECTORS, see `mmc-store bench --help`).
if [ -n "${VECTORS:-}" ]; then data_args=(--vectors "$(readlink -f "$VECTORS")"); else data_args=(--data "${STORE_DATA:-random}"); fi
breadth=${BREADTH:-400}
if [[ " $stores " == *" embedded "* ]]; then
  for index in ${INDEX:-graph scan}; do
    case $index in
      graph) echo "== embedded, --search-index graph (redb; exact scan, HNSW graph of the fused vectors past 20 000 images)" ;;
      scan) echo "== embedded, --search-index scan (redb; exact scan, bit and byte codes of the fused vectors scanned past 20 000 images)" ;;
    esac
    "$bin/mmc-store" bench --index "$index" "${data_args[@]}" --breadth "$breadth" "${sizes[@]}"
  done
fi
if [[ " $stores " != *" postgres "* ]]; then exit 0; fi
start_postgres
for index in ${INDEX:-graph scan}; do
  case $index in
    graph) echo "== PostgreSQL 16.2 + pgvector 0.6.2, --search-index graph (pgvector HNSW of the fused vectors: m=32, ef_construction=128, ef_search = breadth)" ;;
    scan) echo "== PostgreSQL 16.2 + pgvector 0.6.2, --search-index scan (codes in the gateway's memory, exact scores in SQL; no HNSW index)" ;;
  esac
  "$pg/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE bench_$index"
  "$bin/mmc-store" bench --index "$index" "${data_args[@]}" --breadth "$breadth" --store "postgres://postgres@127.0.0.1:$port/bench_$index" "${sizes[@]}"
done
copy_size=${COPY_SIZE:-${sizes[-1]}}
if [ "$copy_size" = 0 ]; then exit 0; fi
echo "== bulk load: mmc-store copy of $copy_size images, embedded -> PostgreSQL (HNSW index built once, after the rows)"
"$pg/psql" -h 127.0.0.1 -p "$port" -U postgres -qc 'CREATE DATABASE copied'
"$bin/mmc-store" fill --store "redb:$data/copy-source" --count "$copy_size" --dimensions 384
"$bin/mmc-store" copy --from "redb:$data/copy-source" --to "postgres://postgres@127.0.0.1:$port/copied" 2>/dev/null
