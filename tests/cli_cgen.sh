#!/usr/bin/env bash
# The standalone C export and the arena figure on the command line. `nasc cost` reports the
# arena planner's figure as peak_bytes (and says so) when fixed offsets need more than the
# ideal allocator, for a spec and for an int8 model; the C exported from that int8 model
# declares exactly that arena, and compiles with gcc -std=c99 -Wall -Wextra -Werror. Models
# (random weights, int8 by post-training quantization) come from the test binary
# (tests/test_cgen --make); exports from `nasc export --format c` and, for the size report's
# fields, from test_cgen --export.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
TC=$(dirname "$NASC")/tests/test_cgen
T=$(mktemp -d /tmp/nasc_cli_cgen_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
FRAG='t0=conv(input,c=2,k=1);t1=maxpool(t0,k=3,s=1,p=1);t2=relu(t1);t3=conv(t2,c=8,k=1);t4=maxpool(t2,k=3,s=1,p=1);t5=maxpool(t0,k=3,s=1,p=1);t6=conv(t4,c=5,k=1);t7=relu(t5);t8=concat(t2,t7);o=concat(t8,t4);gap(o);linear'
check() { if eval "$1"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $2"; fi; }
kv() { printf '%s\n' "$LAST" | sed -n "s/^$1 //p"; }

# a spec: the arena is larger than the ideal peak and becomes peak_bytes
expect ok "fragmentation" "$NASC" cost --arch "$FRAG" --repeats 0
expect ok '"arena_bytes_fp32"' "$NASC" cost --arch "$FRAG" --repeats 0 --json
pk=$(json_val peak_bytes); ar=$(json_val arena_bytes_fp32); id=$(json_val peak_bytes_fp32)
check '[ "$pk" = "$ar" ] && [ "$ar" -gt "$id" ]' "fragmenting spec: peak_bytes $pk, arena $ar, ideal $id"
expect ok '"arena_bytes_int8"' "$NASC" cost --arch "$FRAG" --repeats 0 --json --target mcu
check '[ "$(json_val peak_bytes)" = "$(json_val arena_bytes_int8)" ]' "mcu target: peak_bytes is not the int8 arena"
# the zoo nets: arena == ideal, peak_bytes unchanged
expect ok '"arena_bytes_fp32": 75264' "$NASC" cost --arch small --repeats 0 --json

# int8 and fp32 models -> C; the arena equals nasc cost's peak_bytes
expect ok "wrote" "$TC" --make "$T"
for m in frag small; do
    expect ok '"dtype": "int8"' "$NASC" cost "$T/$m.q8" --repeats 0 --json
    pk=$(json_val peak_bytes)
    expect ok "int8" env NASC_CGEN_MEASURE=0 "$TC" --export "$T/$m.q8" "$T/c_$m" "${m}_net"
    check '[ "$(kv arena_bytes)" = "$pk" ]' "$m: exported arena $(kv arena_bytes), nasc cost peak_bytes $pk"
    check 'grep -q "static int8_t arena\[$pk\]" "$T/c_$m/${m}_net.c"' "$m: the C does not declare arena[$pk]"
    check 'grep -q "#define ${m^^}_NET_NORM_MEAN {0.286000013f}" "$T/c_$m/${m}_net.h"' "$m: normalization not in the header"
    expect ok "" gcc -std=c99 -Wall -Wextra -Werror -O2 -c "$T/c_$m/${m}_net.c" -o "$T/$m.o"
    expect ok "fp32" env NASC_CGEN_MEASURE=0 "$TC" --export "$T/$m.mdl" "$T/f_$m"
    check 'grep -q "int nasc_model_predict(const float \*input, float \*scores);" "$T/f_$m/nasc_model.h"' \
        "$m: default name/prototype missing"
    expect ok "" gcc -std=c99 -Wall -Wextra -Werror -O2 -c "$T/f_$m/nasc_model.c" -o "$T/f$m.o"
done
expect ok '"peak_bytes"' "$NASC" cost "$T/frag.q8" --repeats 0 --json
check '[ "$(json_val peak_bytes)" -gt "$(json_val peak_bytes_int8)" ]' "frag.q8: peak_bytes is not above the ideal"
# measured sizes (compiles with cc)
expect ok "measured 1" "$TC" --export "$T/small.q8" "$T/m_small" small_net
check '[ "$(kv code_bytes)" -gt 0 ] && [ "$(kv flash_bytes)" -gt "$(kv weight_bytes)" ]' "measured sizes: $(kv code_bytes) / $(kv flash_bytes)"

# the command: nasc export --format c
expect ok '"format": "c"' "$NASC" export "$T/small.q8" --format c --out "$T/cli_small" --name fm --json
check '[ -s "$T/cli_small/fm.c" ] && [ -s "$T/cli_small/fm.h" ]' "nasc export --format c wrote no fm.c/fm.h"
expect ok '"peak_bytes"' "$NASC" cost "$T/small.q8" --repeats 0 --json
pk=$(json_val peak_bytes)
expect ok "SRAM  $pk bytes" "$NASC" export "$T/small.q8" --format c --out "$T/cli_small2"
check 'grep -q "int nasc_model_predict(const float \*input, float \*scores);" "$T/cli_small2/nasc_model.h"' "default name"
expect ok "" gcc -std=c99 -Wall -Wextra -Werror -O2 -c "$T/cli_small2/nasc_model.c" -o "$T/cli.o"
expect fail "C identifier" "$NASC" export "$T/small.q8" --format c --out "$T/bad" --name 2fast
expect fail "--name is for --format c" "$NASC" export "$T/small.q8" --format onnx --name x
expect fail "unknown --format 'tflite'" "$NASC" export "$T/small.q8" --format tflite

# user errors
expect fail "C identifier" "$TC" --export "$T/small.q8" "$T/bad" "2fast"
expect fail "neither" "$TC" --export "$0" "$T/bad" x
expect fail "cannot read" "$TC" --export "$T/none.q8" "$T/bad" x
echo "cli_cgen: $pass passed, $fail failed"
[ $fail -eq 0 ]
