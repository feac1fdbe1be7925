#!/usr/bin/env bash
# Summarize a raw results file written by run.sh: median across reps per (version, mode).
# Usage: ./summarize.sh results/XXXX.txt
set -euo pipefail
f="${1:?usage: summarize.sh RESULTS_FILE}"

# Plain POSIX awk (works with mawk): key=value fields, medians via insertion sort.
awk '
function med(key, field,    n, i, j, t, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = val[key, field, i] + 0
    for (i = 2; i <= n; i++) { t = a[i]; j = i - 1; while (j >= 1 && a[j] > t) { a[j+1] = a[j]; j-- } a[j+1] = t }
    if (n == 0) return 0
    if (n % 2) return a[(n+1)/2]
    return (a[n/2] + a[n/2+1]) / 2
}
/^#/ || NF == 0 { next }
{
    # fields: rep=.. load1=.. <name> [mode] k=v ...
    name = $3; mode = ""; clients = ""
    for (i = 4; i <= NF; i++) {
        if ($i !~ /=/) { mode = $i; continue }
        split($i, kv, "="); f[kv[1]] = kv[2]
    }
    split($2, l, "="); f["load1"] = l[2]
    split($1, r, "="); rep = r[2]
    if (f["threads"] == "") f["threads"] = 1
    key = (name == "fdatasync") ? "fdatasync threads=" f["threads"] : name " " mode " clients=" f["clients"]
    if (!(key in cnt)) { order[++nk] = key; cnt[key] = 0 }
    c = ++cnt[key]
    split("p50_us p90_us p99_us mean_us ops_s load1", fl, " ")
    for (k in fl) val[key, fl[k], c] = f[fl[k]]
    p50rep[key, rep] = f["p50_us"]; if (rep + 0 > maxrep) maxrep = rep + 0
    delete f
}
END {
    printf "%-40s %5s %8s %8s %8s %8s %8s %6s\n", "version/mode", "reps", "p50_us", "p90_us", "p99_us", "mean_us", "ops_s", "load1"
    for (i = 1; i <= nk; i++) {
        k = order[i]
        printf "%-40s %5d %8.0f %8.0f %8.0f %8.0f %8.0f %6.2f\n", k, cnt[k], med(k, "p50_us"), med(k, "p90_us"), med(k, "p99_us"), med(k, "mean_us"), med(k, "ops_s"), med(k, "load1")
    }
    print ""
    split("fsync clients=1|nofsync clients=1|fsync clients=16", modes, "|")
    for (m = 1; m <= 3; m++) {
        a = "v09 " modes[m]; b = "v010 " modes[m]
        if ((a in cnt) && (b in cnt) && med(a, "p50_us") > 0)
            printf "ratio v010/v09 %-18s p50 %.3f   mean %.3f   ops_s %.3f\n", modes[m] ":", med(b, "p50_us") / med(a, "p50_us"), med(b, "mean_us") / med(a, "mean_us"), med(b, "ops_s") / med(a, "ops_s")
    }
    # Paired per-rep p50 ratios for the main mode (same rep = adjacent runs, same disk mood).
    a = "v09 fsync clients=1"; b = "v010 fsync clients=1"; line = ""
    for (rp = 1; rp <= maxrep; rp++) if (((a, rp) in p50rep) && ((b, rp) in p50rep) && p50rep[a, rp] > 0)
        line = line sprintf(" rep%s=%.3f", rp, p50rep[b, rp] / p50rep[a, rp])
    if (line != "") print "per-rep p50 ratio v010/v09, 1 client fsync:" line
}' "$f"
