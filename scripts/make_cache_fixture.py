#!/usr/bin/env python3
"""Regenerates tests/fixtures/stb-cache/ and tests/fixtures/stb-cache.expected.json: a
tool response cache in StableToolBench's layout, written as its server writes one
(`server/main.py::save_cache`): `<standard_category>/<standardize(tool)>_for_<standard_category>/<api>.json`,
each a JSON object keyed by Python's own `str()` of the `json.loads`-ed tool input. The
expected file lists, for each entry, the call as a query's `api_list` names it (raw
category, tool and API names) with the tool input as a caller writes it (JSON text),
and the reply the cache holds. umi's reader (`umi_tools::cache`) is tested against it
(services/tools/tests/cache.rs, tests/stabletoolbench.rs), and its writer against
stb-cache.saved.expected.json (the first API's file after one more reply): tricky names (spaces, commas, slashes, keywords, leading
digits) and tricky inputs (nested dicts, lists, booleans, None, floats, non-ASCII,
quotes and backslashes inside strings).
"""
import json
import pathlib
import re
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/stb-cache"


def standardize(name):
    name = re.sub("[^\\u4e00-\\u9fa5^a-z^A-Z^0-9^_]", "_", name)
    name = re.sub(r"(_)\1+", "_", name).lower().strip("_")
    return "get_" + name if name and name[0].isdigit() else name


def change_name(name):
    return "is_" + name if name in ["from", "class", "return", "false", "true", "id", "and"] else name


def standardize_category(category):
    c = category.replace(" ", "_").replace(",", "_").replace("/", "_")
    return c.replace("__", "_")


CALLS = [
    ("News, Media", "Daily News-API (v2)", "Top Headlines",
     {"country": "fr", "page": 2, "full": True, "tags": ["a", "b"], "since": None}),
    ("News, Media", "Daily News-API (v2)", "Top Headlines", {}),
    ("Data", "3D Models", "id", {"q": "it's", "note": 'say "hi"', "both": "it's \"x\""}),
    ("Data", "3D Models", "id", {"ratio": 1.5, "tiny": 1e-7, "whole": 2.0, "huge": 1e16, "neg": -0.0}),
    ("Artificial Intelligence/Machine Learning", "Text Tools", "Translate/Text",
     {"text": "café 東京 🎉", "path": "C:\\temp\\x", "multi": "line1\nline2\ttab"}),
    ("Artificial Intelligence/Machine Learning", "Text Tools", "Translate/Text",
     {"nested": {"deep": {"list": [1, 2.5, {"k": False}]}, "empty": []}}),
]


# Replies as StableToolBench's cache and simulator also hold them, each under an API of
# its own (so the entries above keep their files): a null response, a list, an empty
# response with a null error, an error that only starts like a status text, one that is
# a status text exactly, and an object whose JSON is over 1024 characters.
REPLIES = [
    ("Data", "3D Models", "Model Info", {"n": 1}, {"error": "", "response": None}),
    ("Data", "3D Models", "Model Info", {"n": 2}, {"error": None, "response": [1, "two", {"3": None}]}),
    ("Data", "3D Models", "Model Info", {"n": 3}, {"error": None, "response": ""}),
    ("Data", "3D Models", "Model Info", {"n": 4}, {"error": "Unauthorized error... (and more)", "response": ""}),
    ("Data", "3D Models", "Model Info", {"n": 5}, {"error": "Unauthorized error...", "response": ""}),
    ("Data", "3D Models", "Model Info", {"n": 6},
     {"error": "", "response": {"items": [{"id": i, "title": f"caf\u00e9 \"{i}\"", "tags": ["a\nb"]} for i in range(40)]}}),
    ("Data", "3D Models", "Model Info", {"n": 7}, {"error": "", "response": {}}),
]


def observation(reply):
    """The text the agent sees (ToolBench-multiLLM `rapidapi_wrapper._step`): the
    response as received through json.dumps unless it is "", else the error as a message;
    cut to 1024 characters plus "..."."""
    if reply["response"] != "":
        text = json.dumps(reply["response"])
    else:
        text = json.dumps({"message": reply["error"]})
    return text[:1024] + "..." if len(text) > 1024 else text


STATUS = {"API not working error...": 6, "Unauthorized error...": 7, "Unsubscribed error...": 8,
          "Too many requests error...": 9, "Rate limit per minute error...": 10, "Message error...": 11}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    files = {}
    expected = []
    for i, (category, tool, api, tool_input) in enumerate(CALLS):
        cat = standardize_category(category)
        folder = OUT / cat / (standardize(tool) + "_for_" + cat)
        name = change_name(standardize(api)) + ".json"
        text = json.dumps(tool_input)
        reply = {"error": "", "response": f"reply {i} to {str(json.loads(text))}"}
        if i % 2:
            # Responses as the real cache holds many: JSON objects, a null error.
            reply = {"error": None, "response": {"reply": i, "to": json.loads(text), "ok": True}}
        files.setdefault(folder / name, {})[str(json.loads(text))] = reply
        expected.append({"category": category, "tool": tool, "api": api, "input": text, "reply": reply})
    for category, tool, api, tool_input, reply in REPLIES:
        cat = standardize_category(category)
        folder = OUT / cat / (standardize(tool) + "_for_" + cat)
        name = change_name(standardize(api)) + ".json"
        text = json.dumps(tool_input)
        files.setdefault(folder / name, {})[str(json.loads(text))] = reply
        expected.append({"category": category, "tool": tool, "api": api, "input": text, "reply": reply})
    for case in expected:
        case["observation"] = observation(case["reply"])
        # The reference compares the error text exactly (`==`), not by prefix.
        case["status"] = STATUS.get(case["reply"]["error"], 0)
    for path, cache in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        json.dump(cache, open(path, "w"), indent=4)
    (ROOT / "tests/fixtures/stb-cache.expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    # What StableToolBench's save_cache writes after a new reply for the first API:
    # the whole file again, json.dump(cache, indent=4).
    first = next(iter(files))
    saved = dict(files[first])
    saved[str(json.loads('{"country": "de"}'))] = {"error": "", "response": "invented headlines \u00e9"}
    (ROOT / "tests/fixtures/stb-cache.saved.expected.json").write_text(json.dumps(saved, indent=4))
    print(f"{len(expected)} entries in {len(files)} files -> {OUT}")


if __name__ == "__main__":
    main()
