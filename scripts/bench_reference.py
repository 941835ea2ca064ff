#!/usr/bin/env python3
"""Prefill and decode tok/s of the reference engines, for BENCHMARKS.md.

llama.cpp (llama-cpp-python) on a GGUF file and HF transformers (torch) on a HuggingFace
directory, one stream, greedy, the same prompt tokens as `umi bench engine` (passed in as
JSON so every engine runs exactly the same ids). Prints one line per engine.
"""
import argparse
import json
import statistics
import time


def bench_llama_cpp(gguf, prompt, gen, repeats, threads):
    from llama_cpp import Llama
    import numpy as np

    llm = Llama(model_path=gguf, n_ctx=2048, n_threads=threads, n_batch=2048, verbose=False)
    def once():
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        for _ in range(gen - 1):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t2 = time.perf_counter()
        return len(prompt) / (t1 - t0), (gen - 1) / (t2 - t1)
    return run(once, repeats)


def bench_transformers(hf_dir, prompt, gen, repeats, threads, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).eval()
    ids = torch.tensor([prompt])

    @torch.inference_mode()
    def once():
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        t1 = time.perf_counter()
        past = out.past_key_values
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(gen - 1):
            out = model(tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
        return len(prompt) / (t1 - t0), (gen - 1) / (t2 - t1)
    return run(once, repeats)


def run(once, repeats):
    once()  # warm-up
    results = [once() for _ in range(repeats)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prompt-ids", required=True, help="JSON list of prompt token ids")
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gguf", action="append", default=[], help="GGUF file for llama.cpp (repeatable)")
    p.add_argument("--hf", help="HuggingFace directory for transformers")
    p.add_argument("--hf-dtype", action="append", default=[], help="float32 / bfloat16 (repeatable)")
    a = p.parse_args()
    prompt = json.loads(a.prompt_ids)
    for gguf in a.gguf:
        pre, dec = bench_llama_cpp(gguf, prompt, a.gen_tokens, a.repeats, a.threads)
        print(f"llama.cpp     {gguf.split('/')[-1]:<28} prompt {len(prompt):>5}  gen {a.gen_tokens:>4}  "
              f"prefill {pre:>8.1f} tok/s  decode {dec:>7.1f} tok/s", flush=True)
    for dtype in a.hf_dtype:
        pre, dec = bench_transformers(a.hf, prompt, a.gen_tokens, a.repeats, a.threads, dtype)
        print(f"transformers  {dtype:<28} prompt {len(prompt):>5}  gen {a.gen_tokens:>4}  "
              f"prefill {pre:>8.1f} tok/s  decode {dec:>7.1f} tok/s", flush=True)


if __name__ == "__main__":
    main()
