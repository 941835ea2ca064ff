#!/usr/bin/env bash
# The full static evaluation (α-UMi's out_of_domain.json: 400 records, 1,547 steps) with
# the bundled SmolLM2 model, split by record across SHARDS processes of one thread each
# (default: one per core), then one scoring run that writes predictions.json and
# metrics.json. Every model call is journaled in $OUT/journal.jsonl, so after an
# interruption the same command resumes where it stopped.
#
#   scripts/eval_static_full.sh             # SHARDS=$(nproc), EVAL_OUT=eval-out/full
#   SHARDS=16 EVAL_OUT=/tmp/full scripts/eval_static_full.sh
set -euo pipefail
cd "$(dirname "$0")/.."

UMI=${UMI:-./target/release/umi}
SHARDS=${SHARDS:-$(nproc)}
OUT=${EVAL_OUT:-eval-out/full}
DATA=${DATA:-data/toolbench-static/out_of_domain.json}
args=(eval static --data "$DATA" --dtype quantized --max-new-tokens 64 --out "$OUT")

mkdir -p "$OUT"
start=$(date +%s)
pids=()
# A shard killed with this script would otherwise run on unattended.
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
trap 'exit 143' TERM INT
for ((k = 0; k < SHARDS; k++)); do
  RAYON_NUM_THREADS=1 "$UMI" "${args[@]}" --shard "$k/$SHARDS" >"$OUT/shard-$k.log" 2>&1 &
  pids+=($!)
done
for k in "${!pids[@]}"; do
  wait "${pids[$k]}" || { echo "shard $k/$SHARDS failed, see $OUT/shard-$k.log" >&2; exit 1; }
done
pids=()
"$UMI" "${args[@]}"
echo "wall time: $(($(date +%s) - start)) s with $SHARDS shards on $(nproc) cores"
