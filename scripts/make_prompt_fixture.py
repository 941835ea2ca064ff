#!/usr/bin/env python3
"""Regenerates tests/fixtures/static-prompts.expected.json: the planner, caller and
summarizer inputs that α-UMi's static pipeline builds for a few records of
out_of_domain.json, written directly from the reference's rules in Python (json.dumps
with its defaults, str.replace in the order doc, tool_names, thought, history; history
turns as `role: value</s>`, observations without `</s>`; the planner turn labelled
`planner: `; the gold planner/caller outputs as the role outputs). umi's Rust rendering
is tested against it.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLANNER = "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nYou are the assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\nAnswer with a following format:\nThe thought of the next step, followed by Next: caller or conclusion or give up."
CALLER = "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nThe thought of this step is:\n{thought}\nBase on the thought make an api call in the following format:\nAction: the name of api that should be called in this step, should be exactly in [{tool_names}],\nAction Input: the api call request."
SUMMARIZER = "Make a conclusion based on the conversation history:\n{history}"
RECORDS = [0, 45, 101, 399]


def fill(template, tools, history, thought=None):
    doc = "".join(json.dumps(t) + "\n" for t in tools)
    names = ", ".join(t["Name"] for t in tools)
    text = template.replace("{doc}", doc).replace("{tool_names}", names)
    if thought is not None:
        text = text.replace("{thought}", thought)
    return text.replace("{history}", history)


def history(turns):
    out = ""
    for t in turns:
        out += t["from"] + ": " + t["value"] + ("" if t["from"] == "observation" else "</s>")
    return out


def main():
    data = json.load(open(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/toolbench-static/out_of_domain.json"))
    cases = []
    for r in RECORDS:
        rec = data[r]
        turns = rec["conversations"]
        for i, t in enumerate(turns):
            if t["from"] != "assistant" or not any(m in t["value"] for m in ("Next: caller.", "Next: conclusion.", "Next: give up.")):
                continue
            dispath = history(turns[:i])
            case = {"record": r, "turn": i, "planner": fill(PLANNER, rec["tools"], dispath) + " assistant: "}
            v = t["value"]
            if "Next: give up." not in v and "Next: conclusion." in v:
                cut = v[: v.index("Next: conclusion.") + len("Next: conclusion.")]
                case["summarizer"] = fill(SUMMARIZER, rec["tools"], dispath + "planner: " + cut + "</s>") + " conclusion: "
            elif "Next: give up." not in v:
                cut = v[: v.index("Next: caller.") + len("Next: caller.")]
                case["caller"] = fill(CALLER, rec["tools"], dispath + "planner: " + cut + "</s>", cut) + " caller: "
            cases.append(case)
    out = ROOT / "tests/fixtures/static-prompts.expected.json"
    out.write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} cases -> {out}")


if __name__ == "__main__":
    main()
