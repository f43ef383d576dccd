#!/usr/bin/env bash
# `make run`: the main job. For now (engine stage): train an NAS-Bench-201 cell with NB201's
# recipe on Fashion-MNIST, save it, and evaluate the saved model on the test set.
set -eu
cd "$(dirname "$0")/.."
ARCH='nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
mkdir -p runs
build/nasc train --arch "$ARCH" --channels 16 --cells 1 --epochs "${EPOCHS:-12}" --val 5000 --out runs/nb201.nasc
build/nasc eval runs/nb201.nasc
