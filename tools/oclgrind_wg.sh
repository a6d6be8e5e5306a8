#!/bin/sh
# Run the work-group kernels under Oclgrind (Debian package oclgrind): data-race and out-of-bounds
# checks, and global-memory traffic per FLOP of the tiled GEMM against the untiled one and the cpu
# family's, from Oclgrind's instruction counters (--inst-counts: "load global (N bytes)").
# Usage: sh tools/oclgrind_wg.sh [BUILD_DIR]   (from the source tree; writes to $OUT or /tmp)
set -eu
B=${1:-build}
CLNPU=$B/tools/clnpu
OUT=${OUT:-$(mktemp -d /tmp/clnpu-oclgrind.XXXXXX)}
mkdir -p "$OUT"
export CLNPU_CACHE_DIR=$OUT/cache CLNPU_TUNING=off
SHAPE=64x128x256
hash=$(grep -o '"gemm_wg.cl", [a-z_0-9]*, [0-9]*, 0x[0-9a-f]*' "$B/kernels-cl/kernels_embed.c" | sed 's/.*0x//')

# Oclgrind reports one histogram per launch; the first launch of the named kernel is read. Loads
# through vloadN builtins are counted as calls, not as "load global": their bytes are added from
# the mangled name (N elements of f float, t ushort, c/h char, Dh half).
loads() { # file kernel -> "bytes loaded from global, bytes stored"
    awk -v k="'$2':" '
        function esize(t) { return t == "f" ? 4 : (t == "t" || t == "Dh") ? 2 : 1 }
        /^Instructions executed for kernel/ { on = ($5 == k) && !seen; if (on) seen = 1 }
        on && /load global/ { gsub(/[()]/, ""); ld += $5 }
        on && /store global/ { gsub(/[()]/, ""); st += $5 }
        on && /call _Z[0-9]+v(load|store)(_half)?[0-9]*/ {
            if (match($4, /v(load|store)(_half)?[0-9]*/)) {
                w = substr($4, RSTART, RLENGTH); gsub(/v(load|store)(_half)?/, "", w); if (w == "") w = 1
                t = $4
                if (index(t, "vload")) { sub(/.*AS1K/, "", t) } else { sub(/^[^D]*Dv[0-9]+_/, "", t) }
                t = substr(t, 1, 1) == "D" ? substr(t, 1, 2) : substr(t, 1, 1)
                b = $1 * w * (index($4, "half") ? 2 : esize(t))
                if (index($4, "vload")) ld += b; else st += b
            }
        }
        END { print ld + 0, st + 0 }' "$1"
}

run() { # label family kernel shape [tuning db] -- checks races and counts traffic
    label=$1 fam=$2 kern=$3 shape=$4 db=${5:-}
    log=$OUT/$label.log
    if [ -n "$db" ]; then tun="CLNPU_TUNING=on CLNPU_TUNING_DB=$db"; else tun=; fi
    env CLNPU_KERNEL_FAMILY=$fam $tun oclgrind --data-races --inst-counts --max-errors 20 \
        "$CLNPU" bench gemm --dtype f32 --shape "$shape" --min-time 0.000001 --json >"$log" 2>&1 || {
        echo "$label: clnpu failed under Oclgrind (see $log)"; tail -5 "$log"; exit 1; }
    if grep -q "Invalid\|data race\|out-of-bounds\|Oclgrind - " "$log"; then
        echo "$label: Oclgrind reported errors (see $log)"; grep -m5 -A4 "Oclgrind - \|Invalid\|race" "$log"; exit 1
    fi
    m=${shape%%x*}; rest=${shape#*x}; n=${rest%%x*}; k=${rest#*x}
    set -- $(loads "$log" "$kern")
    awk -v l="$label" -v kern="$kern" -v ld="$1" -v st="$2" -v m="$m" -v n="$n" -v k="$k" 'BEGIN {
        f = 2 * m * n * k; printf "%-22s %-16s %10d %8d %9.4f\n", l, kern, ld, st, ld / f }'
}

cat >"$OUT/untiled.yaml" <<YAML
format: clnpu-tuning-1
entries:
- device: any
  kernel: gemm_wg
  dtype: f32
  class: prefill
  source: $hash
  params: {mwg: 32, nwg: 64, kwg: 32, mdimc: 8, ndimc: 8, vwm: 1, vwn: 4, kwi: 2, sa: 0, sb: 0}
  ms: 1
  default_ms: 1
  measured: 2026-12-01
  how: oclgrind comparison
  capabilities: {type: 2, compute_units: 1, local_mem: 32768, vector_width: 1, fp16: 0, int_dot: 0}
YAML
sed 's/sa: 0, sb: 0/sa: 1, sb: 1/' "$OUT/untiled.yaml" >"$OUT/tiled.yaml"

echo "$(oclgrind --version 2>&1 | grep -m1 -i oclgrind); GEMM $SHAPE f32, GEMV 1x128x512; logs in $OUT"
printf "%-22s %-16s %10s %8s %9s\n" run kernel "ld bytes" "st bytes" "B/FLOP"
run wg-tiled wg clnpu_gemm_wg $SHAPE "$OUT/tiled.yaml"
run wg-untiled wg clnpu_gemm_wg $SHAPE "$OUT/untiled.yaml"
run cpu-family cpu clnpu_gemm $SHAPE
run wg-gemv wg clnpu_gemv_wg 1x128x512
run cpu-gemv cpu clnpu_gemm 1x128x512
# the other wg kernels: sampling / argmax, attention, MLA decode, RMSNorm, MoE, and DeepSeek Sparse
# Attention's (indexer scores, top-k, sparse MLA, LayerNorm), run by the test cases (suite:case)
for sc in wg:wg_gemm wg:wg_sampling wg:wg_rmsnorm wg:wg_attention wg:wg_moe wg_dsa:wg_dsa_kernels; do
    suite=${sc%%:*} case=${sc#*:}
    log=$OUT/$case.log
    env CLNPU_KERNEL_FAMILY=wg CK_RUN_SUITE=$suite CK_RUN_CASE=$case CLNPU_TEST_SMALL=1 \
        oclgrind --data-races --max-errors 20 "$B/tests/clnpu-tests" >"$log" 2>&1 || {
        echo "$case: failed under Oclgrind (see $log)"; tail -5 "$log"; exit 1; }
    if grep -q "Oclgrind - \|data race\|Invalid" "$log"; then
        echo "$case: Oclgrind reported errors (see $log)"; grep -m5 -A4 "Oclgrind - \|race\|Invalid" "$log"; exit 1
    fi
    echo "$case: $(grep -o '[0-9]*%: Checks: [0-9]*, Failures: [0-9]*, Errors: [0-9]*' "$log"), no Oclgrind errors"
done
