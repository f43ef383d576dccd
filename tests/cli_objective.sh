#!/usr/bin/env bash
# `nasc search --objective mnas|mnas-hard` (MnasNet's latency-aware reward) on a tabular benchmark
# this script writes (every NB201 cell, an accuracy that grows slowly with convolutions and a
# latency_ms column that grows fast with them, so deterministic and instant): with a tight latency
# target the recommended model is faster than the accuracy objective's, on the same trials
# (random strategy, same seed) and when the strategy optimizes the reward (evolution); the stored
# score follows the formula; a stopped and resumed mnas search equals an uninterrupted one;
# resuming with another objective is refused. Also the progress line (trials done, best so far,
# Pareto size, time left) and clear messages for bad objective flags.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_cli_objective_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
strip() { sed 's|(database [^)]*)||; s|"db": "[^"]*"||'; }
# jget JSON_LINE OBJECT KEY: a number inside "OBJECT": {...} of a one-line JSON object.
jget() { printf '%s\n' "$1" | sed -n "s/.*\"$2\": {[^}]*\"$3\": \([-0-9.e]*\).*/\1/p"; }

CSV="$T/lat.csv"
awk 'BEGIN {
    split("none skip_connect nor_conv_1x1 nor_conv_3x3 avg_pool_3x3", op, " ")
    acc["none"] = 0; acc["skip_connect"] = 1; acc["nor_conv_1x1"] = 3; acc["nor_conv_3x3"] = 5; acc["avg_pool_3x3"] = 0
    lat["none"] = 0; lat["skip_connect"] = 0.02; lat["nor_conv_1x1"] = 0.3; lat["nor_conv_3x3"] = 1.0; lat["avg_pool_3x3"] = 0.1
    print "arch,accuracy,latency_ms"
    i = 0
    for (a = 1; a <= 5; a++) for (b = 1; b <= 5; b++) for (c = 1; c <= 5; c++)
    for (d = 1; d <= 5; d++) for (e = 1; e <= 5; e++) for (f = 1; f <= 5; f++) {
        i++
        s = acc[op[a]] + acc[op[b]] + acc[op[c]] + acc[op[d]] + acc[op[e]] + acc[op[f]]
        l = 0.1 + lat[op[a]] + lat[op[b]] + lat[op[c]] + lat[op[d]] + lat[op[e]] + lat[op[f]]
        printf "nb201:|%s~0|+|%s~0|%s~1|+|%s~0|%s~1|%s~2|,%.5f,%.3f\n", op[a], op[b], op[c], op[d], op[e], op[f], 0.9 + 0.002 * s + (i % 97) / 100000, l
    }
}' > "$CSV"

S=(search --benchmark "$CSV" --seed 5 --quiet --json)
# The same 60 random trials, judged by accuracy and by MnasNet's reward with T = 0.5 ms.
acc=$("$NASC" "${S[@]}" --strategy random --trials 60 --db "$T/acc.db" 2>&1 | tail -n 1)
mnas=$("$NASC" "${S[@]}" --strategy random --trials 60 --db "$T/mnas.db" --objective mnas --latency-target 0.5 2>&1 | tail -n 1)
la=$(jget "$acc" best latency_ms) lm=$(jget "$mnas" best latency_ms)
aa=$(jget "$acc" best val_acc) am=$(jget "$mnas" best val_acc) sm=$(jget "$mnas" best score)
echo "random, 60 trials: acc objective picks val_acc $aa at $la ms; mnas (T 0.5 ms) picks val_acc $am at $lm ms, score $sm"
if [ -n "$la" ] && [ -n "$lm" ] && awk -v a="$la" -v m="$lm" -v aa="$aa" -v am="$am" 'BEGIN { exit !(m < a && am <= aa) }'; then
    pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: mnas did not pick a faster, less accurate model: acc $acc / mnas $mnas" | cut -c1-600; fi
# The score is val_acc * (latency / T)^-0.07, and the acc objective's pick scores no higher.
if awk -v s="$sm" -v a="$am" -v l="$lm" -v aa="$aa" -v la="$la" 'BEGIN { r = a * (l / 0.5) ^ -0.07; ra = aa * (la / 0.5) ^ -0.07
        exit !(s - r < 1e-6 && r - s < 1e-6 && ra <= s) }'; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: mnas score $sm is not val_acc x (lat / T)^-0.07 of ($am, $lm), or the acc pick scores higher"; fi
# The report reads the score and the objective back.
expect ok '"objective": "mnas"' "$NASC" report "$T/mnas.db" --json
rep=$(printf '%s\n' "$LAST" | tail -n 1)
[ "$(jget "$rep" best score)" = "$sm" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: report's best score $(jget "$rep" best score) != search's $sm"; }
expect ok '"objective": "acc"' "$NASC" report "$T/acc.db" --json

# Evolution maximizes the reward: its pick is faster than under the accuracy objective.
ea=$("$NASC" "${S[@]}" --strategy evolution --trials 80 --db "$T/ea.db" 2>&1 | tail -n 1)
em=$("$NASC" "${S[@]}" --strategy evolution --trials 80 --db "$T/em.db" --objective mnas --latency-target 0.5 2>&1 | tail -n 1)
echo "evolution, 80 trials: acc picks $(jget "$ea" best latency_ms) ms; mnas picks $(jget "$em" best latency_ms) ms"
if awk -v a="$(jget "$ea" best latency_ms)" -v m="$(jget "$em" best latency_ms)" 'BEGIN { exit !(m + 0 > 0 && m < a) }'; then
    pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: evolution under mnas picked no faster model"; fi

# mnas-hard: with a loose target (every cell is under 7 ms) it is the accuracy objective; with
# a tight one it trades accuracy for speed like the soft reward.
hl=$("$NASC" "${S[@]}" --strategy random --trials 60 --db "$T/hl.db" --objective mnas-hard --latency-target 50 2>&1 | tail -n 1)
[ "$(jget "$hl" best val_acc)" = "$aa" ] && [ "$(jget "$hl" best score)" = "$aa" ] && pass=$((pass+1)) || {
    fail=$((fail+1)); echo "FAIL: mnas-hard with a loose target differs from acc: $hl" | cut -c1-400; }
ht=$("$NASC" "${S[@]}" --strategy random --trials 60 --db "$T/ht.db" --objective mnas-hard --latency-target 0.5 2>&1 | tail -n 1)
if awk -v a="$la" -v m="$(jget "$ht" best latency_ms)" 'BEGIN { exit !(m + 0 > 0 && m < a) }'; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: mnas-hard with a tight target picked no faster model: $ht" | cut -c1-400; fi

# Stopped after 25 trials and resumed to 80: the same search as an uninterrupted one.
"$NASC" "${S[@]}" --strategy evolution --trials 25 --db "$T/part.db" --objective mnas --latency-target 0.5 >/dev/null 2>&1
res=$("$NASC" "${S[@]}" --strategy evolution --trials 80 --db "$T/part.db" --objective mnas --latency-target 0.5 --resume 2>&1 | tail -n 1)
if [ "$(printf '%s\n' "$res" | strip)" = "$(printf '%s\n' "$em" | strip)" ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: a resumed mnas search differs from an uninterrupted one"; echo "  $em" | cut -c1-300; echo "  $res" | cut -c1-300; fi
expect fail "objective: stored 'mnas', this command (not set)" "$NASC" "${S[@]}" --strategy evolution --trials 80 --db "$T/part.db" --resume
expect fail "latency_target_ms: stored '0.5', this command '0.8'" "$NASC" "${S[@]}" --strategy evolution --trials 80 --db "$T/part.db" --objective mnas --latency-target 0.8 --resume

# A target's latency budget stands in for --latency-target (and stays a hard limit).
MCU_MS=$(sed -n 's/^ *latency_ms *= *\([0-9.]*\).*/\1/p' "$(dirname "$0")/../targets/mcu.target")
expect ok '"score": ' "$NASC" search --benchmark "$CSV" --strategy random --trials 5 --db "$T/tg.db" --objective mnas --target mcu --quiet --json
expect ok "\"latency_target_ms\": \"$MCU_MS\"" "$NASC" report "$T/tg.db" --json

# Progress: one line per trial with trials done, best so far, Pareto size and time left.
"$NASC" search --benchmark "$CSV" --strategy random --trials 6 --seed 1 --db "$T/p.db" > /dev/null 2> "$T/p.err"
if grep -q '^trial 5 .*| 6/6 done  best 0\.[0-9]*  pareto [1-9][0-9]*  [0-9]*s, 0s left' "$T/p.err" &&
   grep -q '^trial 1 .*| 2/6 done  best .* pareto .*, ~[0-9]*s left' "$T/p.err"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: progress lines lack done/best/pareto/time left:"; head -n 3 "$T/p.err"; fi
"$NASC" search --benchmark "$CSV" --strategy random --minutes 5 --trials 1 --seed 1 --db "$T/pm.db" --objective mnas --latency-target 1 > /dev/null 2> "$T/pm.err"
if grep -q '^trial 0 .* lat [0-9.]* ms  score 0\.[0-9]* | 1\(/1\)\? done  best .* pareto 1  [0-9]*s, [0-9]*s left' "$T/pm.err"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: --minutes progress lacks the budget left or the mnas score:"; head -n 3 "$T/pm.err"; fi

# Bad flags.
B1=(search --benchmark "$CSV" --trials 3 --db "$T/bad.db")
expect fail "--objective must be acc, mnas or mnas-hard, got 'latency'" "$NASC" "${B1[@]}" --objective latency
expect fail "--objective mnas needs --latency-target MS (or a --target with a latency budget)" "$NASC" "${B1[@]}" --objective mnas
expect fail "--latency-target needs a number, got 'fast'" "$NASC" "${B1[@]}" --objective mnas --latency-target fast
expect fail "--latency-target must be a positive number of milliseconds, got '0'" "$NASC" "${B1[@]}" --objective mnas --latency-target 0
expect fail "--latency-target must be a positive number of milliseconds, got '-2'" "$NASC" "${B1[@]}" --objective mnas --latency-target -2
expect fail "--latency-target is the target of --objective mnas or mnas-hard" "$NASC" "${B1[@]}" --latency-target 2
expect fail "--mnas-w must be negative" "$NASC" "${B1[@]}" --objective mnas --latency-target 2 --mnas-w 0.07
expect fail "--mnas-w needs a number, got ''" "$NASC" "${B1[@]}" --objective mnas --latency-target 2 --mnas-w ''
expect fail "--mnas-w is the exponent of --objective mnas (the objective is mnas-hard)" "$NASC" "${B1[@]}" --objective mnas-hard --latency-target 2 --mnas-w -0.1
expect fail "--objective needs a value" "$NASC" "${B1[@]}" --objective
[ ! -e "$T/bad.db" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: a refused search left a database"; }

echo "cli_objective: $pass passed, $fail failed"
[ $fail -eq 0 ]
