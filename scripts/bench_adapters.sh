#!/usr/bin/env bash
# α-UMi's three roles as LoRA adapters on one base model: memory and speed of
# `umi eval static` with a random PEFT adapter per role (r 8, alpha 16, q_proj and v_proj:
# GLPFT's train_lora.py settings; the adapters are noise, the cost is what is measured),
# merged into three copies of the weights (--adapter-mode merged) against one copy serving
# the three unmerged (--adapter-mode unmerged), and the base model alone for reference.
# Base: the bundled SmolLM2-135M converted to an f32 HuggingFace directory.
# Usage: scripts/bench_adapters.sh [RECORDS] (default 4). Needs torch and peft in
# $PYTHON (default python3) to write the adapters.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-4}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-target/bench-adapters}
UMI=./target/release/umi
DATA=data/toolbench-static/out_of_domain.json
mkdir -p "$WORK"
cargo build --release --quiet
[ -f "$WORK/base/model.safetensors" ] ||
  $UMI model convert --from models/SmolLM2-135M-Instruct.Q4_1.gguf --to "$WORK/base" --dtype f32
"$PYTHON" - "$WORK" <<'PY'
import pathlib, sys
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM
work = pathlib.Path(sys.argv[1])
for i, role in enumerate(["planner", "caller", "summarizer"]):
    out = work / f"{role}-lora"
    if (out / "adapter_config.json").exists():
        continue
    torch.manual_seed(10 + i)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(work / "base"),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                      lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.01)
    model.save_pretrained(out)
PY

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "| roles | weights in memory | peak RSS | calls | generated | seconds | generated tok/s |"
echo "|---|---|---:|---:|---:|---:|---:|"
row() { # label copies flags...
  local label=$1 copies=$2; shift 2
  local out="$WORK/out-${label// /-}"
  rm -rf "$out"
  /usr/bin/time -f '%e %M' -o "$WORK/time" $UMI eval static --data "$DATA" --limit "$RECORDS" \
    --model "$WORK/base" --max-new-tokens 32 --concurrency 4 --out "$out" "$@" > "$WORK/stdout" 2>/dev/null
  read -r secs rss < "$WORK/time"
  read -r calls generated < <(grep "model calls:" "$WORK/stdout" |
    sed -E 's/^([0-9]+) model calls:.*; ([0-9]+) generated.*/\1 \2/')
  printf '| %s | %s | %.0f MiB | %s | %s | %.1f | %.1f |\n' "$label" "$copies" "$(echo "$rss / 1024" | bc -l)" \
    "$calls" "$generated" "$secs" "$(echo "$generated / $secs" | bc -l)"
}
adapters=(--planner-adapter "$WORK/planner-lora" --caller-adapter "$WORK/caller-lora" --summarizer-adapter "$WORK/summarizer-lora")
row "base model, no adapters" "1 copy"
row "3 adapters, merged" "3 copies" "${adapters[@]}"
row "3 adapters, unmerged" "1 copy + 3 adapters" "${adapters[@]}" --adapter-mode unmerged
