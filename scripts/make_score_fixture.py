#!/usr/bin/env python3
"""Regenerates tests/fixtures/static-score/: a predictions.json of mixed outcomes and the
metrics α-UMi's own evaluator gives for it.

The predictions are built from the first records of data/toolbench-static/out_of_domain.json
as the seed's infer_pipeline.py builds its samples (reference = the gold planner turn and
the turn after it), with predictions that are right, or wrong in one way each: another
plan, another tool, a tool that is not in the record (hallucinated), other argument values,
missing or extra keys, arguments that are not JSON, another conclusion (not an empty one: the rouge package raises on it). Easy
(`{}`) and hard call steps both get wrong actions. Then the reference script itself,
X-PLUG/Multi-LLM-Agent's GLPFT/inference_utils/toolbench/evaluate-multi_agent.py, scores
the file; its metrics.json and hallu_cases.json are kept as the expectation of
`umi eval score` (tests/static_eval.rs).

    python3 scripts/make_score_fixture.py PATH/TO/evaluate-multi_agent.py

Needs `pip install rouge==1.0.1` in the Python that runs it.
"""
import json
import pathlib
import random
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/static-score"
MARKERS = ("Next: caller.", "Next: conclusion.", "Next: give up.")


def samples(records):
    """(tools, instruction, reference, turn, next turn) per marked planner step."""
    for r in records:
        turns = r["conversations"]
        for i, t in enumerate(turns):
            if t["from"] != "assistant" or not any(m in t["value"] for m in MARKERS):
                continue
            nxt = turns[i + 1] if i + 1 < len(turns) else None
            if "Next: caller" in t["value"] or "Next: conclusion." in t["value"]:
                reference = "assistant: " + t["value"] + "</s>" + nxt["from"] + ": " + nxt["value"] + "</s>"
            else:
                reference = t["value"]
            yield r, reference, t, nxt


def predict(kind, record, turn, nxt, rng):
    """A prediction in the pipeline's shape (`asssitant: ...</s>caller: ...`)."""
    plan = turn["value"]
    names = [t["Name"] for t in record["tools"]]
    if kind == "right":
        if nxt is not None and nxt["from"] in ("caller", "conclusion") and "give up" not in plan:
            return "asssitant: " + plan + "</s>" + nxt["from"] + ": " + nxt["value"]
        return plan
    if kind == "give_up":
        return "I cannot do this. Next: give up."
    if kind == "conclude":
        return "asssitant: Done. Next: conclusion.</s>conclusion: " + rng.choice(["It is done.", "Here are the results you asked for."])
    if kind == "call_other":
        other = [n for n in names if nxt is None or n not in nxt["value"]] or names
        return "asssitant: x Next: caller.</s>caller: Action: " + rng.choice(other) + "\nAction Input: {}"
    if kind == "hallucinate":
        return "asssitant: x Next: caller.</s>caller: Action: made_up_tool\nAction Input: {\"q\": 1}"
    if nxt is None or nxt["from"] != "caller":
        return plan
    action, _, args = nxt["value"].partition("\nAction Input:")
    args = args.strip()
    try:
        parsed = json.loads(args)
    except ValueError:
        parsed = None
    head = "asssitant: " + plan + "</s>caller: " + action + "\nAction Input: "
    if kind == "args_changed" and isinstance(parsed, dict) and parsed:
        k = rng.choice(list(parsed))
        changed = dict(parsed)
        changed[k] = "something else"
        if rng.random() < 0.5:
            changed["extra"] = 1
        return head + json.dumps(changed, indent=2)
    if kind == "args_dropped" and isinstance(parsed, dict) and len(parsed) > 1:
        return head + json.dumps(dict(list(parsed.items())[:1]))
    if kind == "args_broken":
        return head + "{not json"
    if kind == "args_empty":
        return head + "{}"
    return "asssitant: " + plan + "</s>caller: " + nxt["value"]


KINDS = ["right", "right", "give_up", "conclude", "call_other", "hallucinate",
         "args_changed", "args_dropped", "args_broken", "args_empty"]


def main():
    evaluator = pathlib.Path(sys.argv[1]).resolve()
    records = json.load(open(ROOT / "data/toolbench-static/out_of_domain.json"))[:24]
    rng = random.Random(25)
    out = []
    for record, reference, turn, nxt in samples(records):
        kind = rng.choice(KINDS)
        out.append({
            "tools": record["tools"],
            "instruction": record["instruction"],
            "reference": reference,
            "predictions": predict(kind, record, turn, nxt, rng),
        })
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "predictions.json").write_text(json.dumps(out, indent=4))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(evaluator), "--input_path", str(OUT / "predictions.json"),
                        "--output_path", f"{tmp}/metrics.json"], check=True, stdout=subprocess.DEVNULL)
        metrics = json.load(open(f"{tmp}/metrics.json"))
        hallu = json.load(open(f"{tmp}/hallu_cases.json"))
    (OUT / "metrics.expected.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (OUT / "hallu_cases.expected.json").write_text(json.dumps([h["predictions"] for h in hallu], indent=1) + "\n")
    print(len(out), "samples:", metrics)


if __name__ == "__main__":
    main()
