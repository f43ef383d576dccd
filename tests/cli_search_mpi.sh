#!/usr/bin/env bash
# `mpirun -np 3 nasc search` (the MPI build, make MPI=1): a small real-training search spread over
# two workers; the trial database must hold one finished row per trial (seq contiguous, checked by
# the driver's trials_check), both workers used, no member over --max-params trained; resume of
# the finished search adds nothing. Then a worker dies during its first trial (test hook
# NASC_TEST_DIE_RANK/NASC_TEST_DIE_AFTER): the search must still finish with the other worker,
# the lost trial redone. Skips (exit 0) when there is no MPI build for this build folder
# (build -> build-mpi, build-san -> build-san-mpi) or no mpirun.
set -u
B=${1:-build}
MPIBIN="$B-mpi/nasc"
if [ ! -x "$MPIBIN" ] || ! command -v mpirun >/dev/null; then
    echo "cli_search_mpi: skipped (no $MPIBIN or no mpirun; build it with make MPI=1)"; exit 0
fi
T=$(mktemp -d /tmp/nasc_cli_search_mpi_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
MPIRUN=(mpirun --oversubscribe --enable-recovery -np 3)
[ "$(id -u)" -eq 0 ] && MPIRUN=(mpirun --allow-run-as-root --oversubscribe --enable-recovery -np 3)
ARGS=(search --space nb201 --channels 4 --strategy evolution --trials 8 --epochs 1 --subset 512 --val 512 --batch 128 --seed 11 --threads 1 --max-params 12000 --json)
jval() { printf '%s\n' "$1" | tail -n 1 | sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p"; }
# check_db DB OUT: the search's JSON (OUT) and `nasc report DB --json` agree with the rules.
check_db() {
    local db=$1 out=$2 rep ok=1
    rep=$("$MPIBIN" report "$db" --top 1000 --json 2>/dev/null | tail -n 1)
    local n=$(jval "$rep" trials) done=$(jval "$rep" done) inf=$(jval "$rep" infeasible) run=$(jval "$rep" running)
    local fl=$(jval "$rep" failed)
    [ "$run" = 0 ] || { ok=0; echo "FAIL: $db: $run trials still running"; }
    [ -n "$n" ] && [ $((done + inf + fl)) -eq "$n" ] || { ok=0; echo "FAIL: $db: rows $n != done $done + infeasible $inf + failed $fl"; }
    [ $((n - inf)) -eq 8 ] || { ok=0; echo "FAIL: $db: $((n - inf)) evaluated trials, wanted 8"; }
    # Every finished (trained or reused) trial in the report respects --max-params.
    local big=$(printf '%s\n' "$rep" | grep -o '"params": [0-9]*' | awk '$2 > 12000' | wc -l)
    [ "$big" -eq 0 ] || { ok=0; echo "FAIL: $db: $big trained trials above --max-params"; }
    # Trials per rank, from the database: rank 0 evaluates nothing while it has workers.
    case "$(tail -n 1 "$out")" in *'"ranks": 3, "per_rank": ['*) ;; *) ok=0; echo "FAIL: no per_rank in the search's JSON";; esac
    PER=$(tail -n 1 "$out" | sed -n 's/.*"per_rank": \[\([0-9, ]*\)\].*/\1/p')
    [ $ok = 1 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "    report: $rep" | cut -c1-400; }
}

# 1. Three ranks, every worker alive.
"${MPIRUN[@]}" "$MPIBIN" "${ARGS[@]}" --db "$T/a.db" > "$T/a.txt" 2> "$T/a.err"; rc=$?
if [ $rc -eq 0 ] && grep -q '"best": {' "$T/a.txt"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: mpirun -np 3 search exited $rc"; tail -n 5 "$T/a.err" "$T/a.txt"; fi
check_db "$T/a.db" "$T/a.txt"
IFS=', ' read -r r0 r1 r2 <<< "$PER"
if [ "${r0:-x}" = 0 ] && [ "${r1:-0}" -ge 1 ] && [ "${r2:-0}" -ge 1 ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: trials per rank '$PER' (wanted 0 on rank 0, some on ranks 1 and 2)"; fi
# Resuming the finished search (also serially) trains nothing more and gives the same answer.
"${MPIRUN[@]}" "$MPIBIN" "${ARGS[@]}" --db "$T/a.db" --resume > "$T/a2.txt" 2>/dev/null
if [ "$(grep '"best"' "$T/a.txt" | sed 's/, "ranks".*//')" = "$(grep '"best"' "$T/a2.txt" | sed 's/, "ranks".*//')" ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: resuming a finished MPI search changed it"; diff "$T/a.txt" "$T/a2.txt" | head -4; fi
expect ok '"trials": 9' "$MPIBIN" "${ARGS[@]}" --db "$T/a.db" --resume --quiet

# 2. Rank 2 dies as soon as it gets its first trial: rank 1 finishes the search, the lost trial redone.
NASC_TEST_DIE_RANK=2 NASC_TEST_DIE_AFTER=1 "${MPIRUN[@]}" -x NASC_TEST_DIE_RANK -x NASC_TEST_DIE_AFTER \
    "$MPIBIN" "${ARGS[@]}" --db "$T/d.db" --worker-timeout 4 > "$T/d.txt" 2> "$T/d.err"
if grep -q '"best": {' "$T/d.txt" && grep -q 'worker rank 2 lost' "$T/d.err"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: the search did not survive a dead rank"; tail -n 8 "$T/d.err" "$T/d.txt"; fi
check_db "$T/d.db" "$T/d.txt"
IFS=', ' read -r r0 r1 r2 <<< "$PER"
if [ "${r0:-x}" = 0 ] && [ "${r1:-0}" -ge 8 ] && [ -z "${r2:-}" -o "${r2:-0}" = 0 ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: after rank 2 died, trials per rank '$PER' (wanted all on rank 1)"; fi

echo "cli_search_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
