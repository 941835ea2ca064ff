#!/usr/bin/env bash
# Continuous batching, measured two ways with the bundled model on this machine:
#  1. the engine alone: 8 requests at once, decoded one at a time (--max-batch 1) or
#     together (--max-batch 8), for f32 and Q4_1 weights;
#  2. a planner worker under load: `umi bench role` with 8 calls in flight against one
#     `umi worker --role planner`, --max-batch 1 then 8 (real α-UMi planner prompts, so
#     prefill is part of every call).
# Usage: scripts/bench_batching.sh [DTYPE for the worker, default f32]
set -euo pipefail
cd "$(dirname "$0")/.."
UMI=$PWD/target/release/umi
DTYPE=${1:-f32}
OUT=target/bench-batching
mkdir -p "$OUT"

for dtype in f32 quantized; do
  $UMI bench engine --dtype "$dtype" --prompt-tokens 128 --gen-tokens 64 --streams 1
  for batch in 1 8; do
    $UMI bench engine --dtype "$dtype" --prompt-tokens 128 --gen-tokens 64 --streams 8 --max-batch "$batch"
  done
done

worker=
trap '[ -n "$worker" ] && kill -TERM "$worker" 2>/dev/null || true' EXIT
for batch in 1 8; do
  log="$OUT/planner-batch$batch.log"
  $UMI worker --role planner --listen 127.0.0.1:57161 --dtype "$DTYPE" --max-batch "$batch" 2>"$log" &
  worker=$!
  for _ in $(seq 1 300); do
    grep -q " role on " "$log" && break
    sleep 0.1
  done
  echo "planner worker, $DTYPE, --max-batch $batch:"
  $UMI bench role --role planner --requests 48 --concurrency 8 --max-new-tokens 32 \
    --endpoint http://127.0.0.1:57161
  kill -TERM "$worker"
  wait "$worker" || true
  worker=
done
