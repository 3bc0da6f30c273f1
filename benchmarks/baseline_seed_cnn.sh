#!/usr/bin/env bash
# Train the seed_cnn baseline (the original analysis's network) with its own recipe, for the
# baseline row of benchmarks/accuracy.py. Run it on the build machine, not the Pi.
#
#   benchmarks/baseline_seed_cnn.sh [DATA] [OUT]          # defaults: data/fer2013 runs/seed_cnn
#   EPOCHS=5 benchmarks/baseline_seed_cnn.sh data/fer2013 runs/seed_cnn
#
# Recipe: plain Adam at a constant learning rate 1e-3 (Keras' default), no augmentation, no
# class weights, no label smoothing, batch 64, early stopping on val accuracy with patience 3,
# best epoch kept. EPOCHS caps training time (an epoch is ~6.5 min on 2
# x86 cores); the cap is read back from the run folder and printed in the accuracy table, so a
# reader knows the baseline is not converged. An interrupted run continues with RESUME=1.
set -euo pipefail

DATA="${1:-data/fer2013}"
OUT="${2:-runs/seed_cnn}"
EPOCHS="${EPOCHS:-5}"
EDGE="${EDGE:-edge}"

if [ ! -d "$DATA" ] && [ ! -f "$DATA" ]; then
    echo "error: dataset $DATA not found; extract fer2013.tar.gz (mkdir -p data && tar -xzf ../shared/datasets/fer2013.tar.gz -C data)" >&2
    exit 2
fi

resume=()
if [ "${RESUME:-0}" = "1" ]; then resume=(--resume); fi

"$EDGE" train --data "$DATA" --out "$OUT" --arch seed_cnn \
    --no-augment --class-weight-power 0 --label-smoothing 0 \
    --optimizer adam --schedule constant --epochs "$EPOCHS" --patience 3 --lr 1e-3 --batch-size 64 --seed 1234 "${resume[@]}"

echo
echo "baseline trained in $OUT (capped at $EPOCHS epochs). Its accuracy row:"
echo "  python benchmarks/accuracy.py edge/models/default/model_int8.tflite runs/default/model.keras --data $DATA --baseline $OUT"
