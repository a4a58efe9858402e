#!/usr/bin/env bash
# The emission-centering comparison of docs/training.md: the default recipe, shortened
# (STEPS steps, windows of at most 6 kb), once per centering mode, then one learning-curve
# plot. Resumable (each run continues from its last.pt).
#   bash scripts/compare_centering.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-150}
for c in none position label_mean; do
  out=build/runs/center_$c
  resume=""; [ -f "$out/last.pt" ] && resume="--resume"
  .venv/bin/genoseg train --config configs/train.yaml $resume -o "$out" \
    --set model.centering=$c --set steps="$STEPS" --set max_window=6000 \
    --set eval_every="$STEPS" --set optim.warmup_steps=15 || [ $? -eq 75 ]
done
.venv/bin/python scripts/plot_training.py docs/img/centering.png \
  build/runs/center_none=none build/runs/center_position=position \
  build/runs/center_label_mean=label_mean
