#!/usr/bin/env bash
# `make run`: the main job on Fashion-MNIST, from search to a deployable model.
#   1. search NAS-Bench-201 cells under 100K parameters with regularized evolution for $MINUTES
#      minutes (default 15; every trial recorded in runs/search.db, a rerun resumes it), print the
#      recommended cell and the Pareto front, and write runs/report.html;
#   2. train the recommended cell with NB201's full recipe ($EPOCHS epochs, default 12) into
#      runs/best.nasc;
#   3. compress it: 25% channel pruning fine-tuned for 2 epochs with distillation from the
#      unpruned model, then int8 post-training quantization, into runs/best.q8 (the before/after
#      table shows size, params, MACs, test accuracy and batch-1 latency);
#   4. export the int8 model as ONNX (runs/best.onnx, QDQ) and as standalone C for a
#      microcontroller (runs/c/nasc_model.c and .h).
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
build/nasc report runs/search.db --out runs/report.html > /dev/null
echo "== report: runs/report.html"
echo "== training the recommended cell with the full recipe: $best"
build/nasc train --arch "$best" --channels 16 --cells 1 --epochs "$EPOCHS" --out runs/best.nasc
echo "== compressing: 25% channel pruning + distillation, then int8"
build/nasc compress runs/best.nasc --prune 0.25 --finetune-epochs 2 --distill runs/best.nasc --quantize int8 \
    --out runs/best.q8
echo "== exporting"
build/nasc export runs/best.q8 --format onnx --out runs/best.onnx
build/nasc export runs/best.q8 --format c --out runs/c --name nasc_model
