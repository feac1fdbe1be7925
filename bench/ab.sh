#!/usr/bin/env bash
# A/B of two `carbon` builds, or of one build with and without an environment
# setting, with the repetitions interleaved (A, B, A, B, ...). This VM's disk
# drifts by ±20 % from one minute to the next, so two builds are compared by
# pairs run back to back, and by each one's ratio to etcd within its own run.
#
#   CARBON_A=path/to/carbon CARBON_B=path/to/other/carbon bash bench/ab.sh
#   CARBON_A=path CARBON_B=path B_ENV="NAME=value" PAIRS=3 bash bench/ab.sh
#
# Environment: CARBON_A, CARBON_B (B defaults to A: then B_ENV is the change),
# B_ENV (space-separated NAME=value set for B's agents only), PAIRS (default 3),
# ONLY (figure families, default kv), SECS (per load point, default 3), MATCH (a
# regular expression on the rows to print, default durable writes to the
# leader), BENCH (the bench binary; default the one bench/run.sh builds), OUT
# (default a fresh /tmp/carbon-ab.XXXXXX; every run's results.md and
# results.json are kept there).
#
# Build A and B with separate target directories (or from bench/run.sh's
# snapshot): cargo keys a workspace package's fingerprint by its path inside
# the workspace, so a second checkout built into the same target directory can
# be reported fresh and linked with the first checkout's code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="${BENCH:-${CARGO_TARGET_DIR_BENCH:-$ROOT/target/bench}/release/carbon-bench}"
CARBON_A="${CARBON_A:?set CARBON_A to a release carbon binary}"
CARBON_B="${CARBON_B:-$CARBON_A}"
B_ENV="${B_ENV:-}"
PAIRS="${PAIRS:-3}"
ONLY="${ONLY:-kv}"
SECS="${SECS:-3}"
MATCH="${MATCH:-durable, to the leader}"
OUT="${OUT:-$(mktemp -d /tmp/carbon-ab.XXXXXX)}"

[[ -x "$BENCH" ]] || { echo "no bench binary at $BENCH: run bench/run.sh once (it builds it) or set BENCH" >&2; exit 2; }
[[ "$CARBON_A" != "$CARBON_B" || -n "$B_ENV" ]] || { echo "A and B are the same: set CARBON_B or B_ENV" >&2; exit 2; }

run() { # $1 = A|B, $2 = pair
    local side="$1" pair="$2" carbon="$CARBON_A" dir="$OUT/$1$2"
    local -a env=()
    if [[ "$side" == B ]]; then
        carbon="$CARBON_B"
        read -r -a env <<<"$B_ENV"
    fi
    mkdir -p "$dir/work"
    echo "== $side, pair $pair, $(date +%T), load $(cut -d' ' -f1 /proc/loadavg)" >&2
    env "${env[@]}" setsid "$BENCH" --carbon "$carbon" --out "$dir" --work-dir "$dir/work" --reps 1 \
        --secs "$SECS" --only "$ONLY" </dev/null >"$dir/bench.log" 2>&1 \
        || { echo "$side pair $pair failed: see $dir/bench.log" >&2; exit 1; }
    rm -rf "$dir/work"
}

for pair in $(seq 1 "$PAIRS"); do
    # Swap who goes first every pair, so a drift does not favour one side.
    if ((pair % 2)); then run A "$pair"; run B "$pair"; else run B "$pair"; run A "$pair"; fi
done

python3 - "$OUT" "$PAIRS" "$MATCH" <<'PY'
import json, re, statistics, sys
out, pairs, match = sys.argv[1], int(sys.argv[2]), re.compile(sys.argv[3])
def rows(side, pair):
    d = json.load(open(f"{out}/{side}{pair}/results.json"))
    return {(r["case"], r["metric"]): r for r in d["rows"]}
def value(r):
    return r["ours"]["value"]["median"]
def ratio(r):
    p = r.get("peer")
    return value(r) / p["value"]["median"] if p and p["value"]["median"] else None
runs = {s: [rows(s, p) for p in range(1, pairs + 1)] for s in "AB"}
keys = [k for k in runs["A"][0] if match.search(k[0]) and k[1] in ("p50 latency", "throughput")]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"{'case':<52} {'metric':<12} {'A':>9} {'A/peer':>7} {'B':>9} {'B/peer':>7} {'B/A pairs':>10}")
for k in keys:
    a = [value(r[k]) for r in runs["A"] if k in r]
    b = [value(r[k]) for r in runs["B"] if k in r]
    ar = [x for x in (ratio(r[k]) for r in runs["A"] if k in r) if x is not None]
    br = [x for x in (ratio(r[k]) for r in runs["B"] if k in r) if x is not None]
    pairs_ratio = med([y / x for x, y in zip(a, b) if x])
    fmt = lambda x: f"{x:.2f}" if x == x else "-"
    print(f"{k[0]:<52} {k[1]:<12} {med(a):>9.3f} {fmt(med(ar)):>7} {med(b):>9.3f} {fmt(med(br)):>7} {pairs_ratio:>10.2f}")
print(f"(medians over {pairs} pairs; peer = etcd in the same run; every run kept in {out})")
PY
