#!/usr/bin/env bash
# `nasc search`: tabular mode on NB201's published table (shared/benchmarks, when present) and
# on a table this script writes; resume after a clean stop and after kill -9 at random moments
# (and after a kill -9 that surely lands during a trial, NASC_TEST_KILL_TRIAL) gives the same
# result as an uninterrupted run; constraint violations are never trained;
# bad flags, databases and benchmark files give clear messages.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_cli_search_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
strip() { sed 's|(database [^)]*)||'; }

# A tabular benchmark over all NB201 cells with a synthetic accuracy (conv edges help).
CSV="$T/nb201.csv"
{
    echo "arch,accuracy"
    ops="none skip_connect nor_conv_1x1 nor_conv_3x3 avg_pool_3x3"
    i=0
    for a in $ops; do for b in $ops; do for c in $ops; do for d in $ops; do for e in $ops; do for f in $ops; do
        i=$((i+1))
        s=0; for o in $a $b $c $d $e $f; do case $o in nor_conv_3x3) s=$((s+5));; nor_conv_1x1) s=$((s+3));; skip_connect) s=$((s+1));; esac; done
        printf 'nb201:|%s~0|+|%s~0|%s~1|+|%s~0|%s~1|%s~2|,0.%04d\n' $a $b $c $d $e $f $((5000 + s*100 + i % 97))
    done; done; done; done; done; done
} > "$CSV"

for strat in random evolution reinforce bohb pnas; do
    "$NASC" search --benchmark "$CSV" --strategy $strat --trials 40 --seed 3 --max-params 200000 --db "$T/full_$strat.db" --quiet --json 2>&1 | strip > "$T/full.txt"
    "$NASC" search --benchmark "$CSV" --strategy $strat --trials 15 --seed 3 --max-params 200000 --db "$T/part_$strat.db" --quiet >/dev/null 2>&1
    "$NASC" search --benchmark "$CSV" --strategy $strat --trials 40 --seed 3 --max-params 200000 --db "$T/part_$strat.db" --quiet --json --resume 2>&1 | strip > "$T/resumed.txt"
    if cmp -s "$T/full.txt" "$T/resumed.txt" && grep -q '"best": {' "$T/full.txt"; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: $strat: stopped and resumed search differs from an uninterrupted one"; diff "$T/full.txt" "$T/resumed.txt" | head -5; fi
done

# Real training, killed with SIGKILL at pseudo-random moments, then resumed until done.
ARGS=(search --space nb201 --channels 4 --strategy evolution --trials 8 --epochs 1 --subset 512 --val 512 --batch 128 --seed 11 --threads 1 --max-params 12000 --quiet --json)
"$NASC" "${ARGS[@]}" --db "$T/ref.db" 2>&1 | strip > "$T/ref.txt"
RANDOM=7
interrupted=0
# run_killed DB: start (or resume, if the database exists) and kill -9 after 1.0-2.9 s.
run_killed() {
    local resume=""; [ -e "$1" ] && resume=--resume
    "$NASC" "${ARGS[@]}" --db "$1" $resume >/dev/null 2>&1 &
    local pid=$!
    sleep "$((RANDOM % 2 + 1)).$((RANDOM % 10))"; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    "$NASC" report "$1" --json 2>/dev/null | grep -q '"running": 1' && interrupted=$((interrupted+1))
}
for round in 1 2 3; do
    db="$T/kill$round.db"
    run_killed "$db"
    run_killed "$db"
    resume=""; [ -e "$db" ] && resume=--resume   # both kills may land before the database exists
    "$NASC" "${ARGS[@]}" --db "$db" $resume 2>&1 | strip > "$T/kill.txt"
    if cmp -s "$T/ref.txt" "$T/kill.txt" && grep -q '"best": {' "$T/ref.txt"; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: killed (round $round) and resumed search differs from an uninterrupted one"; diff "$T/ref.txt" "$T/kill.txt" | head -6; fi
done
echo "kill -9 left an interrupted trial $interrupted times out of 6 (timing: not asserted)"
# A kill that surely lands during a trial (the test hook SIGKILLs the process as it starts
# training its 3rd trial): the row is left running, and the resumed search trains it again.
(NASC_TEST_KILL_TRIAL=3 "$NASC" "${ARGS[@]}" --db "$T/hook.db" >/dev/null 2>&1; true) 2>/dev/null
expect ok '"running": 1' "$NASC" report "$T/hook.db" --json
"$NASC" "${ARGS[@]}" --db "$T/hook.db" --resume 2>&1 | strip > "$T/hook.txt"
if cmp -s "$T/ref.txt" "$T/hook.txt"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: killed during trial 3 and resumed search differs from an uninterrupted one"; diff "$T/ref.txt" "$T/hook.txt" | head -6; fi
expect ok '"running": 0' "$NASC" report "$T/ref.db" --json
# Rejected members were never trained: they have no training time and no accuracy.
expect ok "rejected by limits" "$NASC" "${ARGS[@]}" --db "$T/ref.db" --resume

# The proxy strategy through the driver: scores candidates without training, trains the best few.
expect ok '"failed": 0' "$NASC" search --space nb201 --channels 4 --strategy proxy --proxy synflow --epochs 1 --subset 256 --val 256 --batch 128 --threads 1 --db "$T/proxy.db" --quiet --json

# Bad input.
expect fail "already holds an experiment" "$NASC" "${ARGS[@]}" --db "$T/ref.db"
expect fail "cannot resume: the experiment was started with other settings" "$NASC" search --space nb201 --channels 4 --strategy random --trials 8 --epochs 1 --subset 512 --val 512 --batch 128 --seed 11 --threads 1 --max-params 12000 --db "$T/ref.db" --resume
echo "not a database" > "$T/text.db"
expect fail "not a nasc trial database" "$NASC" search --benchmark "$CSV" --db "$T/text.db" --resume
expect fail "no such file" "$NASC" search --benchmark "$CSV" --db "$T/missing.db" --resume
expect fail "unknown flag '--trails'" "$NASC" search --trails 3
printf 'arch,accuracy\nnb201:|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1.5\n' > "$T/bad.csv"
expect fail "line 2" "$NASC" search --benchmark "$T/bad.csv" --db "$T/bad.db"
expect fail "strategy" "$NASC" search --benchmark "$CSV" --strategy annealing --db "$T/s.db"

echo "cli_search: $pass passed, $fail failed"
[ $fail -eq 0 ]
