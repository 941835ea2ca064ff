#!/usr/bin/env python3
"""HF transformers' side of scripts/bench_7b_cpu.sh: loads a HuggingFace directory in its
torch_dtype and generates greedily, batch 1, printing the prompt's token ids, the
generated ids and the time to the first token (load included) as one JSON line.

    hf_greedy.py MODEL_DIR --prompt TEXT [--new-tokens N] [--threads T]
"""
import argparse
import json
import time


def main():
    start = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--new-tokens", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(a.threads)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{a.model}/tokenizer.json")
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype="auto").eval()
    loaded = time.perf_counter()
    ids = tokenizer(a.prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        first = model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=0)
        first_token = time.perf_counter()
        out = first
        if a.new_tokens > 1:
            out = model.generate(ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                 do_sample=False, pad_token_id=0)
    print(json.dumps({
        "dtype": str(model.dtype),
        "prompt_ids": ids[0].tolist(),
        "greedy_ids": out[0, ids.shape[1]:].tolist(),
        "load_s": round(loaded - start, 2),
        "first_token_s": round(first_token - start, 2),
    }))


if __name__ == "__main__":
    main()
