#!/usr/bin/env python3
"""The seed's static-evaluation pipeline, timed, for scripts/bench_seed.sh.

As α-UMi's own code runs it (../shared/alpha-umi.md): HF transformers `generate`, batch 1,
each call's whole prompt prefilled from scratch (no cache across calls), sampling with
the reference's settings. It runs the exact prompts `umi eval static` rendered and wrote
to its predictions.json: each step's planner prompt (`model_input`), then the caller's or
summarizer's (`model_input_for_caller` / `model_input_for_summarizer`) where umi's
planner routed there, so both sides make the same calls on the same text. Every call
generates exactly --new-tokens tokens (min = max), the number umi generated per call
(its run prints the total). Prints one row of bench_seed.sh's table.
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--predictions", required=True, help="umi eval static's predictions.json")
    ap.add_argument("--model", required=True, help="HF directory (config, tokenizer.json, weights)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with open(a.predictions) as f:
        samples = json.load(f)
    prompts = []
    for s in samples:
        prompts.append(s["model_input"])
        for key in ("model_input_for_caller", "model_input_for_summarizer"):
            if s.get(key):
                prompts.append(s[key])
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{a.model}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).eval()

    prompt_tokens = generated = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=a.temperature,
                top_p=a.top_p,
                max_new_tokens=a.new_tokens,
                min_new_tokens=a.new_tokens,
                pad_token_id=tokenizer.eos_token_id or 0,
            )
            prompt_tokens += ids.shape[1]
            generated += out.shape[1] - ids.shape[1]
    seconds = time.perf_counter() - start
    # A row of scripts/bench_seed.sh's table: every prompt token is computed (no reuse).
    print(f"| seed pipeline (transformers generate) | {a.dtype} | 1 | {len(prompts)} "
          f"| {prompt_tokens} | {prompt_tokens} | {generated} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
