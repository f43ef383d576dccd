#!/usr/bin/env bash
# Runs every test program of one build folder (build or build-san) and every CLI test script,
# then prints the closing line "N passed, N failed". Exits non-zero if anything failed.
set -u
B=${1:-build}
cd "$(dirname "$0")/.."
export NASC_BIN="$PWD/$B/nasc"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0; fail=0; failed=()
run() {
    local name=$1; shift
    local log="$B/tests/$name.log"
    local t0=$(date +%s)
    if "$@" >"$log" 2>&1; then
        pass=$((pass+1)); printf '  ok    %-28s %3ss  %s\n' "$name" $(( $(date +%s) - t0 )) "$(tail -n 1 "$log")"
    else
        fail=$((fail+1)); failed+=("$name")
        printf '  FAIL  %-28s (log: %s)\n' "$name" "$log"; tail -n 30 "$log" | sed 's/^/        /'
    fi
}
echo "== tests ($B)"
run gradcheck "$B/tests/gradcheck"
for t in "$B"/tests/test_*; do
    case "$t" in *.log|*.d) continue;; esac
    [ -x "$t" ] || continue
    run "$(basename "$t")" "$t"
done
# The fast ops (batch norm's row kernels and stream walks among them), the fused paths and the
# PyTorch reference nets again on the kernels that machines without AVX-512 run (plain C and
# AVX2; test_conv runs its own variants): on an AVX-512 machine these paths would otherwise go
# untested
for g in avx2 generic; do
    for t in test_ops_fast test_fused test_torch_ref; do
        run "$t[$g]" env NASC_GEMM=$g "$B/tests/$t"
    done
done
# NASC_TESTS=programs: the test programs only, not the CLI scripts (scripts/test-arm64.sh --programs)
for s in tests/cli_*.sh; do
    [ "${NASC_TESTS:-}" = programs ] && break
    [ -e "$s" ] || continue
    run "$(basename "$s" .sh)" bash "$s" "$B"
done
echo "$B: $pass passed, $fail failed"
[ $fail -eq 0 ]
