#!/usr/bin/env python3
"""Regenerates tests/fixtures/tiny-lora-*/ and tests/fixtures/tiny-lora.expected.json: PEFT
LoRA adapters on the tiny random LLaMA of tests/fixtures/tiny-llama-sharded (made by
scripts/make_tiny_llama_fixture.py), saved by `peft` itself, and the greedy tokens
transformers + PEFT generate with each, unmerged (`PeftModel`, as GLPFT's
`inference_lora.py` and `infer_pipeline.py` run their LoRA roles) and merged
(`merge_and_unload`).

- tiny-lora-qv: GLPFT's `train_lora.py` settings (r 8, alpha 16, q_proj and v_proj,
  dropout 0.05, bias none), adapter_model.safetensors.
- tiny-lora-all: every linear layer of the blocks, r 4, alpha 8, rsLoRA (alpha / sqrt r),
  saved as a PyTorch pickle (adapter_model.bin).

PEFT initialises B to zero (a fresh adapter changes nothing), so A and B are drawn at
random here. Needs torch, transformers and peft.

    python3 scripts/make_lora_fixture.py
"""
import json
import pathlib
import shutil

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaForCausalLM

FIX = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"
BASE = FIX / "tiny-llama-sharded"
PROMPT = [1, 349, 278, 261, 361, 349, 377, 308]
NEW_TOKENS = 20

ADAPTERS = {
    "tiny-lora-qv": dict(
        config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                          lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"),
        safe=True, seed=1),
    "tiny-lora-all": dict(
        config=LoraConfig(r=4, lora_alpha=8, use_rslora=True,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                          "gate_proj", "up_proj", "down_proj"],
                          lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"),
        safe=False, seed=2),
}


def greedy(model):
    with torch.no_grad():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
    return out[0, len(PROMPT):].tolist()


def main():
    expected = {"prompt": PROMPT}
    for name, spec in ADAPTERS.items():
        torch.manual_seed(spec["seed"])
        model = get_peft_model(LlamaForCausalLM.from_pretrained(BASE).eval(), spec["config"])
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_" in pname:
                    p.normal_(0, 0.2)
        out = FIX / name
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out, safe_serialization=spec["safe"])
        # The model card PEFT writes is not needed; the base path is made the checkout's.
        (out / "README.md").unlink(missing_ok=True)
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = "tests/fixtures/tiny-llama-sharded"
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        # Fresh loads, as a user's script would: unmerged, then merged.
        unmerged = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(BASE), out).eval()
        merged = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(BASE), out)
        merged = merged.merge_and_unload().eval()
        expected[name] = {"unmerged": greedy(unmerged), "merged": greedy(merged)}
    expected["base"] = greedy(LlamaForCausalLM.from_pretrained(BASE).eval())
    (FIX / "tiny-lora.expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(json.dumps(expected))


if __name__ == "__main__":
    main()
