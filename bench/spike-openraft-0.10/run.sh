#!/usr/bin/env bash
# Build the spike and run interleaved reps of openraft 0.9 vs 0.10, then print a summary.
#
#   ./run.sh                 # REPS=5
#   REPS=7 ./run.sh
#   SKIP_BUILD=1 ./run.sh
#
# Env: REPS (default 5), N1 (1-client writes, default 3000), N16 (writes per client in the
# 16-client mode, default 1000), NDIAG / DELAY_US (leader-slow-disk diagnostic, 1000 / 2000), WARMUP (default 200), DATA (data dir, default ./data; must be
# on the filesystem you want to measure), OUT (raw results file, default results/<timestamp>.txt).
set -euo pipefail

cd "$(dirname "$0")"
HERE=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERE/target}"
REPS="${REPS:-5}"
N1="${N1:-3000}"
N16="${N16:-1000}"
NDIAG="${NDIAG:-1000}"
DELAY_US="${DELAY_US:-2000}"
WARMUP="${WARMUP:-200}"
DATA="${DATA:-$HERE/data}"
mkdir -p "$DATA" results
OUT="${OUT:-results/$(date +%Y%m%d-%H%M%S).txt}"
BIN="$CARGO_TARGET_DIR/release"

if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release >&2
fi

load1() { cut -d' ' -f1 /proc/loadavg; }

# run <rep> <cmd...>: prefix the result line with rep and 1-minute load average (sampled before).
run() {
    local rep=$1; shift
    local l; l=$(load1)
    local line; line=$("$@" | tail -n1)
    echo "rep=$rep load1=$l $line" | tee -a "$OUT"
}

echo "# $(date -Is) $(uname -r) nproc=$(nproc) reps=$REPS n1=$N1 n16=$N16 warmup=$WARMUP data=$DATA" | tee -a "$OUT"
echo "# uptime: $(uptime)" | tee -a "$OUT"

# Order within a rep alternates (v09 first on odd reps, v010 first on even reps) so slow disk
# drift does not systematically favour one version.
pair() {
    local rep=$1; shift
    if (( rep % 2 == 1 )); then
        run "$rep" "$BIN/v09" "$@"; run "$rep" "$BIN/v010" "$@"
    else
        run "$rep" "$BIN/v010" "$@"; run "$rep" "$BIN/v09" "$@"
    fi
}

common=(--warmup "$WARMUP" --data "$DATA")

# 1) main mode: 1 client, fsync. The fdatasync probe runs in every rep to track disk drift.
for rep in $(seq 1 "$REPS"); do
    run "$rep" "$BIN/fsync-probe" "$DATA" 2000 1
    run "$rep" "$BIN/fsync-probe" "$DATA" 2000 3
    pair "$rep" --clients 1 --n "$N1" "${common[@]}"
done
# 2) 1 client, no fsync (the writer thread still write()s, it skips sync_data).
for rep in $(seq 1 "$REPS"); do
    pair "$rep" --clients 1 --n "$N1" --no-fsync "${common[@]}"
done
# 3) 16 concurrent clients, fsync.
for rep in $(seq 1 "$REPS"); do
    pair "$rep" --clients 16 --n "$N16" "${common[@]}"
done
# 4) diagnostic: 1 client, fsync, plus an extra DELAY_US sleep after every sync on the leader
#    (node 1) only. If the leader's flush is off the commit path, latency should not move.
for rep in $(seq 1 "$REPS"); do
    pair "$rep" --clients 1 --n "$NDIAG" --leader-sync-delay-us "$DELAY_US" "${common[@]}"
done

echo
echo "raw results: $OUT"
echo "medians across reps:"
"$HERE/summarize.sh" "$OUT"
