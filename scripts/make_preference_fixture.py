#!/usr/bin/env python3
"""Regenerates tests/fixtures/preference/ with StableToolBench's own code, so umi's win
rate (`umi eval win-rate`, `umi_core::preference`) is checked against the reference's
preference evaluation rather than against a port:

- ref/ and cand/: answer files in the ToolBench format (`umi run --answer-format
  toolbench`'s fields, made as scripts/make_pass_rate_fixture.py makes them), one pair
  per case: one answer solved, both solved, both unsolved, an unsure one, two give-ups,
  identical answers, a query holding `{answer}` and braces with a judge that first names
  no answer;
- expected.json, made by running the reference on them: per case, per shown order
  (`random.shuffle` of `annotate_preference` replaced by that order), every request
  `ReinforceToolLearningEvaluator.annotate_preference` (the
  `tooleval_gpt-3.5-turbo_default` evaluator, as `eval_preference.py` calls it) sends
  through `OpenaiPoolRequest.request` (replaced by a recorder answering scripted
  verdicts: "SOLVED" in the judged text is Solved, "MAYBE" Unsure, else Unsolved; the
  task Solvable; the better answer by each case's list of indexes), the replies, and the
  preferred answer (0 the reference, 1 the candidate). The converted examples
  (`convert_to_answer_format.py`) are kept beside them.

Usage: scripts/make_preference_fixture.py STABLETOOLBENCH_DIR (a checkout, or
`git -C <mirror> archive HEAD toolbench/tooleval | tar -x -C DIR`). Needs
`pip install pyyaml tenacity openai backoff numpy pydantic requests tqdm pandas`.
"""
import copy
import importlib.util
import json
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/preference"

_spec = importlib.util.spec_from_file_location("pass_rate_fixture", ROOT / "scripts/make_pass_rate_fixture.py")
_pass_rate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pass_rate)
answer_file, give = _pass_rate.answer_file, _pass_rate.give
convert, default_evaluator, recorder = _pass_rate.convert, _pass_rate.default_evaluator, _pass_rate.recorder

GIVE_UP = json.dumps({"return_type": "give_up_and_restart"})
BRACES = "Weather in Z\u00fcrich? Say it as {answer}, keep {{braces}}, {0} and {query}."

# id: (reference answer file, candidate answer file, the judge's better-answer indexes in
# the order it is asked).
CASES = {
    "1": (answer_file("Weather in Oslo?", give("SOLVED: snow, -3 C.")),
          answer_file("Weather in Oslo?", give("No luck.")), []),
    "2": (answer_file("Weather in Rome?", give("SOLVED: warm.")),
          answer_file("Weather in Rome?", give("SOLVED: 24 C and sunny."), observation="24 C"), [1]),
    "3": (answer_file("Weather in Lima?", give("Nothing found.")),
          answer_file("Weather in Lima?", give("The tool failed."), observation="error"), [0]),
    "4": (answer_file("Weather in Kyiv?", give("MAYBE cold.")),
          answer_file("Weather in Kyiv?", give("No idea.")), []),
    "5": (answer_file("Weather in Bern?", GIVE_UP),
          answer_file("Weather in Bern?", "", finish=False), [1]),
    "6": (answer_file("Weather in Oslo?", give("Same.")),
          answer_file("Weather in Oslo?", give("Same.")), []),
    "7": (answer_file(BRACES, give("It's {query}: sunny.")),
          answer_file(BRACES, give("Rain, {answer}."), observation="rain"), [2, 1]),
}

ORDERS = [[0, 1], [1, 0]]


def verdict(text):
    if "SOLVED" in text:
        return "Solved"
    if "MAYBE" in text:
        return "Unsure"
    return "Unsolved"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tooleval = pathlib.Path(sys.argv[1]).resolve() / "toolbench/tooleval"
    folders = {"ref": OUT / "ref", "cand": OUT / "cand"}
    for side, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):
            old.unlink()
        for qid, case in CASES.items():
            answer = case[0] if side == "ref" else case[1]
            (folder / f"{qid}_DFS_woFilter_w2.json").write_text(json.dumps(answer, indent=2) + "\n")

    converted = {side: convert(tooleval, folder, "DFS_woFilter_w2") for side, folder in folders.items()}
    evaluator = default_evaluator(tooleval)
    judged = {}
    for qid, case in CASES.items():
        judged[qid] = []
        for order in ORDERS:
            requests, replies = [], []
            picks = list(case[2])

            def arguments_for(function, content):
                if function in ("check_answer_status", "parse_answer_status"):
                    # The judged answer is the text after the template's "Answer:" line.
                    arguments = {"answer_status": verdict(content.rsplit("Answer:", 1)[-1])}
                elif function == "check_task_solvable":
                    arguments = {"task_status": "Solvable"}
                else:
                    arguments = {"index": picks.pop(0), "reason": "scripted"}
                replies.append(arguments)
                return arguments

            evaluator.opr.request = recorder(requests, arguments_for)
            random.shuffle = lambda xs, order=order: xs.__setitem__(slice(None), list(order))
            random.choice = lambda seq: seq[0]
            ref, cand = copy.deepcopy(converted["ref"][qid]), copy.deepcopy(converted["cand"][qid])
            preferred = evaluator.annotate_preference(
                ref["query"], ref["available_tools"], [ref["answer"], cand["answer"]],
                task_status=None, answer_statuss=[None, None])
            assert not picks, (qid, order, picks)
            judged[qid].append({"shown": order, "requests": requests, "replies": replies,
                                "preferred": preferred})

    expected = {"converted": converted, "judged": judged}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    print({q: [(j["shown"], [r["tool_choice"]["function"]["name"] for r in j["requests"]], j["preferred"])
               for j in js] for q, js in judged.items()})


if __name__ == "__main__":
    main()
