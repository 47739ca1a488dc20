#!/usr/bin/env bash
# Batch captioning on Slurm: one array task per shard, each with its own resumable output.
#   sbatch --array=1-64 tools/deploy/slurm-caption.sh LIST OUTDIR [xc2 caption options...]
# LIST: a file with one image path per line (the same list for every task); task K of N captions items
# K, K+N, K+2N, ... (xc2 caption --shard K/N) into OUTDIR/part-K-of-N.jsonl. A task that is killed or
# requeued continues its part (--resume); failed images are retried by a rerun. When every task is done:
#   tools/deploy/merge-captions.sh OUTDIR/part-*-of-N.jsonl > captions.jsonl
# Environment: XC2 (the binary, default: xc2 on PATH), XC2_MODEL (the model folder); Slurm's
# SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (or SLURM_ARRAY_TASK_MAX with --array=1-N).
#SBATCH --job-name=xc2-caption
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --requeue
#SBATCH --output=xc2-caption-%A_%a.log
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: sbatch --array=1-N $0 LIST OUTDIR [xc2 caption options...]" >&2
  exit 2
fi
list=$1 outdir=$2
shift 2
k=${SLURM_ARRAY_TASK_ID:?not an array task (sbatch --array=1-N)}
n=${SLURM_ARRAY_TASK_COUNT:-${SLURM_ARRAY_TASK_MAX:?SLURM_ARRAY_TASK_COUNT or SLURM_ARRAY_TASK_MAX needed}}
if ((k < 1 || k > n)); then
  echo "task $k is outside 1..$n (use --array=1-N)" >&2
  exit 2
fi
mkdir -p "$outdir"
threads=${SLURM_CPUS_PER_TASK:-0}
# Exit status 1 (some images failed, their error records written) is not a task failure.
rc=0
"${XC2:-xc2}" caption --list "$list" --shard "$k/$n" --out "$outdir/part-$k-of-$n.jsonl" --resume \
  --threads "$threads" --no-progress "$@" || rc=$?
if ((rc > 1)); then exit "$rc"; fi
