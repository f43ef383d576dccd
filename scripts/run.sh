#!/usr/bin/env bash
# `make run`: the main job on Fashion-MNIST. Searches NAS-Bench-201 cells under 100K parameters
# with regularized evolution for $MINUTES minutes (default 15; every trial recorded in
# runs/search.db, and a rerun resumes it), prints the recommended cell and the Pareto front,
# then trains the recommended cell with NB201's full recipe ($EPOCHS epochs, default 12), saves
# it to runs/best.nasc and evaluates the saved model on the test set.
set -eu
cd "$(dirname "$0")/.."
mkdir -p runs
MINUTES=${MINUTES:-15}
EPOCHS=${EPOCHS:-12}
resume=""
[ -e runs/search.db ] && resume=--resume
build/nasc search --space nb201 --strategy evolution --minutes "$MINUTES" --max-params 100000 \
    --db runs/search.db $resume --json | tee runs/search.txt
best=$(tail -n 1 runs/search.txt | sed -n 's/.*"best": {"arch": "\([^"]*\)".*/\1/p')
[ -n "$best" ] || { echo "run: the search found no trained cell" >&2; exit 1; }
echo "== training the recommended cell with the full recipe: $best"
build/nasc train --arch "$best" --channels 16 --cells 1 --epochs "$EPOCHS" --out runs/best.nasc
build/nasc eval runs/best.nasc
