#!/usr/bin/env bash
# LoRA at 1B: umi's merge against transformers + PEFT on a random TinyLlama-shaped
# checkpoint (scripts/make_llama_checkpoint.py 1b: noise, never a model) with a random
# adapter of GLPFT's train_lora.py settings (r 8, alpha 16, q_proj and v_proj), both in
# f32: PEFT's greedy tokens unmerged (PeftModel) and merged (merge_and_unload) are written
# beside the adapter, then services/engine/tests/lora.rs's ignored test loads the base
# with the adapter and generates the same number of tokens.
# Needs torch, transformers and peft in python3 (PYTHON=... to pick another); ~10 GB of
# memory and a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${WORK:-target/lora-1b}
mkdir -p "$WORK"
[ -f "$WORK/base/model.safetensors.index.json" ] ||
  python3 scripts/make_llama_checkpoint.py 1b "$WORK/base" --tokenizer models/llama2-tokenizer.json
"$PYTHON" - "$WORK" <<'PY'
import json, pathlib, sys
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaForCausalLM

work = pathlib.Path(sys.argv[1])
base, adapter = work / "base", work / "adapter"
prompt = [1, 349, 278, 261, 361, 349, 377, 308, 1000, 2000, 3000, 4000]
torch.manual_seed(3)
load = lambda: LlamaForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
model = get_peft_model(load(), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                          lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"))
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.normal_(0, 0.05)
model.save_pretrained(adapter)
def greedy(m):
    with torch.no_grad():
        out = m.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()
expected = {"prompt": prompt,
            "unmerged": greedy(PeftModel.from_pretrained(load(), adapter).eval()),
            "merged": greedy(PeftModel.from_pretrained(load(), adapter).merge_and_unload().eval()),
            "base": greedy(load())}
(work / "expected.json").write_text(json.dumps(expected))
print(json.dumps(expected))
PY
UMI_LORA_1B="$(realpath "$WORK")" cargo test --release -p umi-engine --test lora -- --ignored --nocapture
