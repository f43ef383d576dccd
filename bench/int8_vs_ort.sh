#!/usr/bin/env bash
# Batch-1 latency of int8 models: nasc's int8 executor against ONNX Runtime's int8 (the same
# network exported as QDQ ONNX, which ORT fuses into its int8 kernels), with nasc's fp32 and
# ORT's fp32 on the fp32 model beside them, all in one run, interleaved over ROUNDS rounds (best
# median of each side). Usage: bash bench/int8_vs_ort.sh FP32_MODEL:INT8_MODEL... ;
# env: NASC (build/nasc), THREADS (1), ROUNDS (3), RUNS (200). Needs onnxruntime-node (installed
# by tests/cli_export.sh into ~/.cache/nasc).
set -eu
cd "$(dirname "$0")/.."
NASC=${NASC:-build/nasc}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-200}
ORT_DIR=${NASC_ORT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nasc/onnxruntime-node-1.20.1}
[ -d "$ORT_DIR/node_modules/onnxruntime-node" ] || ORT_DIR=build/node
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
printf '%-10s %12s %12s %12s %12s %14s %14s\n' net "nasc int8" "ORT int8" "nasc fp32" "ORT fp32" "ORT/nasc int8" "nasc fp32/int8"
for pair in "$@"; do
    f=${pair%%:*} q=${pair##*:}
    name=$(basename "$f" .nasc)
    "$NASC" export "$f" --format onnx --out "$T/$name.f.onnx" > /dev/null
    "$NASC" export "$q" --format onnx --out "$T/$name.q.onnx" > /dev/null
    shape=$("$NASC" cost "$f" --repeats 0 2>/dev/null | sed -n 's/.*input \([0-9]*\)x\([0-9]*\)x\([0-9]*\).*/\1,\2,\3/p' | head -n 1)
    [ -n "$shape" ] || shape=1,28,28
    ni= no= nf= of=
    for r in $(seq "$ROUNDS"); do
        ni=$(min "$ni" "$("$NASC" cost "$q" --repeats "$RUNS" --threads "$THREADS" --json | tail -n 1 | sed -n 's/.*"latency_ms": \([0-9.e+-]*\).*/\1/p')")
        nf=$(min "$nf" "$("$NASC" cost "$f" --repeats "$RUNS" --threads "$THREADS" --json | tail -n 1 | sed -n 's/.*"latency_ms": \([0-9.e+-]*\).*/\1/p')")
        o=$(NODE_PATH="$ORT_DIR/node_modules" node bench/ort_latency.js "$THREADS" "$shape" "$RUNS" "$T/$name.q.onnx" "$T/$name.f.onnx")
        no=$(min "$no" "$(echo "$o" | sed -n '1s/.* \([0-9.]*\) [0-9.]*$/\1/p')")
        of=$(min "$of" "$(echo "$o" | sed -n '2s/.* \([0-9.]*\) [0-9.]*$/\1/p')")
    done
    awk -v n="$name" -v ni="$ni" -v no="$no" -v nf="$nf" -v of="$of" 'BEGIN {
        printf "%-10s %9.4f ms %9.4f ms %9.4f ms %9.4f ms %13.2fx %13.2fx\n", n, ni, no, nf, of, no / ni, nf / ni }'
done
