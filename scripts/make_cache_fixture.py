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
