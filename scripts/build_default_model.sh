#!/usr/bin/env bash
# Build the shipped default model from the repository: prepare the training data from
# ../shared/data (A. thaliana only, never chromosome 5), train with configs/train.yaml,
# fit the posterior temperature on the validation chromosome, and copy the best checkpoint
# (weights, config, calibration; no optimizer state) to genoseg/models/default.pt.
#   bash scripts/build_default_model.sh [--resume] [extra `genoseg train` options]
# Resumable: rerun with --resume after an interruption (exit status 75 = checkpointed).
set -euo pipefail
cd "$(dirname "$0")/.."
G=.venv/bin/genoseg
mkdir -p build/data build/runs
for set in athaliana_1pct_train athaliana_1pct_valid athaliana_kog athaliana_pasa; do
  [ -s "build/data/$set.h5" ] || "$G" prepare --config "configs/data/prepare_$set.yaml"
done
"$G" train --config configs/train.yaml "$@"
# the posterior temperature: the one whose exon posteriors on Chr4 (held out from training,
# never the test set Chr5) have the smallest log-loss (docs/training.md, Calibration)
A=../shared/data/athaliana_1pct
.venv/bin/python -m genoseg.train.calibrate build/runs/default/best.pt --config configs/train.yaml \
  --exons "$A/genome.fa" "$A/annotation_with_rnaseq_splice.gff3" Chr4
.venv/bin/python - <<'PY'
import os
from genoseg.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

def relative(v):  # the shipped config names files relative to the repository
    if isinstance(v, dict):
        return {k: relative(x) for k, x in v.items()}
    if isinstance(v, list):
        return [relative(x) for x in v]
    if isinstance(v, str) and os.path.isabs(v):
        return os.path.relpath(os.path.normpath(v), os.getcwd())
    return v

src = "build/runs/default/best.pt"
ck = load_checkpoint(src)
model = model_from_checkpoint(ck, src)
save_checkpoint("genoseg/models/default.pt", model, config=relative(ck["config"]),
                calibration=ck.get("calibration"))
print("wrote genoseg/models/default.pt")
PY
