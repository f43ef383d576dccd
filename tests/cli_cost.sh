#!/usr/bin/env bash
# `nasc cost`: zoo nets, an NB201 cell, a saved model, --json keys, targets (shipped, by path,
# from $NASC_TARGETS), and user errors (bad target name or file, bad spec, bad flags), which
# must exit non-zero with a message naming the problem, never crash.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_cli_cost_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
Q="--threads 2 --repeats 3"
KEYS="params macs peak_bytes flash_bytes latency_ms peak_bytes_fp32 peak_bytes_int8 flash_bytes_fp32 flash_bytes_int8 order plan_exact"

# Zoo nets; the figures the unit tests derive by hand for small and mbv2.
expect ok "peak memory" "$NASC" cost --arch small $Q
expect ok '"params": 24058' "$NASC" cost --arch small $Q --json
json_has $KEYS
[ "$(json_val peak_bytes)" = 75264 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: small peak_bytes $(json_val peak_bytes), want 75264"; }
expect ok '"plan_exact": true' "$NASC" cost --arch resnet8 $Q --json
json_has $KEYS
expect ok '"peak_bytes_fp32": 376320' "$NASC" cost --arch mbv2 $Q --json --target mcu
json_has $KEYS target fits fits_sram fits_flash fits_latency
[ "$(json_val dtype)" = '"int8"' ] && [ "$(json_val peak_bytes)" = 94080 ] && pass=$((pass+1)) ||
    { fail=$((fail+1)); echo "FAIL: mbv2 on mcu: dtype $(json_val dtype) peak_bytes $(json_val peak_bytes)"; }
expect ok "target mcu" "$NASC" cost --arch mbv2 $Q --target mcu
expect ok "target server" "$NASC" cost --arch resnet8 $Q --target server --order
expect ok " 1:conv 2:bn" "$NASC" cost --arch small --repeats 0 --order

# An NB201 cell (with none and skip edges), two cells per stage; no latency with --repeats 0.
A='nb201:|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|'
expect ok '"peak_bytes"' "$NASC" cost --arch "$A" --cells 2 --channels 8 --repeats 0 --json
json_has params macs peak_bytes flash_bytes
json_lacks latency_ms

# A saved model: same counts as the spec it was trained from.
expect ok "test_acc" "$NASC" train --quiet --threads 2 --arch small --epochs 1 --subset 256 --batch 64 --out "$T/m.nasc"
expect ok '"params": 24058' "$NASC" cost "$T/m.nasc" $Q --json --target mobile
json_has $KEYS
expect fail "the model takes 1x28x28 inputs" "$NASC" cost "$T/m.nasc" --data cifar10:/nowhere --repeats 0
expect fail "cannot open" "$NASC" cost "$T/missing.nasc"
echo "not a model" > "$T/text.nasc"
expect fail "not a nasc model" "$NASC" cost "$T/text.nasc"

# Targets: by path, from $NASC_TARGETS, and bad ones.
cat > "$T/board.target" <<'TGT'
name = board
sram_kb = 16     # too small for small's 18.4 KB int8 peak
flash_kb = 64
latency_ms = 1000
dtype = int8
TGT
expect ok "DOES NOT FIT" "$NASC" cost --arch small $Q --target "$T/board.target"
expect ok '"fits": false' env NASC_TARGETS="$T" "$NASC" cost --arch small $Q --target board --json
expect ok '"fits_flash": true' env NASC_TARGETS="$T" "$NASC" cost --arch small $Q --target board --json
expect fail "unknown target 'nope'" "$NASC" cost --arch small --target nope
expect fail "available: " "$NASC" cost --arch small --target nope
printf 'name = x\nsram = 5\n' > "$T/bad1.target"
expect fail "bad1.target: line 2, column 1: unknown key 'sram'" "$NASC" cost --arch small --target "$T/bad1.target"
printf 'name = x\nsram_kb = lots\n' > "$T/bad2.target"
expect fail "bad2.target: line 2, column 11: sram_kb must be a positive number" "$NASC" cost --arch small --target "$T/bad2.target"
printf 'name = x\nsram_kb 5\n' > "$T/bad3.target"
expect fail "bad3.target: line 2, column 9: expected '=' after 'sram_kb'" "$NASC" cost --arch small --target "$T/bad3.target"
printf 'name = x\nsram_kb = 5\nflash_kb = 5\nlatency_ms = 5\n' > "$T/bad4.target"
expect fail "bad4.target: line 5, column 1: missing required key 'dtype'" "$NASC" cost --arch small --target "$T/bad4.target"
printf 'name = x\ndtype = int8\ndtype = fp32\n' > "$T/bad5.target"
expect fail "bad5.target: line 3, column 1: duplicate key 'dtype' (first set on line 2)" "$NASC" cost --arch small --target "$T/bad5.target"
expect fail "cannot open" "$NASC" cost --arch small --target "$T/none.target"

# Bad specs and flags.
expect fail "line 1, column 24: unknown op 'relux'" "$NASC" cost --arch 'conv(c=16,k=3);bn;relu;relux;gap;linear'
expect fail "unknown operation 'nor_conv_9x9'" "$NASC" cost --arch 'nb201:|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|'
expect fail "the data has 10 classes" "$NASC" cost --arch 'conv(c=16,k=3);gap'
expect fail "needs --arch SPEC or a MODEL file" "$NASC" cost
expect fail "not both" "$NASC" cost --arch small "$T/m.nasc"
expect fail "--repeats must be in 0..1000000" "$NASC" cost --arch small --repeats -1
expect fail "--repeats needs a whole number" "$NASC" cost --arch small --repeats x
expect fail "unknown flag '--targte'" "$NASC" cost --arch small --targte mcu
expect fail "unknown dataset source prefix" "$NASC" cost --arch small --data imagenet:/nowhere
expect ok "usage: nasc cost" "$NASC" cost --help

echo "cli_cost: $pass passed, $fail failed"
[ $fail -eq 0 ]
