#!/usr/bin/env bash
# α-UMi task throughput on this CPU, side by side in one run: `umi eval static` and the
# seed's own pipeline (scripts/bench_seed.py: transformers generate, batch 1, the whole
# prompt every call) on the same records, prompts, sampling and generated tokens.
# Usage: scripts/bench_seed.sh [RECORDS] (default 5: the first 5 records of
# out_of_domain.json, 18 steps, 36 calls).
#
# The real-time side by side: scripts/bench_seed.sh realtime STABLETOOLBENCH_DIR [QUERIES]
# (default 32: the first 32 queries of G1_instruction): `umi run` with its defaults (the
# bundled model, demo budgets, DFSDT, the prefix cache) logging each role call
# (--log-calls), then the same calls the seed's way (each prompt through transformers
# `generate`, batch 1, no cache across calls, exactly the tokens umi generated).
#
# The reference lives in a venv under target/bench-venv (created on first use); the
# weights are umi's f32 conversion of the bundled GGUF, so both sides read the same numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=static
if [[ ${1:-} == realtime ]]; then
  MODE=realtime
  STB=${2:?usage: scripts/bench_seed.sh realtime STABLETOOLBENCH_DIR [QUERIES]}
  QUERIES=${3:-32}
else
  RECORDS=${1:-5}
fi
DATA=data/toolbench-static/out_of_domain.json
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
WORK=target/bench-seed
VENV=target/bench-venv
UMI=./target/release/umi
mkdir -p "$WORK"

cargo build --release --quiet
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, transformers" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch==2.15.0 transformers==5.24.0
fi
[ -f "$WORK/hf/model.safetensors" ] || $UMI model convert --from "$GGUF" --to "$WORK/hf" --dtype f32

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"

if [[ $MODE == realtime ]]; then
  queries=$WORK/realtime-queries.json
  python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))[:int(sys.argv[2])], open(sys.argv[3], "w"))' \
    "$STB/solvable_queries/test_instruction/G1_instruction.json" "$QUERIES" "$queries"
  out=$WORK/realtime-umi
  rm -rf "$out" "$WORK/realtime-calls.jsonl"
  echo "| engine | weights | tasks at once | calls | prompt tokens | computed prefill | generated | seconds |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  t0=$(date +%s.%N)
  summary=$($UMI run --queries "$queries" --out "$out" --log-calls "$WORK/realtime-calls.jsonl" 2>&1 |
    grep -E "queries \(")
  t1=$(date +%s.%N)
  read -r calls prompt cached generated < <(python3 -c '
import json, sys
c = [json.loads(l) for l in open(sys.argv[1])]
print(len(c), sum(x["prompt_tokens"] for x in c), sum(x["cached_tokens"] for x in c), sum(x["generated_tokens"] for x in c))' \
    "$WORK/realtime-calls.jsonl")
  printf "| umi run (defaults) | auto (f32) | --max-batch | %s | %s | %s | %s | %.1f |\n" "$calls" "$prompt" "$((prompt - cached))" "$generated" "$(echo "$t1 - $t0" | bc)"
  # SEED_DTYPES: the seed's dtypes to run (bf16 is the faster where the CPU has
  # AVX512-BF16; without it, float32 alone saves the slow half).
  for dtype in ${SEED_DTYPES:-bfloat16 float32}; do
    "$VENV/bin/python" scripts/bench_seed.py --calls "$WORK/realtime-calls.jsonl" --model "$WORK/hf" \
      --dtype "$dtype" --threads "$(nproc)" --temperature 0.5 --top-p 0 2>/dev/null
  done
  echo "umi: $summary"
  exit 0
fi
echo "| engine | weights | records at once | calls | prompt tokens | computed prefill | generated | seconds |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
umi_row() { # dtype concurrency
  local out="$WORK/umi-$1-$2"
  rm -rf "$out"
  local t0 t1 usage
  t0=$(date +%s.%N)
  usage=$($UMI eval static --data "$DATA" --limit "$RECORDS" --dtype "$1" --max-new-tokens 64 \
    --concurrency "$2" --out "$out" 2>/dev/null | grep "model calls:")
  t1=$(date +%s.%N)
  # "36 model calls: 41429 prompt tokens, 28245 served by the prefix cache, 13184 computed (...); 2304 generated"
  read -r calls prompt computed generated < <(echo "$usage" |
    sed -E 's/^([0-9]+) model calls: ([0-9]+) prompt tokens, [0-9]+ served by the prefix cache, ([0-9]+) computed.*; ([0-9]+) generated.*/\1 \2 \3 \4/')
  printf "| umi | %s | %s | %s | %s | %s | %s | %.1f |\n" "$1" "$2" "$calls" "$prompt" "$computed" "$generated" \
    "$(echo "$t1 - $t0" | bc)"
}
umi_row quantized 1
umi_row f32 4
umi_row bf16 4
umi_row bf16 8
for dtype in bfloat16 float32; do
  "$VENV/bin/python" scripts/bench_seed.py --predictions "$WORK/umi-bf16-4/predictions.json" \
    --model "$WORK/hf" --dtype "$dtype" --threads "$(nproc)" 2>/dev/null
done
