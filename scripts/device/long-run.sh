#!/usr/bin/env bash
# Runs ON the lent GPU machine (no Rust there): the long run from the self-contained folder that
# `scripts/long-run --prepare-device` built (.device/long-run: bert with CUDA and the corpus).
#   scripts/device/long-run.sh [MINUTES] [MODEL_CONFIG] [BATCH]     (default 8, bert-base, 256)
# DEVICE=cpu runs the same on a CPU (a dry run of this script anywhere).
# Vocabulary and shards are built there first (16 cores: about a minute), then pretraining in
# bf16 for MINUTES; metrics, curves and curve.md go to $OUT (they come back with the run).
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-8} config=${2:-bert-base} batch=${3:-256} device=${DEVICE:-cuda-bf16}
d=.device/long-run
out=${OUT:-/tmp/long-run}
work=/tmp/long-run-work
mkdir -p "$out" "$work"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt" || true
gunzip -c "$d/corpus.txt.gz" > "$work/corpus.txt"
t0=$(date +%s)
[[ -f $work/vocab/tokenizer.json ]] ||
  "$d/bert" vocab --corpus "$work/corpus.txt" --size 30522 --min-frequency 50 --out "$work/vocab"
[[ -f $work/data/train.bin ]] ||
  "$d/bert" data --corpus "$work/corpus.txt" --tokenizer "$work/vocab/tokenizer.json" --dupe-factor 5 --out "$work/data"
echo "vocabulary and shards in $(( $(date +%s) - t0 )) s"
"$d/bert" pretrain --model-config "$config" --data "$work/data" --out "$out/pretrain" --device "$device" \
  --minutes "$minutes" --batch "$batch" --lr 2e-4 --warmup 0.06 --eval-every 100 --checkpoint-every 100000
rm -rf "$out/pretrain/checkpoint"   # a BERT-base checkpoint is 1.3 GB with its moments: not sent back
python3 scripts/long_run_curve.py "$out/pretrain/metrics.jsonl" "$config" "$device" "$batch" | tee "$out/curve.md"
