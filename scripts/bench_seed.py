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

With --calls (the real-time side-by-side), the calls are those `umi run --log-calls` made
while solving queries: each call's rendered prompt, cut to its last --max-input-tokens
tokens as umi and the reference cut it, and exactly the tokens umi generated for it.
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="umi eval static's predictions.json")
    src.add_argument("--calls", help="umi run --log-calls's JSON lines (the real-time calls)")
    ap.add_argument("--max-input-tokens", type=int, default=3576,
                    help="with --calls: the real-time prompt budget (the reference's 3576)")
    ap.add_argument("--model", required=True, help="HF directory (config, tokenizer.json, weights)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.9, help="0 turns top-p off")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    # (prompt, tokens to generate) per call, in order.
    calls = []
    if a.predictions:
        with open(a.predictions) as f:
            samples = json.load(f)
        for s in samples:
            calls.append((s["model_input"], a.new_tokens))
            for key in ("model_input_for_caller", "model_input_for_summarizer"):
                if s.get(key):
                    calls.append((s[key], a.new_tokens))
    else:
        with open(a.calls) as f:
            for line in f:
                c = json.loads(line)
                # A call that stopped at once still ran one step; generate() needs one.
                calls.append((c["prompt"], max(1, c["generated_tokens"])))
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{a.model}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).eval()

    prompt_tokens = generated = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt, new_tokens in calls:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            if a.calls:
                ids = ids[:, -a.max_input_tokens:]
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=a.temperature,
                top_p=a.top_p if a.top_p > 0 else None,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tokenizer.eos_token_id or 0,
            )
            prompt_tokens += ids.shape[1]
            generated += out.shape[1] - ids.shape[1]
    seconds = time.perf_counter() - start
    # A row of scripts/bench_seed.sh's table: every prompt token is computed (no reuse).
    print(f"| seed pipeline (transformers generate) | {a.dtype} | 1 | {len(calls)} "
          f"| {prompt_tokens} | {prompt_tokens} | {generated} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
