#!/usr/bin/env python3
"""Writes tests/fixtures/toolbench-agents/ by running upstream ToolBench's own code:

* `<group>/<id>_DFS_woFilter_w2.json.gz`: the answer files ToolBench's released runner
  (`DFS_tree_search` with `with_filter=False`, width 2, depth 12, 200 queries, as
  `qa_pipeline` runs `chatgpt_function`) writes when the model's replies are those of the
  recorded ChatGPT searches in `data/toolbench-real/answer` and the service's replies
  the recorded observations. The recorded files themselves came from ToolBench's
  data-generation code, whose search differs from the released one (the tree shapes
  show it), so they cannot serve as the expected output directly.
  - the replies: a conversation's place in the recorded tree is found by walking the
    newest child asked for at each node (the search is pre-order); the reply is that
    node's next child. A reply the recording does not have is a `Finish` give-up.
  - the service: `rapidapi_wrapper._step` itself, with `requests.post` answering the
    recorded `{"error", "response"}` of the call (an observation the recording cut at
    1024 characters is rebuilt so that it is cut to the same text again).
  - the tools' descriptions (the system message's task description) from the recorded
    system messages, `""` for a tool none lists.
* `toolllama-prompts.json`: `ToolLLaMA.parse` (template `tool-llama-single-round`) on
  conversations of those searches: the prompt it builds and the message it parses from a
  scripted prediction.

* `<group>.converted.json.gz`: with a StableToolBench checkout as the second argument,
  what its `toolbench/tooleval/convert_to_answer_format.py` makes of those answer files
  (the converter its pass rate reads).

tests/agents.rs replays the same recordings through `umi run --agent openai-functions`
and compares. Run with a ToolBench checkout and an environment with torch and
transformers (ToolBench's `inference/utils.py` imports them) and termcolor:

    python scripts/make_toolbench_agents_fixture.py /path/to/ToolBench [/path/to/StableToolBench]
"""

import copy
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "data" / "toolbench-real" / "answer"
OUT = ROOT / "tests" / "fixtures" / "toolbench-agents"
GIVE_UP = {"role": "assistant", "content": None,
           "function_call": {"name": "Finish", "arguments": "{\"return_type\": \"give_up_and_restart\"}"}}


def load_toolbench(toolbench):
    sys.path.insert(0, str(toolbench))
    sys.path.insert(0, str(toolbench / "toolbench" / "inference"))
    # rapidapi.py imports every backbone and the retriever; only the environment is used.
    for name in ["toolbench.inference.LLM.chatgpt_function_model", "toolbench.inference.LLM.davinci_model",
                 "toolbench.inference.LLM.tool_llama_lora_model", "toolbench.inference.LLM.retriever",
                 "toolbench.inference.server", "toolbench.model.compression"]:
        stub = types.ModuleType(name)
        for attr in ["ChatGPTFunction", "Davinci", "ToolLLaMALoRA", "ToolRetriever",
                     "get_rapidapi_response", "load_compress_model", "PeftModel"]:
            setattr(stub, attr, None)
        sys.modules[name] = stub
    from toolbench.inference.Downstream_tasks import rapidapi
    from toolbench.inference.LLM.tool_llama_model import ToolLLaMA
    from Algorithms.DFS import DFS_tree_search
    return rapidapi, ToolLLaMA, DFS_tree_search


def rebuilt_reply(observation):
    """The service reply whose `json.dumps`, cut at 1024 characters, is `observation`."""
    try:
        return json.loads(observation)
    except ValueError:
        pass
    assert observation.endswith("...") and len(observation) == 1027, observation[:80]
    cut = observation[:1024]
    head, text = cut.split('"response": "', 1)
    error = json.loads(head.rstrip(", ") + "}")["error"]
    # A cut escape is completed with a character that escapes to the same start.
    tail = text[text.rfind("\\"):] if "\\" in text[-6:] else ""
    if tail and not json_complete(tail):
        text = text[: len(text) - len(tail)]
        pad = "\n" if tail == "\\" else chr(int((tail[2:] + "0000")[:4], 16)) if tail.startswith("\\u") else None
        assert pad is not None, tail
    else:
        pad = "x"
    response = json.loads('"' + text + '"') + pad * 1100
    reply = {"error": error, "response": response}
    assert json.dumps(reply)[:1024] == cut, (json.dumps(reply)[:1024], cut)
    return reply


def json_complete(escape):
    try:
        json.loads('"' + escape + '"')
        return True
    except ValueError:
        return False


def canonical(arguments):
    """Arguments compared by meaning: re-serialized with sorted keys, else trimmed."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments.strip()


def record_calls(calls, tree, functions):
    """Adds (function reached, canonical arguments) -> observation of every expanded call
    of a recorded tree to `calls`; the function reached is the first whose name ends with
    the name called; a call recorded twice answers with its last recording, across the
    folder's files in name order (as umi's simulator, given the folder, keeps them)."""
    names = [f["name"] for f in functions if f["name"] != "Finish"]

    def walk(node, father):
        if node["node_type"] == "Action Input" and father and father["node_type"] == "Action":
            called = father["description"]
            if called != "Finish" and called and "observation" in node:
                reached = next((n for n in names if n.endswith(called)), called)
                calls[(reached, canonical(node["description"]))] = node["observation"]
        for child in node["children"]:
            walk(child, node)

    walk(tree, None)


class ReplayedChat:
    """ChatGPTFunction's interface, replying from a recorded tree."""

    def __init__(self, tree):
        self.tree = tree
        self.asked = {}
        self.conversation_history = []

    def change_messages(self, messages):
        self.conversation_history = messages

    def parse(self, functions, process_id, **args):
        node, path = self.tree, ()
        for m in self.conversation_history:
            if m["role"] != "assistant":
                continue
            newest = self.asked.get(path, 0) - 1
            node, path = node["children"][newest], path + (newest,)
            if node["node_type"] == "Thought":
                assert m.get("content") == node["description"]
                if "function_call" not in m:
                    continue
                node, path = node["children"][0], path + (0,)
            call = m["function_call"]
            assert call["name"] in (node["description"], "invalid_hallucination_function_name")
            node, path = node["children"][0], path + (0,)
            assert call["arguments"] == node["description"]
        k = self.asked.get(path, 0)
        self.asked[path] = k + 1
        if k >= len(node["children"]):
            return copy.deepcopy(GIVE_UP), 0, 0
        child = node["children"][k]
        if child["node_type"] == "Thought":
            message = {"role": "assistant", "content": child["description"]}
            action = child["children"][0] if child["children"] else None
        else:
            message, action = {"role": "assistant", "content": None}, child
        if action is not None:
            message["function_call"] = {"name": action["description"],
                                        "arguments": action["children"][0]["description"]}
        return message, 0, 0


TASK_HEAD = "You have access of the following tools:\n"


def recorded_descriptions(answers):
    """Each tool's description as the recorded system messages list it (`k.<tool>: …`)."""
    described = {}
    for answer in answers:
        conversations = answer["answer_generation"].get("train_messages") or []
        if conversations:
            tools = conversations[0][0]["content"].split(TASK_HEAD, 1)[1]
            for line in tools.split("\n")[:-1]:
                name, description = line.split(".", 1)[1].split(": ", 1)
                described[name] = description
    return described


def task_description(answer, functions, described):
    """`rapidapi_wrapper.task_description` with the recorded descriptions (a tool that no
    recording describes has none); equal to the recorded system message where there is
    one."""
    tools = []
    for f in functions:
        if f["name"] == "Finish":
            continue
        tool = f["description"].split('subfunction for tool "', 1)[1].split('"', 1)[0]
        if tool not in tools:
            tools.append(tool)
    text = ("You should use functions to help handle the real time user querys. Remember:\n"
            "1.ALWAYS call \"Finish\" function at the end of the task. And the final answer should contain enough information to show to the user,If you can't handle the task, or you find that function calls always fail(the function is not valid now), use function Finish->give_up_and_restart.\n"
            "2.Do not use origin tool names, use only subfunctions' names.\n" + TASK_HEAD)
    for k, tool in enumerate(tools):
        striped = described.get(tool, "")[:512].replace("\n", "").strip() or "None"
        text += f"{k + 1}.{tool}: {striped}\n"
    conversations = answer["answer_generation"].get("train_messages") or []
    if conversations:
        assert conversations[0][0]["content"].endswith("Task description: " + text)
    return text


def released_finish(rapidapi):
    """The `Finish` function `rapidapi_wrapper.__init__` appends (the recordings carry an
    older wording), read from its source."""
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(rapidapi.rapidapi_wrapper))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "finish_func":
            return ast.literal_eval(node.value)
    raise SystemExit("no finish_func in rapidapi_wrapper")


def make_env(rapidapi, answer, described):
    generation = answer["answer_generation"]
    env = rapidapi.rapidapi_wrapper.__new__(rapidapi.rapidapi_wrapper)
    env.functions = [f for f in generation["function"] if f["name"] != "Finish"] + [released_finish(rapidapi)]
    env.input_description = generation["query"]
    env.task_description = task_description(answer, env.functions, described)
    env.api_name_reflect = {f["name"]: f["name"] for f in env.functions}
    env.tool_names = [f["name"] for f in env.functions]
    env.cate_names = ["" for _ in env.functions]
    env.service_url = "http://recorded"
    env.toolbench_key = ""
    env.rapidapi_key = ""
    env.use_rapidapi_key = False
    env.api_customization = False
    env.max_observation_length = 1024
    env.observ_compress_method = "truncate"
    env.retriever = None
    env.process_id = 1
    env.success = 0
    env.CALL_MAX_TIME = 3
    return env


class Reply:
    def __init__(self, body):
        self.status_code = 200
        self.body = body

    def json(self):
        return self.body


def replay_search(rapidapi, DFS_tree_search, answer, calls, described):
    tree = answer["tree"]["tree"]

    def post(url, json=None, headers=None, timeout=None):
        observation = calls.get((json["api_name"], canonical(json["tool_input"])))
        assert observation is not None, (json["api_name"], json["tool_input"])
        return Reply(rebuilt_reply(observation))

    rapidapi.requests.post = post
    rapidapi.time.sleep = lambda s: None
    env = make_env(rapidapi, answer, described)
    chain = DFS_tree_search(llm=ReplayedChat(tree), io_func=env, process_id=1)
    chain.start(single_chain_max_step=12, tree_beam_size=2, max_query_count=200, answer=1, with_filter=False)
    data = chain.to_json(answer=True, process=True)
    data["answer_generation"]["query"] = env.input_description
    # The reference draws the reported give-up at random: every one it could draw.
    if not data["win"] and len(chain.give_up_node) > 1:
        data["give_up_choices"] = [[n.description, n.get_train_messages_from_this_node()]
                                   for n in chain.give_up_node]
    return data


def toolllama_cases(ToolLLaMA, answers):
    """ToolLLaMA.parse on the last conversation of each answer (with its spent retry
    prompts), a prediction scripted from the conversation's next call."""
    cases = []
    for data in answers:
        conversations = data["answer_generation"].get("train_messages") or []
        if not conversations:
            continue
        messages = conversations[-1]
        functions = data["answer_generation"]["function"]
        predictions = [
            "Thought: I will look.\nAction: %s\nAction Input: {\"q\": \"é\"}" % functions[0]["name"],
            "no markers at all",
            "Action: Finish\nAction Input: {\"return_type\": \"give_up_and_restart\"}",
        ]
        prediction = predictions[len(cases) % len(predictions)]
        llm = ToolLLaMA.__new__(ToolLLaMA)
        llm.template = "tool-llama-single-round"
        llm.tokenizer = lambda text: [0]
        seen = {}

        def predict(prompt, stop=None, seen=seen, prediction=prediction):
            seen["prompt"] = prompt
            return prediction

        llm.prediction = predict
        llm.change_messages(messages[:-1])
        message, code, _ = llm.parse(functions, process_id=1)
        cases.append({"messages": messages[:-1], "functions": functions, "prompt": seen["prompt"],
                      "prediction": prediction, "message": message})
    return cases


def gzip_json(path, text):
    # mtime 0: the same bytes on every run.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(text.encode("utf-8"))


def convert_with_stabletoolbench(stb, group, answers):
    """StableToolBench's converter over a group's answer files (written to a scratch
    folder, as it reads a folder)."""
    with tempfile.TemporaryDirectory() as scratch:
        for qid, data in answers:
            Path(scratch, f"{qid}_DFS_woFilter_w2.json").write_text(json.dumps(data))
        output = Path(scratch) / "converted.json"
        subprocess.run([sys.executable, "convert_to_answer_format.py", "--answer_dir", scratch,
                        "--method", "DFS_woFilter_w2", "--output", str(output)],
                       cwd=stb / "toolbench" / "tooleval", check=True)
        converted = json.loads(output.read_text())
    gzip_json(OUT / f"{group}.converted.json.gz", json.dumps(converted, indent=1, sort_keys=True) + "\n")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    rapidapi, ToolLLaMA, DFS_tree_search = load_toolbench(Path(sys.argv[1]).resolve())
    random.seed(42)
    written = []
    stb = Path(sys.argv[2]).resolve() if len(sys.argv) == 3 else None
    for group in sorted(os.listdir(RECORDINGS)):
        group_answers = []
        out = OUT / group.split("_")[0]
        out.mkdir(parents=True, exist_ok=True)
        answers = [(name, json.loads((RECORDINGS / group / name).read_text()))
                   for name in sorted(os.listdir(RECORDINGS / group))]
        calls = {}
        for _, answer in answers:
            record_calls(calls, answer["tree"]["tree"], answer["answer_generation"]["function"])
        described = recorded_descriptions([a for _, a in answers])
        for name, answer in answers:
            data = replay_search(rapidapi, DFS_tree_search, answer, calls, described)
            qid = name.split("_")[0]
            gzip_json(out / f"{qid}_DFS_woFilter_w2.json.gz", json.dumps(data, indent=2) + "\n")
            written.append(data)
            group_answers.append((qid, data))
            print(group, qid, "win" if data["win"] else "no win", data["tree"]["size"], "nodes")
        if stb is not None:
            convert_with_stabletoolbench(stb, group.split("_")[0], group_answers)
    cases = toolllama_cases(ToolLLaMA, written)
    (OUT / "toolllama-prompts.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(len(cases), "ToolLLaMA prompts")


if __name__ == "__main__":
    main()
