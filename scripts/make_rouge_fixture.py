#!/usr/bin/env python3
"""Regenerates tests/fixtures/rouge-l.expected.json with the `rouge` package 1.0.1 (the
one α-UMi's evaluator uses): ROUGE-L F for pairs of conclusion texts from
out_of_domain.json, perturbed (words dropped, repeated, punctuation), so umi's port is
checked against the package itself. Needs `pip install rouge==1.0.1`.
"""
import json
import pathlib
import random

from rouge import Rouge

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    data = json.load(open(ROOT / "data/toolbench-static/out_of_domain.json"))
    answers = [t["value"] for r in data for t in r["conversations"] if t["from"] == "conclusion"]
    rng = random.Random(7)
    pairs = []
    for ref in answers[:60]:
        words = ref.split(" ")
        hyp = " ".join(w for w in words if rng.random() > 0.3)
        if rng.random() < 0.3:
            hyp = hyp + ". " + " ".join(rng.sample(words, min(5, len(words))))
        if not hyp.strip(". "):
            hyp = "none"
        pairs.append((hyp, ref))
    pairs.append(("none", answers[0]))
    pairs.append((answers[1], answers[1]))
    rouge = Rouge()
    cases = [{"hyp": h, "ref": r, "f": rouge.get_scores(h, r)[0]["rouge-l"]["f"]} for h, r in pairs]
    avg = rouge.get_scores([h for h, _ in pairs], [r for _, r in pairs], avg=True)["rouge-l"]["f"]
    out = ROOT / "tests/fixtures/rouge-l.expected.json"
    out.write_text(json.dumps({"cases": cases, "avg_f": avg}, indent=1) + "\n")
    print(len(cases), "cases, avg", avg)


if __name__ == "__main__":
    main()
