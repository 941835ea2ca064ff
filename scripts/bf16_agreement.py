#!/usr/bin/env python3
"""How often bf16 implementations pick the same greedy token, on the same prefixes.

On random-weight checkpoints (scripts/make_llama_checkpoint.py) many greedy steps are
near-ties, and any two bf16 implementations part ways at some of them: transformers'
own two attention backends (sdpa, eager) do. This script measures where umi stands in
that noise. For each prompt, umi generates greedily (`umi generate --show-token-ids`);
transformers then scores umi's own sequence (teacher forcing) in bf16 with sdpa, in bf16
with eager attention and, if it fits in memory, in f32 (the most exact of the four). At
every step it compares each implementation's pick with the others'. With --generate it
also runs transformers' own greedy `generate` and compares the whole sequences.

    scripts/bf16_agreement.py CKPT [--tokens N] [--f32] [--prompts FILE] [--steps] [--generate]

Needs a release build and transformers (target/bench-venv; scripts/bench_seed.sh makes it).
Prints a Markdown table and a JSON line with the counts.
"""
import argparse
import json
import re
import subprocess

PROMPTS = [
    "The capital of France is",
    "Hello",
    "Once upon a time, in a land far away, there lived",
    "def fibonacci(n):",
    "Question: what is 17 times 23? Answer:",
    "The weather today is",
    "I want to book a flight from Paris to Tokyo",
    "Translate to German: good morning",
]


def umi_greedy(umi, ckpt, prompt, tokens):
    run = subprocess.run(
        [umi, "generate", "--model", ckpt, "--prompt", prompt, "--max-new-tokens",
         str(tokens), "--temperature", "0", "--show-token-ids"],
        capture_output=True, text=True, check=True)
    return json.loads(re.search(r"token ids: (\[.*\])", run.stderr).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--f32", action="store_true", help="also score in f32 (4x the bf16 memory)")
    ap.add_argument("--prompts", help="a file with one prompt a line (default: 8 built in)")
    ap.add_argument("--steps", action="store_true", help="also print every step's scores")
    ap.add_argument("--generate", action="store_true",
                    help="also run transformers' own greedy generate and compare sequences")
    ap.add_argument("--umi", default="./target/release/umi")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    prompts = PROMPTS
    if a.prompts:
        prompts = [p for p in open(a.prompts).read().splitlines() if p.strip()]

    paths = [umi_greedy(a.umi, a.ckpt, p, a.tokens) for p in prompts]

    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(a.threads)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{a.ckpt}/tokenizer.json")
    variants = [("bf16 sdpa", torch.bfloat16, "sdpa"), ("bf16 eager", torch.bfloat16, "eager")]
    if a.f32:
        variants.append(("f32", torch.float32, "sdpa"))
    # picks[name][prompt] = that implementation's argmax at each step of umi's sequence.
    picks = {"umi bf16": paths}
    # scores[name][prompt][step] = (its margin over its runner-up, umi's pick below its best)
    scores = {}
    # transformers' own greedy `generate` (sdpa, key/value cache), with --generate.
    generated = []
    for name, dtype, attn in variants:
        model = AutoModelForCausalLM.from_pretrained(
            a.ckpt, dtype=dtype, attn_implementation=attn).eval()
        picks[name] = []
        for prompt, path in zip(prompts, paths):
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            with torch.inference_mode():
                full = torch.cat([ids, torch.tensor([path])], dim=1)
                logits = model(full).logits[0, ids.shape[1] - 1:-1].float()
            top = torch.topk(logits, 2)
            picks[name].append(top.indices[:, 0].tolist())
            if a.generate and name == "bf16 sdpa":
                with torch.inference_mode():
                    gen = model.generate(ids, max_new_tokens=len(path),
                                         min_new_tokens=len(path), do_sample=False,
                                         pad_token_id=0)
                generated.append(gen[0, ids.shape[1]:].tolist())
            chosen = logits.gather(1, torch.tensor(path).unsqueeze(1))[:, 0]
            scores.setdefault(name, []).append([
                (float(m), float(d)) for m, d in
                zip(top.values[:, 0] - top.values[:, 1], top.values[:, 0] - chosen)])
        del model

    names = list(picks)
    steps = sum(len(p) for p in paths)

    def agree(x, y):
        return sum(a == b for px, py in zip(picks[x], picks[y]) for a, b in zip(px, py))

    print(f"checkpoint {a.ckpt}, {len(prompts)} prompts x {a.tokens} greedy tokens = {steps} "
          "steps, all on umi's own sequences")
    print()
    print("| same pick as | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    table = {}
    for x in names:
        row = []
        for y in names:
            n = agree(x, y)
            table[f"{x} / {y}"] = n
            row.append(f"{n}/{steps}")
        print(f"| {x} | " + " | ".join(row) + " |")
    if a.steps:
        heads = [n for n, _, _ in variants]
        print()
        print("| prompt | step | umi | " + " | ".join(
            f"{n}: best, margin, umi's pick below it" for n in heads) + " |")
        print("|---:|---:|---:|" + "---|" * len(heads))
        for p, path in enumerate(paths):
            for step, pick in enumerate(path):
                cells = [f"{picks[n][p][step]}, {round(scores[n][p][step][0], 4)}, "
                         f"{round(scores[n][p][step][1], 4)}" for n in heads]
                print(f"| {p + 1} | {step + 1} | {pick} | " + " | ".join(cells) + " |")
    if generated:
        print()
        for p, (path, gen) in enumerate(zip(paths, generated)):
            same = next((i for i, (x, y) in enumerate(zip(path, gen)) if x != y), len(path))
            print(f"prompt {p + 1}: umi generate {path}")
            print(f"prompt {p + 1}: transformers generate {gen}")
            print(f"prompt {p + 1}: equal for the first {same} of {len(path)} tokens")
    last = variants[-1][0]
    split = [
        (m, u == r)
        for ms, us, rs in zip(scores[last], picks["umi bf16"], picks[last])
        for (m, _), u, r in zip(ms, us, rs)
    ]
    wide = [same for m, same in split if m >= 1.0]
    print()
    print(f"steps where {last}'s margin over its runner-up is at least 1 logit: {len(wide)}, "
          f"umi picks its best at {sum(wide)} of them")
    equal = sum(p == g for p, g in zip(paths, generated))
    print(json.dumps({"steps": steps, "agree": table, "generate_equal": equal,
                      "min_margin": round(min(m for m, _ in split), 4) if split else None}))


if __name__ == "__main__":
    main()
