#!/usr/bin/env bash
# genoseg train on one or many GPU nodes under SLURM with torchrun; resumes after requeue.
#
#   sbatch --nodes=2 --gpus-per-node=4 workflows/slurm/train_torchrun.sh \
#       configs/train.yaml runs/big [genoseg train options, e.g. --set steps=20000]
#
# One torchrun agent per node (srun, one task per node) starts one training process per GPU
# of its node; the agents meet at a c10d rendezvous on the job's first node (port
# 29500 + job id mod 1000, or $GENOSEG_RDZV_PORT), id = the job id. genoseg train then runs
# DistributedDataParallel on nccl (gloo on CPU); rank 0 writes OUT_DIR/last.pt every
# `checkpoint_every` steps.
#
# Requeue: 5 minutes before the time limit SLURM signals this script (--signal=B:USR1@300);
# it sends SIGTERM to the training processes (srun forwards it to every node, torchrun to
# its workers), genoseg train finishes its step, writes last.pt and exits with status 75,
# and this script requeues the job (scontrol requeue). A preempted job (SIGTERM, then
# requeued by SLURM itself) does the same within the cluster's grace time. Whenever
# OUT_DIR/last.pt exists the job starts with --resume, which continues bit for bit where
# the checkpoint left off. A plain exit 75 of genoseg train (no torchrun) also requeues.
#
# Environment: GENOSEG_NPROC_PER_NODE (default: the GPUs SLURM gave the node, else 1),
# GENOSEG_RDZV_PORT, TORCHRUN (default: torchrun, from the environment genoseg is in).
#
# The #SBATCH lines are defaults; sbatch command-line options override them.
#SBATCH --job-name=genoseg-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=genoseg-train-%j.log
set -euo pipefail

die() { echo "train_torchrun.sh: error: $*" >&2; exit 1; }
log() { echo "train_torchrun.sh: $*" >&2; }

[[ $# -ge 2 ]] || die "usage: sbatch train_torchrun.sh CONFIG.yaml OUT_DIR [genoseg train options]"
config=$1 out_dir=$2
shift 2
[[ -f $config ]] || die "$config: config not found"
[[ -n ${SLURM_JOB_ID:-} ]] || die "run this with sbatch (SLURM_JOB_ID is not set)"
mkdir -p "$out_dir"

nnodes=${SLURM_NNODES:-1}
nproc=${GENOSEG_NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
[[ $nproc =~ ^[1-9][0-9]*$ ]] || die "processes per node '$nproc' is not a positive number"
mapfile -t nodes < <(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(hostname)}")
[[ ${#nodes[@]} -ge 1 ]] || die "cannot list the job's nodes (scontrol show hostnames)"
head_node=${nodes[0]}
port=${GENOSEG_RDZV_PORT:-$((29500 + SLURM_JOB_ID % 1000))}

resume=()
if [[ -f $out_dir/last.pt ]]; then
  resume=(--resume)
  log "resuming from $out_dir/last.pt (restart ${SLURM_RESTART_COUNT:-0})"
fi

cmd=(srun --ntasks-per-node=1 --kill-on-bad-exit=1
  "${TORCHRUN:-torchrun}" --nnodes="$nnodes" --nproc-per-node="$nproc"
  --rdzv-backend=c10d --rdzv-endpoint="$head_node:$port" --rdzv-id="$SLURM_JOB_ID"
  -m genoseg.cli train --config "$config" --out-dir "$out_dir" "${resume[@]}" "$@")
log "$nnodes node(s) x $nproc process(es), rendezvous $head_node:$port"
log "$(printf '%q ' "${cmd[@]}")"

stop=""
on_signal() {
  stop=$1
  log "got SIG$1: asking training to checkpoint and stop"
  kill -TERM "$pid" 2> /dev/null || true
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

"${cmd[@]}" &
pid=$!
set +e
wait "$pid"
while kill -0 "$pid" 2> /dev/null; do  # wait returns early when a trapped signal arrives
  wait "$pid"
done
wait "$pid"  # the finished job's own exit status (bash keeps it)
rc=$?
set -e

if [[ $rc -eq 75 || -n $stop ]]; then
  if [[ -f $out_dir/last.pt ]]; then
    log "training stopped (status $rc); requeueing job $SLURM_JOB_ID to resume from last.pt"
    scontrol requeue "$SLURM_JOB_ID" || log "scontrol requeue failed (already requeued?)"
    exit 0
  fi
  log "training stopped (status $rc) before any checkpoint was written; not requeued"
  exit 1
fi
log "training finished with status $rc"
exit "$rc"
