#!/usr/bin/env python3
"""Regenerates tests/fixtures/static-backbone/: the single-LLM baseline's static samples
and scores, written by the reference's own scripts (X-PLUG/Multi-LLM-Agent's GLPFT).

1. `process_data/toolbench/prepro_backbone.py --prompt_type toolbench_backbone` over the
   first RECORDS records of data/toolbench-static/out_of_domain.json -> samples.json
   (each sample's `input`, `target` and `history`: what `umi eval static --agent backbone`
   must render byte for byte, the give-up's stale `input` included).
2. A predictions.json as `inference.py` writes one for those samples (keys `tools`,
   `history`, `model_input`, `reference`, `predictions`), with predictions right or wrong
   in one way each: another plan, another tool, a tool not in the record, other argument
   values, arguments that are not JSON, another conclusion.
3. `inference_utils/toolbench/evaluate-backbone.py` scores it -> metrics.json and
   hallu_cases.json. As published, the script reads `args.agent_mode`, which its parser
   never defines, and crashes; it is run with that one argument added (`--agent_mode
   all`, the only mode it scores), nothing else changed.

    python3 scripts/make_backbone_fixture.py PATH/TO/Multi-LLM-Agent/GLPFT

Needs `pip install rouge==1.0.1` in the Python that runs it.
"""
import json
import pathlib
import random
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/static-backbone"
RECORDS = 6


def predict(kind, sample, rng):
    target = sample["target"]
    names = [t["Name"] for t in sample["tools"]]
    if kind == "right":
        return target
    if kind == "give_up":
        return "I cannot do this.\nconclusion: give up."
    if kind == "conclude":
        return "Done.\nconclusion: " + rng.choice(["It is done.", "Here are the results you asked for."])
    if kind == "call_other":
        return "x\nAction: " + rng.choice(names) + "\nAction Input: {}"
    if kind == "hallucinate":
        return "x\nAction: not_a_tool_at_all\nAction Input: {\"q\": 1}"
    if kind == "bad_json":
        if "Action:" in target:
            return target.rsplit("Action Input:", 1)[0] + "Action Input: {not json"
        return "x\nAction: " + names[0] + "\nAction Input: {not json"
    if kind == "other_values":
        if "Action Input:" in target:
            head, args = target.rsplit("Action Input:", 1)
            try:
                parsed = json.loads(args)
            except ValueError:
                return target
            if isinstance(parsed, dict) and parsed:
                key = next(iter(parsed))
                parsed[key] = "other"
                parsed["extra"] = 1
                return head + "Action Input: " + json.dumps(parsed)
        return target
    raise ValueError(kind)


def main():
    glpft = pathlib.Path(sys.argv[1]).resolve()
    records = json.loads((ROOT / "data/toolbench-static/out_of_domain.json").read_text())[:RECORDS]
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "records.json").write_text(json.dumps(records))
        subprocess.run(
            [sys.executable, "process_data/toolbench/prepro_backbone.py",
             "--input_path", str(tmp / "records.json"),
             "--output_path", str(tmp / "out/samples.json"),
             "--prompt_type", "toolbench_backbone"],
            cwd=glpft, env={"PYTHONPATH": str(glpft)}, check=True,
        )
        samples = json.loads((tmp / "out/samples.json").read_text())
        (OUT / "samples.json").write_text(json.dumps(samples, indent=2) + "\n")

        rng = random.Random(7)
        kinds = ["right", "give_up", "conclude", "call_other", "hallucinate", "bad_json", "other_values"]
        predictions = []
        for i, s in enumerate(samples):
            kind = kinds[i % len(kinds)] if i % 3 else "right"
            predictions.append({
                "tools": s["tools"],
                "history": s["history"],
                "model_input": s["input"],
                "reference": s["target"],
                "predictions": predict(kind, s, rng),
            })
        (OUT / "predictions.json").write_text(json.dumps(predictions, indent=4))

        script = (glpft / "inference_utils/toolbench/evaluate-backbone.py").read_text()
        anchor = "parser.add_argument('--output_path', type=str, default=\"\")\n"
        assert anchor in script, "evaluate-backbone.py changed; look again before patching"
        patched = script.replace(anchor, anchor + "parser.add_argument('--agent_mode', type=str, default='all')\n")
        (tmp / "evaluate-backbone.py").write_text(patched)
        subprocess.run(
            [sys.executable, str(tmp / "evaluate-backbone.py"),
             "--input_path", str(OUT / "predictions.json"),
             "--output_path", str(OUT / "metrics.json")],
            check=True,
        )
    print("wrote", OUT)


if __name__ == "__main__":
    main()
