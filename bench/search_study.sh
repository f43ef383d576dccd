#!/usr/bin/env bash
# Issue 4's real-search study on Fashion-MNIST: for each strategy (default: evolution, bohb,
# proxy), a 20-minute search of NB201 cells under 100K parameters (`nasc search ... --minutes`),
# then bench_fidelity on its trial database: K of the cells it trained, spread over its score
# ranking (the recommended one first), trained with the full NB201 recipe (12 epochs) and
# tested, with the Kendall tau between the search's low-fidelity scores and full-training
# accuracy. Usage: bash bench/search_study.sh [STRATEGY...]; env: MINUTES (20), CELLS (5),
# DIR (runs/study), THREADS (all cores), NASC_BUILD (build).
set -eu
cd "$(dirname "$0")/.."
B=${NASC_BUILD:-build}
DIR=${DIR:-runs/study}
MINUTES=${MINUTES:-20}
CELLS=${CELLS:-5}
threads=""
[ -n "${THREADS:-}" ] && threads="--threads $THREADS"
mkdir -p "$DIR"
strategies=${*:-evolution bohb proxy}
for s in $strategies; do
    resume=""
    [ -e "$DIR/$s.db" ] && resume=--resume
    "$B/nasc" search --space nb201 --strategy "$s" --minutes "$MINUTES" --max-params 100000 --db "$DIR/$s.db" \
        $resume $threads --quiet --json > "$DIR/$s.search.json"
    tail -n 1 "$DIR/$s.search.json" | cut -c 1-300
    "$B/bench/bench_fidelity" "$DIR/$s.db" --cells "$CELLS" --epochs 12 $threads | tee "$DIR/$s.fidelity.txt"
done
