#!/usr/bin/env bash
# Engine throughput: umi at each weight dtype, beside llama.cpp and HF transformers on the
# same prompt ids, in one run. Usage: scripts/bench_engine.sh [PROMPT_TOKENS] [GEN_TOKENS]
# The reference engines live in a venv under target/bench-venv (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-128}
GEN=${2:-64}
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
WORK=target/bench
VENV=target/bench-venv
UMI=./target/release/umi
mkdir -p "$WORK"

cargo build --release --quiet
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet llama-cpp-python==0.3.16 torch==2.15.0 transformers==5.24.0
fi
# The same weights in the formats the other engines read: an HF directory (f32) and an
# f32 GGUF, both written by umi's converter.
[ -f "$WORK/hf/model.safetensors" ] || $UMI model convert --from "$GGUF" --to "$WORK/hf" --dtype f32
[ -f "$WORK/f32.gguf" ] || $UMI model convert --from "$WORK/hf" --to "$WORK/f32.gguf" --dtype f32

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for dtype in quantized q8_0 f32 f16 bf16; do
  $UMI bench engine --model "$GGUF" --dtype "$dtype" --prompt-tokens "$PROMPT" --gen-tokens "$GEN"
done
ids=$($UMI bench engine --model "$GGUF" --prompt-tokens "$PROMPT" --print-prompt-ids)
"$VENV/bin/python" scripts/bench_reference.py --prompt-ids "$ids" --gen-tokens "$GEN" \
  --gguf "$GGUF" --gguf "$WORK/f32.gguf" --hf "$WORK/hf" --hf-dtype float32 --hf-dtype bfloat16
