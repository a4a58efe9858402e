#!/usr/bin/env bash
# The generalisation runs of docs/accuracy.md ("Other species"): the default recipe
# (configs/train.yaml's model and optimiser) trained on another shared species with a part
# held out, its posterior temperature fitted on the validation part, then scored on the test
# part beside AUGUSTUS 3.5.0's bundled model for the species (benchmarks/bench_accuracy.py).
#   bash scripts/train_species.sh celegans|dmelanogaster|spombe [--resume] [--set key=value]
# Splits (configs/data/prepare_<species>_*.yaml): C. elegans celegans_1pct I-III + X and the
# small-gene loci outside V (valid IV, test V); D. melanogaster dmelanogaster_1pct 3L, 4, Y
# (valid X, test 2L; 2R and 3R have no annotated coding genes); S. pombe the KOG loci of
# chromosomes I and II (valid the SPAP/SPBP loci, test chromosome III).
# Two runs side by side on one machine: prefix each with NUMBA_NUM_THREADS=1 (docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
G=.venv/bin/genoseg
SP=${1:?usage: scripts/train_species.sh celegans|dmelanogaster|spombe [train options]}
shift
S=../shared/data
case "$SP" in
  celegans) SETS="celegans_1pct_train celegans_1pct_valid celegans_smallgenes"
    D=$S/celegans_1pct; REF=annotation_with_rnaseq.gff3; VALID=IV ;;
  dmelanogaster) SETS="dmelanogaster_1pct_train dmelanogaster_1pct_valid"
    D=$S/dmelanogaster_1pct; REF=annotation_with_rnaseq_splice.gff3; VALID=X ;;
  spombe) SETS="spombe_kog_train spombe_kog_valid"
    D=$S/spombe_kog; REF=annotation.gff3
    VALID=$(grep -o '^>KOG[^ ]*_SP[AB]P[^ ]*' "$D/genome.fa" | tr -d '>' | paste -sd,) ;;
  *) echo "species must be celegans, dmelanogaster or spombe, got $SP" >&2; exit 2 ;;
esac
mkdir -p build/data build/runs
for set in $SETS; do
  [ -s "build/data/$set.h5" ] || "$G" prepare --config "configs/data/prepare_$set.yaml"
done
"$G" train --config "configs/train_$SP.yaml" "$@"
.venv/bin/python -m genoseg.train.calibrate "build/runs/$SP/best.pt" \
  --config "configs/train_$SP.yaml" --exons "$D/genome.fa" "$D/$REF" "$VALID"
.venv/bin/python benchmarks/bench_accuracy.py --species "$SP" --model "build/runs/$SP/best.pt" \
  --out "build/accuracy/$SP"
