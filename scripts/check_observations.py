#!/usr/bin/env python3
"""Checks every tool observation of a folder of answer files against a StableToolBench
tool response cache, as the reference renders it.

For each call in each answer tree (an `Action` node and its `Action Input` child) to one
of the query's APIs (resolved as ToolBench-multiLLM's `rapidapi_wrapper._step` does: the
first function whose name ends with the called name) with JSON arguments, the cached
`{"error", "response"}` is looked up as StableToolBench's server does (file by
standardized category, tool and API name; key `str(json.loads(arguments))`) and the
observation must be what the reference shows for it: `json.dumps(response)` unless the
response is "", else `json.dumps({"message": error})`, cut to 1024 characters plus "...".

    python3 scripts/check_observations.py ANSWERS_DIR CACHE_DIR QUERY_FILE

Prints how many observations were checked (and in which queries) and exits 1 on the first difference or on a
call the cache does not hold.
"""
import json
import pathlib
import re
import sys

KEYWORDS = ["from", "class", "return", "false", "true", "id", "and"]


def standardize(name):
    name = re.sub("[^\\u4e00-\\u9fa5^a-z^A-Z^0-9^_]", "_", name)
    name = re.sub(r"(_)\1+", "_", name).lower().strip("_")
    return "get_" + name if name and name[0].isdigit() else name


def change_name(name):
    return "is_" + name if name in KEYWORDS else name


def standardize_category(category):
    c = category.replace(" ", "_").replace(",", "_").replace("/", "_")
    return c.replace("__", "_")


def function_name(api):
    return (change_name(standardize(api["api_name"])) + "_for_" + standardize(api["tool_name"]))[-64:]


def cache_file(cache, api):
    cat = standardize_category(api["category_name"])
    tool = standardize(api["tool_name"]) + "_for_" + cat
    return cache / cat / tool / (change_name(standardize(api["api_name"])) + ".json")


def observation(reply):
    if reply["response"] != "":
        text = json.dumps(reply["response"])
    else:
        text = json.dumps({"message": reply["error"]})
    return text[:1024] + "..." if len(text) > 1024 else text


def calls(node, father=None):
    if node.get("node_type") == "Action Input" and father is not None and father.get("node_type") == "Action":
        yield father["description"], node["description"], node.get("observation")
    for child in node.get("children", []):
        yield from calls(child, node)


def main():
    answers, cache, query_file = (pathlib.Path(a) for a in sys.argv[1:4])
    queries = {str(q["query_id"]): q for q in json.load(open(query_file))}
    checked = 0
    seen_in = set()
    for path in sorted(answers.glob("*.json")):
        qid = path.name.split("_")[0]
        if qid not in queries:
            continue
        answer = json.load(open(path))
        for name, arguments, seen in calls(answer["tree"]["tree"]):
            if name == "Finish":
                continue
            api = next((a for a in queries[qid]["api_list"] if function_name(a).endswith(name)), None)
            try:
                key = str(json.loads(arguments)) if arguments else "{}"
            except ValueError:
                continue
            if api is None:
                continue
            entries = json.load(open(cache_file(cache, api))) if cache_file(cache, api).exists() else {}
            if key not in entries:
                sys.exit(f"{path.name}: {name} {arguments!r}: not in the cache ({cache_file(cache, api)})")
            want = observation(entries[key])
            if seen != want:
                sys.exit(f"{path.name}: {name} {arguments!r}:\n  observation {seen!r}\n  reference   {want!r}")
            checked += 1
            seen_in.add(qid)
    print(f"checked {checked} observations in queries {' '.join(sorted(seen_in))}")


if __name__ == "__main__":
    main()
