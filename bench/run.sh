#!/usr/bin/env bash
# Carbon Grid Cluster side by side with etcd and serf (issue 9).
#   bash bench/run.sh            # full run, results in bench/results/
# Environment: REPS (default 3), SECS per load point (default 3), ONLY (figure
# families: idle,kv,failover,join,gossip,scale), SKIP_APT=1 to skip installing peers,
# OUT (default bench/results; point a smoke run elsewhere).
#   scale:    SCALE_SIZES (agent processes with a bounded replica set, default
#             3,5,10,30,50,100), SCALE_REPLICAS (the bound, default 5),
#             SCALE_ALL_SIZES (every member a replica, the contrast curve, default
#             3,10,30,50; empty for none: slow at 50),
#             SCALE_GOSSIP_SIZES (in-process gossip members, default 10,50,100,500,1000),
#             SCALE_GOSSIP_TRANSPORT (udp, the default, or channel)
#   failover: CPU_HOG=1 (also under busy loops on every core, counting spurious
#             elections for HOG_SECS, default 180), RAFT_TIMING ("hb,min,max" in ms,
#             several separated by ';': measured beside the defaults)
# Quick smoke run of the new families:
#   OUT=/tmp/smoke REPS=1 SECS=2 ONLY=scale SCALE_SIZES=3,10 SCALE_ALL_SIZES=3 SCALE_GOSSIP_SIZES=10,30 bash bench/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR_BENCH="${CARGO_TARGET_DIR_BENCH:-$ROOT/target/bench}"
REPS="${REPS:-3}"
SECS="${SECS:-3}"
ONLY="${ONLY:-idle,kv,failover,join,gossip,scale}"
OUT="${OUT:-$ROOT/bench/results}"
SCALE_SIZES="${SCALE_SIZES:-3,5,10,30,50,100}"
SCALE_REPLICAS="${SCALE_REPLICAS:-5}"
SCALE_ALL_SIZES="${SCALE_ALL_SIZES-3,10,30,50}"
SCALE_GOSSIP_SIZES="${SCALE_GOSSIP_SIZES:-10,50,100,500,1000}"
SCALE_GOSSIP_TRANSPORT="${SCALE_GOSSIP_TRANSPORT:-udp}"
HOG_SECS="${HOG_SECS:-180}"
RAFT_TIMING="${RAFT_TIMING:-}"
EXTRA=()
[[ "${CPU_HOG:-0}" == 1 ]] && EXTRA+=(--cpu-hog)
WORK="$(mktemp -d /tmp/carbon-bench.XXXXXX)"
BENCH_PID=""

cleanup() {
    # The bench runs in its own process group: every agent and peer it started
    # is in that group.
    if [[ -n "$BENCH_PID" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM -- "-$BENCH_PID" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$BENCH_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say() { echo "== $*" >&2; }

# 1. Peers, where the machine allows it (Debian packages; root).
if [[ "${SKIP_APT:-0}" != 1 ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        say "installing etcd-server etcd-client serf protobuf-compiler"
        apt-get update -q >/dev/null 2>&1 || say "apt-get update failed"
        for p in etcd-server etcd-client serf protobuf-compiler; do
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null 2>&1 \
                || say "could not install $p: its figures will say not measured"
        done
    else
        say "no apt-get or not root: peers are used only if already installed"
    fi
fi
command -v etcd >/dev/null || say "etcd missing: etcd figures not measured"
command -v serf >/dev/null || say "serf missing: serf figures not measured"

# 2. Release builds from a clean snapshot: the committed HEAD (others may be
# editing the working tree) plus this working tree's bench/. The snapshot lives
# at a stable path and only changed files are rewritten, so rebuilds stay small.
SRC="$CARGO_TARGET_DIR_BENCH/src-snapshot"
EXPORT="$(mktemp -d /tmp/carbon-bench-src.XXXXXX)"
git archive HEAD | tar -x -C "$EXPORT"
rm -rf "$EXPORT/bench" && mkdir -p "$EXPORT/bench"
tar -C bench --exclude=results -cf - . | tar -x -C "$EXPORT/bench"
python3 - "$EXPORT" "$SRC" <<'PY'
import filecmp, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
want = set()
for root, _, files in os.walk(src):
    for f in files:
        rel = os.path.relpath(os.path.join(root, f), src)
        want.add(rel)
        d = os.path.join(dst, rel)
        if not (os.path.exists(d) and filecmp.cmp(os.path.join(src, rel), d, shallow=False)):
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copy2(os.path.join(src, rel), d)
            os.utime(d)
for root, _, files in os.walk(dst):
    for f in files:
        rel = os.path.relpath(os.path.join(root, f), dst)
        if rel not in want:
            os.remove(os.path.join(dst, rel))
PY
rm -rf "$EXPORT"
say "building carbon (release) from HEAD $(git rev-parse --short HEAD) in $SRC"
(cd "$SRC" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR_BENCH" cargo build --release --bin carbon)
CARBON="$CARGO_TARGET_DIR_BENCH/release/carbon"
say "building the bench (release, target $CARGO_TARGET_DIR_BENCH)"
CARGO_TARGET_DIR="$CARGO_TARGET_DIR_BENCH" cargo build --release --manifest-path "$SRC/bench/Cargo.toml"
BENCH="$CARGO_TARGET_DIR_BENCH/release/carbon-bench"

# 3. Machine and versions.
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))'; }
MEM_KIB="$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo | json_str)"
MACHINE="{\"nproc\": $(nproc), \"mem_total_gib\": $(awk "BEGIN {printf \"%.1f\", $MEM_KIB/1048576}"), \"kernel\": $(uname -r | json_str), \"cpu\": $CPU_MODEL, \"data_fs\": $(df -T /tmp | awk 'NR==2 {print $2}' | json_str)}"
OURS_REV="$(git rev-parse --short HEAD) (clean snapshot of HEAD; bench/ from the working tree)"
ETCD_V="$( (etcd --version 2>/dev/null | head -1) || echo 'not installed')"
SERF_V="$( (serf version 2>/dev/null | head -1) || echo 'not installed')"
SERF_PKG="$( (dpkg-query -W -f '${Version}' serf 2>/dev/null) || echo '')"
ETCD_PKG="$( (dpkg-query -W -f '${Version}' etcd-server 2>/dev/null) || echo '')"
RUSTC_V="$(rustc --version)"
VERSIONS="{\"ours_git_rev\": $(echo "$OURS_REV" | json_str), \"etcd\": $(echo "$ETCD_V (deb $ETCD_PKG)" | json_str), \"serf\": $(echo "$SERF_V (deb $SERF_PKG)" | json_str), \"rustc\": $(echo "$RUSTC_V" | json_str)}"

# 4. Run (own process group, so the trap can end every child). 100 agents and
# the bench's clients of them need more descriptors than some defaults allow.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
say "running figures ($ONLY), $REPS repetitions, $SECS s per load point; scratch $WORK"
mkdir -p "$OUT"
setsid "$BENCH" --carbon "$CARBON" --out "$OUT" --work-dir "$WORK" --reps "$REPS" --secs "$SECS" --only "$ONLY" \
    --scale-sizes "$SCALE_SIZES" --scale-replicas "$SCALE_REPLICAS" --scale-all-sizes "$SCALE_ALL_SIZES" --gossip-sizes "$SCALE_GOSSIP_SIZES" --gossip-transport "$SCALE_GOSSIP_TRANSPORT" \
    --hog-secs "$HOG_SECS" --raft-timing "$RAFT_TIMING" "${EXTRA[@]}" \
    --machine "$MACHINE" --versions "$VERSIONS" \
    --command "bash bench/run.sh (REPS=$REPS SECS=$SECS ONLY=$ONLY SCALE_SIZES=$SCALE_SIZES SCALE_REPLICAS=$SCALE_REPLICAS SCALE_ALL_SIZES=$SCALE_ALL_SIZES SCALE_GOSSIP_SIZES=$SCALE_GOSSIP_SIZES SCALE_GOSSIP_TRANSPORT=$SCALE_GOSSIP_TRANSPORT CPU_HOG=${CPU_HOG:-0} HOG_SECS=$HOG_SECS RAFT_TIMING=$RAFT_TIMING)" \
    --command "cargo build --release --bin carbon (in a snapshot of HEAD, CARGO_TARGET_DIR=$CARGO_TARGET_DIR_BENCH)" \
    --command "CARGO_TARGET_DIR=$CARGO_TARGET_DIR_BENCH cargo build --release --manifest-path <snapshot>/bench/Cargo.toml" \
    --command "$BENCH --carbon $CARBON --out $OUT --work-dir <tmp> --reps $REPS --secs $SECS --only $ONLY --scale-sizes $SCALE_SIZES --scale-replicas $SCALE_REPLICAS --scale-all-sizes '$SCALE_ALL_SIZES' --gossip-sizes $SCALE_GOSSIP_SIZES --gossip-transport $SCALE_GOSSIP_TRANSPORT --hog-secs $HOG_SECS --raft-timing '$RAFT_TIMING' ${EXTRA[*]:-}" \
    --command "carbon agent --host 127.0.0.1 --cluster-id bench-<tag> --num-voters 3 [--replicas <bound>] --gossip-port 0 --raft-port 0 --service-port 0 --grid-port 0 [--data-dir <tmp>/<name>] [--seed <first gossip addr>]" \
    --command "etcd --name <n> --data-dir <tmp>/<n> --listen-client-urls http://127.0.0.1:<c> --advertise-client-urls http://127.0.0.1:<c> --listen-peer-urls http://127.0.0.1:<p> --initial-advertise-peer-urls http://127.0.0.1:<p> --initial-cluster <3 members> --initial-cluster-state new --heartbeat-interval 100 --election-timeout 1000" \
    --command "serf agent -bind 127.0.0.1:<p> -rpc-addr 127.0.0.1:<r> -node <n> -profile lan [-join <first bind>]" \
    </dev/null &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_PID=""
say "results: $OUT/results.md and $OUT/results.json"
