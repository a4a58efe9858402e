#!/usr/bin/env bash
# Build a shipped model from the repository: prepare the training data from ../shared/data
# (A. thaliana only, never chromosome 5), train, fit the posterior temperature on the
# validation chromosome Chr4, and copy the best checkpoint (weights, config, calibration; no
# optimizer state) into genoseg/models/.
#   bash scripts/build_default_model.sh [--resume] [extra `genoseg train` options]
#       -> genoseg/models/default.pt  (configs/train.yaml, sequence only, RC-equivariant:
#          one encoder pass reads both strands)
#   GENOSEG_MODEL=evidence bash scripts/build_default_model.sh [...]
#       -> genoseg/models/evidence.pt (configs/train_evidence.yaml, reads the RNA-seq BAM;
#          what `genoseg predict --bam` uses without --model; docs/accuracy.md)
#   GENOSEG_MODEL=accurate bash scripts/build_default_model.sh [...]
#       -> genoseg/models/accurate.pt (`--model accurate`: an ensemble of two sequence-only
#          runs, both strands averaged: configs/train.yaml trained on both strands' mean
#          with ema 0.999 (sa_ema), and the recipe of the default model before 2026-12-03
#          evening, one strand at a time without ema (onestrand); docs/accuracy.md)
# Resumable: rerun with --resume after an interruption (exit status 75 = checkpointed); the
# accurate build resumes each member run that has a last.pt by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
G=.venv/bin/genoseg
NAME=${GENOSEG_MODEL:-default}
A=../shared/data/athaliana_1pct
case "$NAME" in
  default) CONFIG=configs/train.yaml; BAM=(); STRANDS=() ;;  # reads both strands itself
  evidence) CONFIG=configs/train_evidence.yaml; BAM=(--bam "$A/synthetic_junction_reads.bam")
    STRANDS=(--strand-average) ;;
  accurate) CONFIG=configs/train.yaml; BAM=(); STRANDS=(--strand-average) ;;
  *) echo "GENOSEG_MODEL must be default, evidence or accurate, got $NAME" >&2; exit 2 ;;
esac
SETS=(athaliana_1pct_train athaliana_1pct_valid athaliana_kog athaliana_pasa)
mkdir -p build/data build/runs
for set in "${SETS[@]}"; do
  [ -s "build/data/$set.h5" ] || "$G" prepare --config "configs/data/prepare_$set.yaml"
done
member() {  # OUT_DIR CONFIG [--set ...] [options]: train one member, resuming a started run
  local out=$1 config=$2; shift 2
  local resume=(); [ -s "$out/last.pt" ] && resume=(--resume)
  "$G" train --config "$config" -o "$out" "${resume[@]}" "$@"
}
if [ "$NAME" = accurate ]; then
  plain=(--set model.rc_equivariant=false)  # the members predate the tied default
  member build/runs/sa_ema configs/train.yaml "${plain[@]}" --set model.strand_average=true \
    "$@"
  member build/runs/onestrand configs/train.yaml "${plain[@]}" --set ema=0 "$@"
  mkdir -p build/runs/accurate
  .venv/bin/python -m genoseg.model.ensemble build/runs/accurate/best.pt \
    build/runs/sa_ema/best.pt build/runs/onestrand/best.pt
else
  "$G" train --config "$CONFIG" "$@"
fi
# the posterior temperature: the one whose exon posteriors on Chr4 (held out from training,
# never the test set Chr5) have the smallest log-loss (docs/training.md, Calibration); the
# shipped models read both strands (the default by its tied weights, the others by
# averaging both strands' outputs; chosen on Chr4: docs/accuracy.md)
.venv/bin/python -m genoseg.train.calibrate "build/runs/$NAME/best.pt" --config "$CONFIG" \
  "${BAM[@]}" "${STRANDS[@]}" --exons "$A/genome.fa" "$A/annotation_with_rnaseq_splice.gff3" Chr4
NAME=$NAME .venv/bin/python - <<'PY'
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

name = os.environ["NAME"]
src = f"build/runs/{name}/best.pt"
ck = load_checkpoint(src)
model = model_from_checkpoint(ck, src)
save_checkpoint(f"genoseg/models/{name}.pt", model, config=relative(ck["config"]),
                calibration=ck.get("calibration"))
print(f"wrote genoseg/models/{name}.pt")
PY
