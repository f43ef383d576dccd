#!/usr/bin/env bash
# CLI behaviour on bad input: every case must exit non-zero with a message naming the problem,
# never crash (a crash shows as status >= 128 or a sanitizer report). Uses Fashion-MNIST
# (installed by scripts/install-deps.sh) and files this script makes in a temp folder.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_cli_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"
FM=/usr/share/datasets/fashion-mnist
Q="--quiet --threads 2"

expect fail "unknown command 'trian'" "$NASC" trian
expect fail "unknown flag '--epoch'" "$NASC" train --arch small --epoch 3
expect fail "--epochs needs a whole number, got 'x'" "$NASC" train --arch small --epochs x
expect fail "--lr needs a value" "$NASC" train --arch small --lr
expect fail "--arch is required" "$NASC" train
expect fail "--optimizer must be one of sgd, adam, adamw" "$NASC" train --arch small --optimizer rmsprop
expect fail "line 1, column 24: unknown op 'relux'" "$NASC" train $Q --arch 'conv(c=16,k=3);bn;relu;relux;gap;linear'
expect fail "line 2, column 1: op 'conv' needs attribute 'k'" "$NASC" train $Q --arch "$(printf 'conv(c=8,k=3)\nconv(c=8)')"
expect fail "unknown operation 'nor_conv_9x9'" "$NASC" train $Q --arch 'nb201:|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|'
expect fail "unknown dataset source prefix" "$NASC" train $Q --arch small --data imagenet:/nowhere
expect fail "/nowhere" "$NASC" train $Q --arch small --data mnist:/nowhere

# A truncated data file.
mkdir -p "$T/fm"
cp $FM/train-images-idx3-ubyte.gz $FM/train-labels-idx1-ubyte.gz $FM/t10k-labels-idx1-ubyte.gz "$T/fm/"
head -c 100000 $FM/t10k-images-idx3-ubyte.gz > "$T/fm/t10k-images-idx3-ubyte.gz"
expect fail "t10k-images" "$NASC" train $Q --arch small --data "fashion-mnist:$T/fm" --epochs 1 --subset 256
rm "$T/fm/t10k-images-idx3-ubyte.gz"
expect fail "t10k-images" "$NASC" train $Q --arch small --data "fashion-mnist:$T/fm" --epochs 1 --subset 256

# Train a tiny model, evaluate it, then corrupt it.
expect ok "test_acc" "$NASC" train $Q --arch small --epochs 1 --subset 512 --batch 64 --out "$T/m.nasc" --json
expect ok '"test_acc"' "$NASC" eval "$T/m.nasc" --json --threads 2
expect fail "cannot open" "$NASC" eval "$T/missing.nasc"
head -c 300 "$T/m.nasc" > "$T/trunc.nasc"
expect fail "truncated" "$NASC" eval "$T/trunc.nasc"
cp "$T/m.nasc" "$T/bad.nasc"; printf '\x55' | dd of="$T/bad.nasc" bs=1 seek=2000 conv=notrunc 2>/dev/null
expect fail "corrupted" "$NASC" eval "$T/bad.nasc"
echo "not a model" > "$T/text.nasc"
expect fail "not a nasc model" "$NASC" eval "$T/text.nasc"
expect fail "needs a model file" "$NASC" eval

# A divergent run stops with a clear message and a non-zero status.
expect fail "training diverged" "$NASC" train $Q --arch 'conv(c=8,k=3,bias=1);relu;gap;linear' --lr 1e30 --wd 0 --epochs 1 --subset 512 --batch 64

echo "cli_errors: $pass passed, $fail failed"
[ $fail -eq 0 ]
