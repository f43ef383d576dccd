#!/usr/bin/env bash
# int8 models on the command line: `nasc eval` and `nasc cost` take an int8 model file (made
# here by `test_quant --quantize` from a quickly trained fp32 model, until `nasc compress`
# exists) and report dtype int8; damaged int8 files and an int8 model given where an fp32 one
# is needed (a distillation teacher) exit non-zero with a message naming the problem.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
QUANT=$(dirname "$NASC")/tests/test_quant
T=$(mktemp -d /tmp/nasc_cli_quant_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"

expect ok "test_acc" "$NASC" train --quiet --threads 2 --arch small --epochs 1 --subset 256 --batch 64 --out "$T/m.nasc"
expect ok "wrote" "$QUANT" --quantize "$T/m.nasc" "$T/m.q8" minmax 64
expect ok "wrote" "$QUANT" --quantize "$T/m.nasc" "$T/mse.q8" mse 64

# eval: same keys as fp32, plus the dtype
expect ok "int8" "$NASC" eval "$T/m.q8" --threads 2 --json
json_has test_acc samples params macs dtype
[ "$(json_val dtype)" = '"int8"' ] && [ "$(json_val samples)" = 10000 ] && pass=$((pass+1)) ||
    { fail=$((fail+1)); echo "FAIL: int8 eval: dtype $(json_val dtype), samples $(json_val samples)"; }
acc8=$(json_val test_acc)
expect ok "fp32" "$NASC" eval "$T/m.nasc" --threads 2 --json
[ "$(json_val dtype)" = '"fp32"' ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: fp32 eval dtype $(json_val dtype)"; }
acc32=$(json_val test_acc)
# int8 accuracy close to fp32 (a trained model; the tolerance is generous)
awk -v a="$acc8" -v b="$acc32" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.05) }' && pass=$((pass+1)) ||
    { fail=$((fail+1)); echo "FAIL: int8 accuracy $acc8 vs fp32 $acc32"; }
expect ok "int8" "$NASC" eval "$T/mse.q8" --threads 2

# cost: int8 figures, the file's payload as flash, latency of the int8 executor
expect ok "latency int8" "$NASC" cost "$T/m.q8" --threads 2 --repeats 5
expect ok '"dtype": "int8"' "$NASC" cost "$T/m.q8" --threads 2 --repeats 5 --json --target mcu
json_has params macs peak_bytes flash_bytes latency_ms peak_bytes_int8 flash_bytes_int8 int8_tensors qconv_path target fits
[ "$(json_val params)" = 24058 ] && [ "$(json_val peak_bytes)" = 18816 ] && pass=$((pass+1)) ||
    { fail=$((fail+1)); echo "FAIL: int8 cost: params $(json_val params), peak_bytes $(json_val peak_bytes)"; }
flash=$(json_val flash_bytes)
expect ok '"flash_bytes_int8"' "$NASC" cost --arch small --repeats 0 --json
[ "$(json_val flash_bytes_int8)" = "$flash" ] && pass=$((pass+1)) ||
    { fail=$((fail+1)); echo "FAIL: the spec's int8 flash estimate $(json_val flash_bytes_int8) != the file's $flash"; }
expect ok '"peak_bytes"' "$NASC" cost "$T/m.q8" --repeats 0 --json
json_lacks latency_ms
expect fail "the model takes 1x28x28 inputs" "$NASC" cost "$T/m.q8" --data cifar10:/nowhere --repeats 0

# an int8 model where an fp32 one is needed, and damaged int8 files
expect fail "is an int8 model; this needs an fp32 model" "$NASC" train --quiet \
    --arch small --epochs 1 --subset 64 --distill "$T/m.q8"
size=$(stat -c %s "$T/m.q8")
cp "$T/m.q8" "$T/bad.q8"
printf '\x55' | dd of="$T/bad.q8" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect fail "corrupted" "$NASC" eval "$T/bad.q8"
expect fail "corrupted" "$NASC" cost "$T/bad.q8" --repeats 0
head -c $((size - 9)) "$T/m.q8" >"$T/short.q8"
expect fail "truncated" "$NASC" eval "$T/short.q8"
head -c 12 "$T/m.q8" >"$T/tiny.q8"
expect fail "truncated" "$NASC" cost "$T/tiny.q8"
printf 'NASCQ8\0\0\377\0\0\0' >"$T/v255.q8"
head -c 200 /dev/zero >>"$T/v255.q8"
expect fail "version" "$NASC" eval "$T/v255.q8"
echo "not a model" >"$T/junk.q8"
expect fail "not a nasc model" "$NASC" eval "$T/junk.q8"

echo "cli_quant: $pass passed, $fail failed"
[ $fail -eq 0 ]
