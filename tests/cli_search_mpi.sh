#!/usr/bin/env bash
# `mpirun -np 3 nasc search` (the MPI build, make MPI=1): a small real-training search spread over
# two workers; the trial database must hold one finished row per trial (seq contiguous, checked by
# the driver's trials_check), both workers used, no member over --max-params trained; resume of
# the finished search adds nothing. Then a worker dies during its first trial (test hook
# NASC_TEST_DIE_RANK/NASC_TEST_DIE_AFTER): the search must still finish with the other worker,
# the lost trial redone (exactly one trial has two attempts, on rank 1). Then the same with a
# real kill -9 of rank 2's process mid-search, and a kill -9 of rank 0 (rank 2 holding a trial it
# never answers, NASC_TEST_STALL_RANK, so that both kills land mid-search): the workers notice
# (--worker-timeout), the job ends, and `--resume` under mpirun completes the search.
# Processes are found by an environment mark (NASC_TEST_MARK=<this run's temp folder>, passed
# with mpirun -x) and OpenMPI's OMPI_COMM_WORLD_RANK, so only this script's ranks are killed.
# The MPI binary: $NASC_MPI_BIN, else the MPI build beside this build folder (build ->
# build-mpi, build-san -> build-san-mpi). Skips (exit 0) when there is none or no mpirun.
set -u
B=${1:-build}
MPIBIN=${NASC_MPI_BIN:-$B-mpi/nasc}
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

# redone DB WANT: the trials run twice (attempts 2, all finished on rank 1) are WANT in number.
redone() {
    local rep n bad
    rep=$("$MPIBIN" report "$1" --top 1000 --json 2>/dev/null | tail -n 1)
    # trials, not mentions: the report lists a trial as the best, in the top list and on the
    # Pareto front, so each object is counted once by its seq
    n=$(printf '%s\n' "$rep" | grep -o '"seq": [0-9]*[^{}]*"attempts": 2' | grep -o '^"seq": [0-9]*' | sort -u | wc -l)
    bad=$(printf '%s\n' "$rep" | grep -o '"seq": [0-9]*[^{}]*"worker": [0-9]*, "attempts": 2' | grep -v '"worker": 1,' |
        grep -o '^"seq": [0-9]*' | sort -u | wc -l)
    if [ "$n" = "$2" ] && [ "$bad" = 0 ]; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: $1: $n trials redone ($bad not on rank 1), wanted $2"; fi
}
# rank_pids RANK: the processes of this script's MPI job with that rank.
rank_pids() {
    local p e
    for p in /proc/[0-9]*; do
        e=$( { tr '\0' '\n' < "$p/environ"; } 2>/dev/null) || continue
        case "$e" in *"NASC_TEST_MARK=$T"*) ;; *) continue ;; esac
        printf '%s\n' "$e" | grep -qx "OMPI_COMM_WORLD_RANK=$1" && echo "${p#/proc/}"
    done
}
# wait_trial ERRFILE: until rank 0 has printed a first trial (60 s at most).
wait_trial() { for _ in $(seq 600); do grep -q '^trial ' "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# 2. Rank 2 dies as soon as it gets its first trial: rank 1 finishes the search, the lost trial redone.
NASC_TEST_DIE_RANK=2 NASC_TEST_DIE_AFTER=1 "${MPIRUN[@]}" -x NASC_TEST_DIE_RANK -x NASC_TEST_DIE_AFTER \
    "$MPIBIN" "${ARGS[@]}" --db "$T/d.db" --worker-timeout 4 > "$T/d.txt" 2> "$T/d.err"
if grep -q '"best": {' "$T/d.txt" && grep -q 'worker rank 2 lost' "$T/d.err"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: the search did not survive a dead rank"; tail -n 8 "$T/d.err" "$T/d.txt"; fi
check_db "$T/d.db" "$T/d.txt"
IFS=', ' read -r r0 r1 r2 <<< "$PER"
if [ "${r0:-x}" = 0 ] && [ "${r1:-0}" -ge 8 ] && [ -z "${r2:-}" -o "${r2:-0}" = 0 ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: after rank 2 died, trials per rank '$PER' (wanted all on rank 1)"; fi
redone "$T/d.db" 1

# 3. kill -9 of rank 2's process once the first trial is in: the search finishes on rank 1; the
# trial rank 2 held is redone exactly once. Rank 2 never answers its trial (test hook
# NASC_TEST_STALL_RANK), so the kill finds it holding one however fast rank 1 trains the rest
# (with the kill left to chance, a search that had ended first failed this check).
export NASC_TEST_MARK="$T"
NASC_TEST_STALL_RANK=2 "${MPIRUN[@]}" -x NASC_TEST_MARK -x NASC_TEST_STALL_RANK "$MPIBIN" "${ARGS[@]}" --db "$T/k.db" \
    --worker-timeout 4 > "$T/k.txt" 2> "$T/k.err" &
job=$!
wait_trial "$T/k.err"
victims=$(rank_pids 2)
[ -n "$victims" ] && kill -9 $victims
wait $job
lost=$(grep -c 'worker rank 2 lost.*its trial goes to another worker' "$T/k.err")
if [ -n "$victims" ] && grep -q '"best": {' "$T/k.txt" && grep -q 'worker rank 2 lost' "$T/k.err"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: the search did not survive kill -9 of rank 2 (pid '$victims')"; tail -n 8 "$T/k.err" "$T/k.txt"; fi
check_db "$T/k.db" "$T/k.txt"
redone "$T/k.db" "$lost"
echo "kill -9 of rank 2: $lost trial(s) lost with it and redone; trials per rank: $PER"

# 4. kill -9 of rank 0 mid-search: the workers give up after --worker-timeout (the job ends
# instead of hanging), the database keeps what was finished, and --resume completes it. Rank 2
# holds its trial (as in 3), so the search is still running when rank 0 dies.
NASC_TEST_STALL_RANK=2 "${MPIRUN[@]}" -x NASC_TEST_MARK -x NASC_TEST_STALL_RANK "$MPIBIN" "${ARGS[@]}" --db "$T/m.db" \
    --worker-timeout 4 > "$T/m.txt" 2> "$T/m.err" &
job=$!
wait_trial "$T/m.err"
victims=$(rank_pids 0)
[ -n "$victims" ] && kill -9 $victims
SECONDS=0
while kill -0 $job 2>/dev/null && [ $SECONDS -lt 60 ]; do sleep 0.2; done
if kill -0 $job 2>/dev/null; then
    fail=$((fail+1)); echo "FAIL: the workers were still running 60 s after rank 0 died"; kill -- $job 2>/dev/null
else
    pass=$((pass+1)); echo "rank 0 killed: the job ended ${SECONDS} s later"
fi
wait $job 2>/dev/null
expect ok "rank 0 is gone; continue with --resume" cat "$T/m.err"
expect ok '"running": ' "$MPIBIN" report "$T/m.db" --json
[ "$(json_val done)" -lt 8 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: the search finished although rank 0 was killed"; }
"${MPIRUN[@]}" "$MPIBIN" "${ARGS[@]}" --db "$T/m.db" --worker-timeout 4 --resume > "$T/m2.txt" 2> "$T/m2.err"
if grep -q '"best": {' "$T/m2.txt" && grep -q 'search: resuming' "$T/m2.err"; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: resuming after rank 0 died"; tail -n 8 "$T/m2.err" "$T/m2.txt"; fi
check_db "$T/m.db" "$T/m2.txt"

echo "cli_search_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
