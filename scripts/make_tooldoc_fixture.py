#!/usr/bin/env python3
"""Regenerates tests/fixtures/tool-docs.expected.json: for every API of the query files in
data/toolbench-real/instruction/, the two documents α-UMi's real-time pipeline builds
from it (ToolBench-multiLLM `rapidapi_wrapper.api_json_to_openai_json`), written here in
Python straight from the reference's rules:

- `doc`: what the models see in `{doc}`, `json.dumps` of {"Name", "function", "input"}:
  the API description stripped, the raw API name replaced by the function name, first
  256 characters ("" when blank); parameters (only if the API has a required one) under
  their original names as `<type>, <description[-256:]>` with the description NOT
  stripped (it is stripped only to test for blankness), or `<type>` when blank.
- `function`: the OpenAI-style spec of the answer file's `function` list (what ToolEval's
  judge reads): `This is the subfunction for tool "<tool>", you can use this tool.` plus
  `The description of this function is: "<description>"` when there is one; parameters
  (again only with a required one) under `change_name(standardize(name))`, description
  cut to its first 256 characters, `example_value` unless `len(str(default)) == 0`.

umi's Rust rendering (`ApiSpec::doc`, `ApiSpec::function_spec`) is tested against it
(tests/fidelity.rs).
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
TYPES = {"NUMBER": "integer", "STRING": "string", "BOOLEAN": "boolean"}
KEYWORDS = ["from", "class", "return", "false", "true", "id", "and"]


def standardize(name):
    name = re.sub("[^\\u4e00-\\u9fa5^a-z^A-Z^0-9^_]", "_", name)
    name = re.sub(r"(_)\1+", "_", name).lower()
    name = name.strip("_")
    return "get_" + name if name and name[0].isdigit() else name


def change_name(name):
    return "is_" + name if name in KEYWORDS else name


def documents(api):
    tool = standardize(api["tool_name"])
    name = (change_name(standardize(api["api_name"])) + "_for_" + tool)[-64:]
    doc = {"Name": name, "function": "", "input": {}}
    function = {
        "name": name,
        "description": f'This is the subfunction for tool "{tool}", you can use this tool.',
        "parameters": {"type": "object", "properties": {}, "required": [], "optional": []},
    }
    if api["api_description"].strip() != "":
        shown = api["api_description"].strip().replace(api["api_name"], name)[:256]
        doc["function"] = shown
        function["description"] += f'The description of this function is: "{shown}"'
    if len(api["required_parameters"]) > 0:
        params = [(p, "required") for p in api["required_parameters"]]
        params += [(p, "optional") for p in api["optional_parameters"]]
        for p, kind in params:
            ptype = TYPES.get(p["type"], "string")
            if p["description"].strip() != "":
                doc["input"][p["name"]] = ptype + ", " + p["description"][-256:]
            else:
                doc["input"][p["name"]] = ptype
        for p, kind in params:
            pname = change_name(standardize(p["name"]))
            spec = {"type": TYPES.get(p["type"], "string"), "description": p["description"][:256]}
            if len(str(p["default"])) != 0:
                spec["example_value"] = p["default"]
            function["parameters"]["properties"][pname] = spec
            function["parameters"][kind].append(pname)
    return json.dumps(doc), json.dumps(function)


def main():
    cases = []
    for path in sorted((ROOT / "data/toolbench-real/instruction").glob("*.json")):
        for query in json.load(open(path)):
            for api in query.get("api_list", []):
                if "required_parameters" not in api:
                    continue  # documented only in ToolBench's tool folder
                doc, function = documents(api)
                cases.append({"file": path.name, "query_id": query["query_id"], "api": api,
                              "doc": doc, "function": function})
    out = ROOT / "tests/fixtures/tool-docs.expected.json"
    out.write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} APIs -> {out}")


if __name__ == "__main__":
    main()
