#!/usr/bin/env bash
# The CUDA build on a GPU machine, in one run: the engine's greedy text on the GPU beside
# the CPU's for each weight dtype, engine throughput on the GPU, the 50-record static
# eval on the GPU (its metrics beside CI's CPU row), and `umi run` end to end on the GPU.
#
# Build first, on any machine (no GPU needed; 90: H100/H200):
#   scripts/build_cuda.sh     # target/cuda/release/umi and .../hf_checkpoints (CUDA test)
# then on the GPU machine: scripts/bench_cuda.sh [cuda:N]
# (UMI and HF_TEST_BIN default to those two; either may be set to another build.)
set -euo pipefail
cd "$(dirname "$0")/.."
UMI=${UMI:-./target/cuda/release/umi}
if [ -z "${HF_TEST_BIN+x}" ] && [ -x target/cuda/release/hf_checkpoints ]; then
  HF_TEST_BIN=target/cuda/release/hf_checkpoints
fi
DEV=${1:-cuda:0}
WORK=${WORK:-target/bench-cuda}
mkdir -p "$WORK"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "== greedy text, cpu vs $DEV (48 new tokens) =="
prompt='Name three uses of a paperclip.'
for dtype in quantized f32 f16 bf16; do
  cpu=$($UMI generate --chat --prompt "$prompt" --dtype "$dtype" --device cpu --max-new-tokens 48)
  gpu=$($UMI generate --chat --prompt "$prompt" --dtype "$dtype" --device "$DEV" --max-new-tokens 48)
  if [ "$cpu" = "$gpu" ]; then verdict=same; else verdict=DIFFERENT; fi
  echo "$dtype: $verdict"
  echo "  cpu: ${cpu//$'\n'/ }"
  echo "  gpu: ${gpu//$'\n'/ }"
done

echo "== engine throughput on $DEV =="
for dtype in quantized f32 f16 bf16; do
  $UMI bench engine --dtype "$dtype" --device "$DEV" --prompt-tokens 512 --gen-tokens 128
done

echo "== umi run (shipped queries, DFSDT, simulator) on $DEV =="
rm -rf "$WORK/run"
start=$(date +%s)
$UMI run --device "$DEV" --dtype quantized --out "$WORK/run"
echo "wall time: $(($(date +%s) - start)) s"

echo "== umi eval static, first 50 records, on $DEV =="
rm -rf "$WORK/eval"
start=$(date +%s)
$UMI eval static --data data/toolbench-static/out_of_domain.json --limit 50 --dtype quantized \
  --max-new-tokens 64 --device "$DEV" --out "$WORK/eval"
echo "wall time: $(($(date +%s) - start)) s"

# α-UMi at real size (#15): random LLaMA-2-shaped checkpoints made here (pure Python, no
# download; their text is noise, never a model), loaded lean onto the GPU, then prefill
# and batched decode. Skip with SIZES="" (e.g. SIZES=7b for the 7B alone).
SIZES=${SIZES-7b 13b}
for size in $SIZES; do
  ckpt="$WORK/ckpt-$size"
  [ -f "$ckpt/config.json" ] ||
    python3 scripts/make_llama_checkpoint.py "$size" "$ckpt" --tokenizer models/llama2-tokenizer.json
  echo "== $size: load onto $DEV and first token (host peak RSS, wall) =="
  /usr/bin/time -f "host peak RSS %M KiB, wall %e s" \
    $UMI generate --model "$ckpt" --device "$DEV" --prompt "The capital of France is" --max-new-tokens 1
  echo "== $size: prefill at 512 and 3000 tokens, decode at batch 1, 8, 32, 64 on $DEV =="
  for p in 512 3000; do
    $UMI bench engine --model "$ckpt" --device "$DEV" --prompt-tokens "$p" --gen-tokens 16
  done
  for b in 1 8 32 64; do
    $UMI bench engine --model "$ckpt" --device "$DEV" --prompt-tokens 128 --gen-tokens 64 \
      --streams "$b" --max-batch "$b"
  done
done

# The batched-attention test on the GPU, if its binary was built beside umi's
# (cargo test --release --features cuda -p umi-engine --test hf_checkpoints --no-run).
if [ -n "${HF_TEST_BIN:-}" ]; then
  echo "== batched vs alone greedy tokens on $DEV (tiny checkpoint) =="
  UMI_REPO=$PWD "$HF_TEST_BIN" cuda_batched_decode_matches_each_request_alone
fi
