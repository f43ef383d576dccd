#!/usr/bin/env bash
# nasc compress end to end on a small model: int8 post-training quantization, QAT, channel
# and weight pruning with fine-tuning and distillation, the before/after table and JSON, and
# the bad-input cases (an int8 model where an fp32 one is needed, impossible ratios, a teacher
# with another number of classes). Uses Fashion-MNIST and IDX files made here.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_compress_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
Q="--quiet --threads 2"
S="--subset 512 --batch 64 --repeats 3"

expect ok "test_acc" "$NASC" train $Q --arch small --epochs 1 --subset 1024 --batch 64 --out "$T/m.nasc"

# Post-training int8: smaller file, an int8 model that eval and cost run.
expect ok "after (int8)" "$NASC" compress "$T/m.nasc" --quantize int8 --calib 256 --calib-method mse $Q $S --out "$T/q.nasc" --json
json_has model dtype before after
case "$LAST" in *'"dtype": "int8"'*) pass=$((pass+1)) ;; *) fail=$((fail+1)); echo "FAIL: compress --quantize int8 did not say int8" ;; esac
b0=$(printf '%s\n' "$LAST" | tail -n 1 | sed -n 's/.*"before": {[^}]*"bytes": \([0-9]*\).*/\1/p')
b1=$(printf '%s\n' "$LAST" | tail -n 1 | sed -n 's/.*"after": {[^}]*"bytes": \([0-9]*\).*/\1/p')
if [ -n "$b0" ] && [ -n "$b1" ] && [ "$b1" -lt $((b0 / 3)) ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: the int8 file ($b1 bytes) should be under a third of the fp32 one ($b0)"; fi
expect ok "int8" "$NASC" eval "$T/q.nasc" --threads 2
expect ok "int8" "$NASC" cost "$T/q.nasc" --repeats 3

# Quantization-aware training, with distillation from the original.
expect ok "after (int8)" "$NASC" compress "$T/m.nasc" --quantize int8 --qat-epochs 1 --distill "$T/m.nasc" $Q $S --out "$T/qat.nasc"

# Channel pruning: fewer params and MACs, an ordinary fp32 model that trains and evaluates.
expect ok "after (fp32)" "$NASC" compress "$T/m.nasc" --prune 0.5 --finetune-epochs 1 --distill "$T/m.nasc" $Q $S --out "$T/p.nasc" --json
p0=$(printf '%s\n' "$LAST" | tail -n 1 | sed -n 's/.*"before": {[^}]*"params": \([0-9]*\).*/\1/p')
p1=$(printf '%s\n' "$LAST" | tail -n 1 | sed -n 's/.*"after": {[^}]*"params": \([0-9]*\).*/\1/p')
if [ -n "$p0" ] && [ -n "$p1" ] && [ "$p1" -lt "$p0" ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: channel pruning should lower the parameter count ($p0 -> $p1)"; fi
expect ok "test_acc" "$NASC" eval "$T/p.nasc" --threads 2
expect ok "after (int8)" "$NASC" compress "$T/p.nasc" --quantize int8 $Q $S --out "$T/pq.nasc"
expect ok "test_acc" "$NASC" train $Q --arch small --epochs 1 --subset 256 --distill "$T/p.nasc"
# One-shot (prune, re-estimate BN, fine-tune) gives the same architecture as the gradual default.
expect ok "after (fp32)" "$NASC" compress "$T/m.nasc" --prune 0.5 --prune-schedule oneshot --finetune-epochs 1 $Q $S --out "$T/p1.nasc" --json
case "$LAST" in *"\"params\": $p1,"*) pass=$((pass+1)) ;; *) fail=$((fail+1)); echo "FAIL: one-shot pruning should also give $p1 params" ;; esac
expect ok "channel pruning 50% (l1, gradual)" "$NASC" compress "$T/m.nasc" --prune 0.5 --finetune-epochs 1 --threads 2 $S --out "$T/p2.nasc"

# Weight pruning: half the weights are zero afterwards.
expect ok "global sparsity 0.5000" "$NASC" compress "$T/m.nasc" --prune 0.5 --prune-mode weight --finetune-epochs 1 --threads 2 $S --out "$T/w.nasc"

# Bad input.
expect fail "already an int8 model" "$NASC" compress "$T/q.nasc" --quantize int8 --out "$T/x.nasc"
expect fail "needs an fp32 model" "$NASC" compress "$T/m.nasc" --prune 0.5 --distill "$T/q.nasc" --out "$T/x.nasc" $Q $S
expect fail "--prune must be in (0, 1), got 1.5" "$NASC" compress "$T/m.nasc" --prune 1.5 --out "$T/x.nasc"
expect fail "--prune must be in (0, 1), got -0.2" "$NASC" compress "$T/m.nasc" --prune -0.2 --out "$T/x.nasc"
expect fail "nothing to do" "$NASC" compress "$T/m.nasc" --out "$T/x.nasc"
expect fail "--out MODEL is required" "$NASC" compress "$T/m.nasc" --quantize int8
expect fail "--quantize must be int8" "$NASC" compress "$T/m.nasc" --quantize int4 --out "$T/x.nasc"
expect fail "--prune-mode must be channel or weight" "$NASC" compress "$T/m.nasc" --prune 0.5 --prune-mode filter --out "$T/x.nasc"
expect fail "--prune-schedule must be gradual or oneshot, got 'cubic'" "$NASC" compress "$T/m.nasc" --prune 0.5 --prune-schedule cubic --out "$T/x.nasc"
expect fail "--prune-schedule gradual needs fine-tuning" "$NASC" compress "$T/m.nasc" --prune 0.5 --prune-schedule gradual --finetune-epochs 0 --out "$T/x.nasc"
expect fail "--calib-method" "$NASC" compress "$T/m.nasc" --quantize int8 --calib-method kl --out "$T/x.nasc"
expect fail "--qat-epochs needs --quantize int8" "$NASC" compress "$T/m.nasc" --qat-epochs 2 --prune 0.5 --out "$T/x.nasc"
expect fail "cannot open" "$NASC" compress "$T/missing.nasc" --quantize int8 --out "$T/x.nasc"
[ ! -e "$T/x.nasc" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: a failed compress left an output file"; }

# A teacher with 3 classes for a 10-class student: an image-folder set made here (binary PGM
# images; stb_image decodes by content, the loader wants a .png name).
mkdir -p "$T/m3"
perl -e 'srand(3); for my $c (0 .. 2) { mkdir "$ARGV[0]/c$c"; for my $i (0 .. 19) {
           open(my $f, ">", "$ARGV[0]/c$c/$i.png") or die; binmode $f;
           print $f "P5\n28 28\n255\n", map { chr(int(rand(256))) } 1 .. 784; close $f; } }' "$T/m3"
expect ok "test_acc" "$NASC" train $Q --arch small --epochs 1 --batch 16 --data "$T/m3" --out "$T/t3.nasc"
expect fail "3 classes" "$NASC" compress "$T/m.nasc" --prune 0.5 --distill "$T/t3.nasc" $Q $S --out "$T/x.nasc"
expect fail "3 classes" "$NASC" train $Q --arch small --epochs 1 --subset 256 --distill "$T/t3.nasc"

echo "cli_compress: $pass passed, $fail failed"
[ $fail -eq 0 ]
