#!/usr/bin/env bash
# genoseg predict as a plain SLURM job array, then genoseg merge (no Snakemake needed).
#
#   bash workflows/slurm/predict_array.sh [options] GENOME.fa OUTDIR
#
# submits an array of N tasks (task i runs `genoseg predict GENOME --shard i/N`) and a merge
# job that starts when every task succeeded (--dependency=afterok). Results:
#   OUTDIR/genes.gff3 (+ genes.bed, genes.segments.bed, tracks/genes.<track>.bedgraph)
#   OUTDIR/shards/shard-I-of-N.*          one set per task
#   OUTDIR/logs/predict-JOBID_I.log, OUTDIR/logs/merge-JOBID.log
#
# Options (submission):
#   -n, --shards N        number of array tasks (default 10)
#   --max-running M       at most M tasks at once (--array=1-N%M)
#   --model CKPT          model checkpoint or a shipped model's name (default | evidence |
#                         accurate; default: genoseg's shipped default model)
#   --bam BAM             RNA-seq evidence
#   --no-posteriors       Viterbi only (faster)
#   --bed                 also BED12 of transcripts
#   --segments-bed        also the BED of path segments
#   --tracks              also bedGraph posterior tracks
#   --gpus G              G GPUs per array task (--gres=gpu:G; predict's --device auto
#                         then uses CUDA)
#   --predict-args "..."  more genoseg predict options, split on spaces
#   --sbatch-args "..."   more sbatch options for both jobs, split on spaces (e.g.
#                         "--partition=long --account=lab --qos=normal"); SBATCH_*
#                         environment variables (SBATCH_PARTITION, SBATCH_ACCOUNT, ...)
#                         work as well
#   --dry-run             print the sbatch commands instead of submitting
# Environment: GENOSEG = the genoseg executable (default: genoseg on PATH).
#
# Restarts: the GFF3 and every other output is written atomically by genoseg (a temporary
# renamed when complete), and a task records its finished command line in
# shards/shard-I-of-N.done last. A task whose .done matches its command and whose GFF3
# exists is skipped, so resubmitting the same command (or a requeue of a preempted array)
# redoes only unfinished shards; an unfinished shard's leftovers (outputs without .done,
# temporaries of a killed process) are removed before it starts again.
#
# The #SBATCH lines below are defaults; command-line sbatch options override them.
#SBATCH --job-name=genoseg-predict
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail

GENOSEG=${GENOSEG:-genoseg}

die() { echo "predict_array.sh: error: $*" >&2; exit 1; }
log() { echo "predict_array.sh: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p' | sed '/^SBATCH/d'; }

mode=submit
case "${1:-}" in
  --task) mode=task; shift ;;
  --merge) mode=merge; shift ;;
esac

shards=10 max_running="" model="" bam="" posteriors=1 bed=0 segments=0 tracks=0
predict_args="" sbatch_args="" dry_run=0 gpus=0
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n|--shards) shards=${2:?--shards needs a number}; shift ;;
    --max-running) max_running=${2:?--max-running needs a number}; shift ;;
    --model) model=${2:?--model needs a checkpoint path or a shipped model name}; shift ;;
    --bam) bam=${2:?--bam needs a path}; shift ;;
    --no-posteriors) posteriors=0 ;;
    --bed) bed=1 ;;
    --segments-bed) segments=1 ;;
    --tracks) tracks=1 ;;
    --gpus) gpus=${2:?--gpus needs a number}; shift ;;
    --predict-args) predict_args=${2?--predict-args needs a value}; shift ;;
    --sbatch-args) sbatch_args=${2?--sbatch-args needs a value}; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[[ ${#positional[@]} -eq 2 ]] || die "expected GENOME.fa OUTDIR (see --help)"
genome=${positional[0]}
outdir=${positional[1]%/}
[[ $shards =~ ^[1-9][0-9]*$ ]] || die "--shards $shards: expected a positive integer"
[[ $tracks -eq 0 || $posteriors -eq 1 ]] || die "--tracks needs posteriors: drop --no-posteriors"
[[ $gpus =~ ^[0-9]+$ ]] || die "--gpus $gpus: expected a number"
[[ -z $max_running || $max_running =~ ^[1-9][0-9]*$ ]] \
  || die "--max-running $max_running: expected a positive integer"

shard_stem() { echo "$outdir/shards/shard-$1-of-$shards"; }

# The options every task and the merge job get again (the same command line).
forward=(--shards "$shards")
[[ -n $model ]] && forward+=(--model "$model")
[[ -n $bam ]] && forward+=(--bam "$bam")
[[ $posteriors -eq 1 ]] || forward+=(--no-posteriors)
[[ $bed -eq 0 ]] || forward+=(--bed)
[[ $segments -eq 0 ]] || forward+=(--segments-bed)
[[ $tracks -eq 0 ]] || forward+=(--tracks)
[[ -z $predict_args ]] || forward+=(--predict-args "$predict_args")

run_task() {
  local i=${SLURM_ARRAY_TASK_ID:-}
  [[ $i =~ ^[0-9]+$ ]] || die "--task runs inside a SLURM array task (SLURM_ARRAY_TASK_ID unset)"
  (( i >= 1 && i <= shards )) || die "array task $i is outside shards 1..$shards"
  local stem; stem=$(shard_stem "$i")
  local cmd=("$GENOSEG" predict "$genome" -o "$stem.gff3" --shard "$i/$shards")
  [[ -n $model ]] && cmd+=(--model "$model")
  [[ -n $bam ]] && cmd+=(--bam "$bam")
  [[ $posteriors -eq 1 ]] || cmd+=(--no-posteriors)
  [[ $bed -eq 0 ]] || cmd+=(--bed "$stem.bed")
  [[ $segments -eq 0 ]] || cmd+=(--segments-bed "$stem.segments.bed")
  [[ $tracks -eq 0 ]] || cmd+=(--tracks "$stem.tracks/shard")
  [[ -n ${SLURM_CPUS_PER_TASK:-} ]] && cmd+=(--threads "$SLURM_CPUS_PER_TASK")
  if [[ -n $predict_args ]]; then
    local extra; read -r -a extra <<< "$predict_args"
    cmd+=("${extra[@]}")
  fi
  local want; want=$(printf '%q ' "${cmd[@]}")
  if [[ -f $stem.gff3 && -f $stem.done && $(cat "$stem.done") == "$want" ]]; then
    log "shard $i/$shards is already done ($stem.gff3): skipped"
    return 0
  fi
  # Unfinished (never run, killed, preempted, or run with other options): start clean.
  rm -rf "$stem.gff3" "$stem.bed" "$stem.segments.bed" "$stem.tracks" "$stem.done"
  rm -f "$outdir/shards/.shard-$i-of-$shards".*.tmp-*  # temporaries of a killed predict
  mkdir -p "$outdir/shards"
  [[ $tracks -eq 0 ]] || mkdir -p "$stem.tracks"
  log "shard $i/$shards on ${SLURMD_NODENAME:-${HOSTNAME:-this node}}: $want"
  "${cmd[@]}"
  printf '%s' "$want" > "$stem.done.tmp.$$"
  mv -f "$stem.done.tmp.$$" "$stem.done"
  log "shard $i/$shards done"
}

run_merge() {
  local inputs=() i stem
  for (( i = 1; i <= shards; i++ )); do
    stem=$(shard_stem "$i")
    inputs+=("$stem.gff3")  # a missing one is named by genoseg merge
    [[ $bed -eq 0 ]] || inputs+=("$stem.bed")
    [[ $segments -eq 0 ]] || inputs+=("$stem.segments.bed")
    if [[ $tracks -eq 1 ]]; then
      [[ -d $stem.tracks ]] && inputs+=("$stem.tracks"/*.bedgraph)
    fi
  done
  local present=()
  for f in "${inputs[@]}"; do [[ -e $f ]] && present+=("$f"); done
  local cmd=("$GENOSEG" merge "${present[@]}" -o "$outdir/genes.gff3")
  [[ $bed -eq 0 ]] || cmd+=(--bed "$outdir/genes.bed")
  [[ $segments -eq 0 ]] || cmd+=(--segments-bed "$outdir/genes.segments.bed")
  if [[ $tracks -eq 1 ]]; then
    mkdir -p "$outdir/tracks"
    cmd+=(--tracks "$outdir/tracks/genes")
  fi
  log "merge: $(printf '%q ' "${cmd[@]}")"
  "${cmd[@]}"
}

submit() {
  [[ -f $genome ]] || die "$genome: FASTA file not found"
  command -v sbatch > /dev/null || die "sbatch not found (run this on a SLURM login node)"
  mkdir -p "$outdir/logs" "$outdir/shards"
  local script; script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
  local extra=()
  [[ -z $sbatch_args ]] || read -r -a extra <<< "$sbatch_args"
  local array="1-$shards${max_running:+%$max_running}"
  local gres=()
  [[ $gpus -eq 0 ]] || gres=(--gres="gpu:$gpus")
  local predict=(sbatch --parsable --array="$array" --job-name=genoseg-predict
    --output="$outdir/logs/predict-%A_%a.log" "${gres[@]}" "${extra[@]}"
    "$script" --task "${forward[@]}" "$genome" "$outdir")
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${predict[@]}"; echo
    echo "sbatch --parsable --dependency=afterok:<JOBID> --kill-on-invalid-dep=yes ..."
    return 0
  fi
  "$GENOSEG" index "$genome" -o "$outdir/contigs.tsv"  # validate + index once, here
  local jid; jid=$("${predict[@]}")
  jid=${jid%%;*}  # --parsable prints "jobid[;cluster]"
  [[ $jid =~ ^[0-9]+$ ]] || die "sbatch did not return a job id: $jid"
  local merge=(sbatch --parsable --dependency="afterok:$jid" --kill-on-invalid-dep=yes
    --job-name=genoseg-merge --cpus-per-task=1 --mem=4G --time=01:00:00
    --output="$outdir/logs/merge-%j.log" "${extra[@]}"
    "$script" --merge "${forward[@]}" "$genome" "$outdir")
  local mid; mid=$("${merge[@]}")
  mid=${mid%%;*}
  echo "submitted array job $jid (shards 1-$shards) and merge job $mid (afterok:$jid)"
  echo "result: $outdir/genes.gff3; logs: $outdir/logs/"
}

case $mode in
  submit) submit ;;
  task) run_task ;;
  merge) run_merge ;;
esac
