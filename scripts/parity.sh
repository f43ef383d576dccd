#!/usr/bin/env bash
# Recipe parity (engine issue): train NB201's all-skip cell on Fashion-MNIST with NB201's recipe
# (SGD, Nesterov 0.9, lr 0.1 cosine per step to 0, wd 5e-4, batch 256, no augmentation,
# 12 epochs, mean 0.2860 / std 0.3530) in nasc and in PyTorch (scripts/torch_nb201_train.py,
# Debian's python3-torch), for each seed, and print both test accuracies.
# Usage: bash scripts/parity.sh [SEEDS...] (default 0 1). Threads: $THREADS (default 1).
set -eu
cd "$(dirname "$0")/.."
make -s build/nasc
CELL='|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|'
T=${THREADS:-1}
out=$(mktemp -d)
[ $# -gt 0 ] || set -- 0 1
for s in "$@"; do
    build/nasc train --arch "nb201:$CELL" --channels 16 --cells 1 --seed "$s" --threads "$T" --quiet --json |
        tail -n 1 > "$out/nasc_$s.json"
    /usr/bin/python3 scripts/torch_nb201_train.py --arch "$CELL" --channels 16 --cells 1 --epochs 12 --batch 256 \
        --seed "$s" --threads "$T" --json "$out/torch_$s.json" > /dev/null
    echo "seed $s: nasc $(grep -o '"test_acc": [0-9.]*' "$out/nasc_$s.json")  pytorch $(grep -o '"test_acc": [0-9.]*' "$out/torch_$s.json" | tail -n 1)"
done
rm -rf "$out"
