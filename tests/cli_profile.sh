#!/usr/bin/env bash
# `nasc profile`: a tiny user space profiled with one timing round (to a given file, and to the
# default place beside a target file found through $NASC_TARGETS), the table's header and
# --json keys, and user errors (no target, bad target path, missing space, bad flags, an
# unwritable output), which must exit non-zero with a message naming the problem.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_cli_profile_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
cat >"$T/tiny.space" <<'SPACE'
space tiny
conv(c={4,8}, k={3,5}); bn; relu
choice { conv(c=8,k=3,g=8); bn; relu6 | avgpool(k=3,s=1,p=1) | id }
gap; linear
SPACE
Q="--space $T/tiny.space --no-zoo --nets 2 --repeats 1 --passes 1 --quiet"

expect ok "configurations" "$NASC" profile --target gadget $Q --out "$T/g.latency"
[ "$(head -n 1 "$T/g.latency")" = "nasc-latency-table 1" ] && grep -q '^threads 1$' "$T/g.latency" &&
    grep -q '^op conv(1x28x28,c=4,k=3,s=1,p=1,d=1,g=1,bias=0) ' "$T/g.latency" && pass=$((pass+1)) ||
    { fail=$((fail+1)); echo "FAIL: table header or entries"; head -n 20 "$T/g.latency"; }
expect ok '"configs": ' "$NASC" profile --target gadget $Q --out "$T/g.latency" --json
json_has path target configs members nets threads fit_mean_abs_err seconds

# The default output: NAME.latency beside NAME.target.
mkdir -p "$T/targets"
printf 'name = gadget\nsram_kb = 256\nflash_kb = 1024\nlatency_ms = 20\ndtype = fp32\n' >"$T/targets/gadget.target"
expect ok "$T/targets/gadget.latency" env NASC_TARGETS="$T/targets" "$NASC" profile --target gadget $Q
[ -s "$T/targets/gadget.latency" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: no default table"; }

expect fail "needs --target" "$NASC" profile $Q
expect fail "--target" "$NASC" profile --target "$T/nowhere/x.target" $Q
expect fail "missing.space" "$NASC" profile --target gadget --space "$T/missing.space" --out "$T/x.latency" --quiet
expect fail "--threads" "$NASC" profile --target gadget $Q --threads 0
expect fail "--repeats" "$NASC" profile --target gadget $Q --repeats 0
expect fail "unknown" "$NASC" profile --target gadget $Q --frobnicate
expect fail "$T/no/dir/t.latency" "$NASC" profile --target gadget $Q --out "$T/no/dir/t.latency"

echo "cli_profile: $pass passed, $fail failed"
[ $fail -eq 0 ]
