#!/usr/bin/env bash
# The compression benchmark on Fashion-MNIST: for resnet8, mbv2 and an NB201 cell, train the fp32
# model (once; kept in $DIR), then with `nasc compress`: int8 post-training quantization with each
# calibration method, quantization-aware training (distilled from the fp32 model), and 50%
# channel pruning fine-tuned with distillation from the unpruned model. Prints one line per run
# with the test accuracy change against fp32, sizes and batch-1 latencies (the latter measured in
# turns within each compress run). Usage: bash bench/compress.sh [NASC] ; env: DIR, EPOCHS,
# FT_EPOCHS (12), PRUNE_LR (0.1), SCHEDULE (gradual), QAT_EPOCHS (2), NETS, THREADS (2).
set -eu
cd "$(dirname "$0")/.."
NASC=${1:-build/nasc}
DIR=${DIR:-runs/compress}
EPOCHS=${EPOCHS:-12}
FT_EPOCHS=${FT_EPOCHS:-12}
PRUNE_LR=${PRUNE_LR:-0.1}
SCHEDULE=${SCHEDULE:-gradual}
QAT_EPOCHS=${QAT_EPOCHS:-2}
NB201='nb201:|skip_connect~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|none~1|none~2|'
NETS=${NETS:-"resnet8 mbv2 nb201"}
THREADS=${THREADS:-2}
mkdir -p "$DIR"
arch_of() { case $1 in nb201) echo "$NB201" ;; *) echo "$1" ;; esac; }
for net in $NETS; do
    [ -e "$DIR/$net.nasc" ] || "$NASC" train --arch "$(arch_of "$net")" --epochs "$EPOCHS" --threads "$THREADS" --quiet --out "$DIR/$net.nasc"
done
row() { # NET WHAT JSON: one line of the table; the JSON is also kept in $DIR
    printf '%s\n' "$3" | tail -n 1 > "$DIR/$1.$(printf '%s' "$2" | tr -c 'a-z0-9' '_').json"
    printf '%s\n' "$3" | tail -n 1 | N="$1" W="$2" perl -ne '
        my %s; for my $side ("before", "after") { /"$side": \{([^}]*)\}/ or next; my $o = $1;
            while ($o =~ /"(\w+)": ([-0-9.e+]+)/g) { $s{$side}{$1} = $2 } }
        printf "%-8s %-28s fp32 %.4f -> %.4f  (%+.2f points)  bytes %7d -> %7d  params %6d -> %6d  latency %.3f -> %.3f ms (x%.2f)\n",
            $ENV{N}, $ENV{W}, $s{before}{test_acc}, $s{after}{test_acc}, 100 * ($s{after}{test_acc} - $s{before}{test_acc}),
            $s{before}{bytes}, $s{after}{bytes}, $s{before}{params}, $s{after}{params},
            $s{before}{latency_ms}, $s{after}{latency_ms},
            $s{after}{latency_ms} > 0 ? $s{before}{latency_ms} / $s{after}{latency_ms} : 0;'
}
for net in $NETS; do
    m="$DIR/$net.nasc"
    for cal in minmax percentile mse; do
        row "$net" "ptq int8 ($cal)" "$("$NASC" compress "$m" --quantize int8 --calib-method "$cal" --threads "$THREADS" --quiet --json --out "$DIR/$net.ptq-$cal.q8")"
    done
    row "$net" "qat int8 ($QAT_EPOCHS ep, kd)" "$("$NASC" compress "$m" --quantize int8 --qat-epochs "$QAT_EPOCHS" --distill "$m" --threads "$THREADS" --quiet --json --out "$DIR/$net.qat.q8")"
    row "$net" "prune 50% ch ($SCHEDULE, $FT_EPOCHS ep, lr $PRUNE_LR, kd)" "$("$NASC" compress "$m" --prune 0.5 --prune-schedule "$SCHEDULE" \
        --finetune-epochs "$FT_EPOCHS" --lr "$PRUNE_LR" --distill "$m" --threads "$THREADS" --quiet --json --out "$DIR/$net.p50.nasc")"
done
