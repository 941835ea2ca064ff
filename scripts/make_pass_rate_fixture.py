#!/usr/bin/env python3
"""Regenerates tests/fixtures/pass-rate/ with StableToolBench's own code, so umi's pass
rate (`umi eval pass-rate`) is checked against the reference rather than against a port:

- answers/: a few answer files in the ToolBench format (two methods for one id, a query
  holding `{answer}` and braces, a final answer holding `{query}`, one without Finish);
- expected.json, made by running the reference on them:
  * `converted[<method>]`: what `convert_to_answer_format.py --method <method>` (run as a
    script) makes of the folder: which ids, and each converted answer;
  * `judged[<id>]`: the requests `ReinforceToolLearningEvaluator.check_is_solved` (the
    `tooleval_gpt-3.5-turbo_default` evaluator, its template.txt and config.yaml) sends
    through `OpenaiPoolRequest.request` (replaced by a recorder answering scripted
    verdicts), and the verdict it returns; `get_steps` decides as `eval_pass_rate.py`
    does whether the judge is asked at all;
  * `retry`: the constants of the retries around the judge, read off the reference's
    objects (tenacity's decorator on `OpenAINormalizedEvaluator.function_call`,
    config.yaml's `timeout`), the waits of `backoff.expo` (`eval_pass_rate.py`'s
    `@backoff.on_exception(backoff.expo, Exception, max_time=15)`), and the OpenAI SDK's
    own retry delays (`_calculate_retry_timeout` without and with full jitter);
  * `runs`: numpy's mean and `np.std` (what eval_pass_rate.py prints) over sample rates.

Usage: scripts/make_pass_rate_fixture.py STABLETOOLBENCH_DIR (a checkout, or
`git -C <mirror> archive HEAD toolbench/tooleval | tar -x -C DIR`). Needs
`pip install pyyaml tenacity openai backoff numpy pydantic requests tqdm pandas`.
"""
import copy
import json
import pathlib
import subprocess
import sys
import tempfile
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/pass-rate"

SYSTEM = "You are AutoGPT, you can use many tools(functions) to do the following task."
FUNCTIONS = [
    {"name": "current_for_weather", "description": "Weather now.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "Finish", "description": "Finish.",
     "parameters": {"type": "object", "properties": {}, "required": []}},
]


def answer_file(query, final_answer, finish=True, observation="sunny"):
    """An answer file as `umi run --answer-format toolbench` writes it (the fields the
    converter and the pass rate read)."""
    conversation = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": query},
        {"role": "assistant", "content": "Look it up.",
         "function_call": {"name": "current_for_weather", "arguments": "{\"city\": \"Z\u00fcrich\"}"}},
        {"role": "function", "name": "current_for_weather", "content": observation},
    ]
    if finish:
        conversation.append({"role": "assistant", "content": "Done.",
                             "function_call": {"name": "Finish", "arguments": final_answer}})
    return {"answer_generation": {
        "valid_data": True,
        "query": query,
        "final_answer": final_answer if finish else "",
        "function": FUNCTIONS,
        "train_messages": [conversation],
        "finish_type": "give_answer" if finish else "",
    }}


def give(text):
    return json.dumps({"return_type": "give_answer", "final_answer": text})


def convert(tooleval, answers, method):
    """What StableToolBench's `convert_to_answer_format.py`, run as a script, makes of the
    answer files in `answers` for `method`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "converted.json"
        subprocess.run([sys.executable, "convert_to_answer_format.py", "--answer_dir", str(answers),
                        "--method", method, "--output", str(out)], cwd=tooleval, check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def default_evaluator(tooleval):
    """The `tooleval_gpt-3.5-turbo_default` evaluator, loaded as StableToolBench's scripts
    load it (its folder on `sys.path`)."""
    if str(tooleval) not in sys.path:
        sys.path.insert(0, str(tooleval))
    from evaluators import load_registered_automatic_evaluator
    return load_registered_automatic_evaluator(
        evaluator_name="tooleval_gpt-3.5-turbo_default", evaluators_cfg_path=str(tooleval / "evaluators"))


def recorder(requests, arguments_for):
    """A stand-in for `OpenaiPoolRequest.request`: records each request (deep copies) in
    `requests` and answers with one tool call whose arguments are
    `arguments_for(function, user_message)`."""
    def request(messages, **kwargs):
        kwargs = copy.deepcopy(kwargs)
        kwargs["messages"] = copy.deepcopy(messages)
        requests.append(kwargs)
        arguments = arguments_for(kwargs["tool_choice"]["function"]["name"], messages[0]["content"])
        call = types.SimpleNamespace(function=types.SimpleNamespace(arguments=json.dumps(arguments)))
        message = types.SimpleNamespace(tool_calls=[call], content=None)
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)])
    return request


ANSWERS = {
    # One id answered by both methods: only the method asked for may count.
    "7_DFS_woFilter_w2.json": answer_file(
        "Weather in Z\u00fcrich? Say it as {answer}, keep {{braces}}, {0} and {query}.",
        give("Sunny in Z\u00fcrich; the template's {query} and {answer} stay as written.")),
    "7_CoT@1.json": answer_file("Weather in Z\u00fcrich?", give("Rain.")),
    "8_DFS_woFilter_w2.json": answer_file("Weather in Oslo?", give("Snow, -3 C.")),
    "9_CoT@1.json": answer_file("Weather in Rome?", give("Warm.")),
    # No Finish: Unsolved without the judge.
    "10_DFS_woFilter_w2.json": answer_file("Weather in Lima?", "", finish=False),
    # A give-up: Unsolved without the judge.
    "11_DFS_woFilter_w2.json": answer_file("Weather in Kyiv?", json.dumps({"return_type": "give_up_and_restart"})),
}

# What the recorder answers, per (id, function): check_answer_status first.
SCRIPT = {
    ("7", "check_answer_status"): "Unsure",
    ("7", "parse_answer_status"): "Solved",
    ("8", "check_answer_status"): "Unsolved",
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tooleval = pathlib.Path(sys.argv[1]).resolve() / "toolbench/tooleval"
    answers = OUT / "answers"
    answers.mkdir(parents=True, exist_ok=True)
    for old in answers.glob("*.json"):
        old.unlink()
    for name, value in ANSWERS.items():
        (answers / name).write_text(json.dumps(value, indent=2) + "\n")

    converted = {method: convert(tooleval, answers, method) for method in ["DFS_woFilter_w2", "CoT@1"]}

    evaluator = default_evaluator(tooleval)
    from evaluators.registered_cls.tooleval import OpenAINormalizedEvaluator
    from utils import get_steps
    judged = {}
    for qid, example in converted["DFS_woFilter_w2"].items():
        requests = []
        evaluator.opr.request = recorder(
            requests, lambda function, _, qid=qid: {"answer_status": SCRIPT[(qid, function)], "reason": "scripted"})
        _, final_step = get_steps(example)
        if "'name': 'Finish'" not in final_step:  # eval_pass_rate.py's compute_pass_rate
            verdict = "AnswerStatus.Unsolved"
        else:
            status, _ = evaluator.check_is_solved(
                {"query": example["query"], "available_tools": example["available_tools"]},
                example["answer"], return_reason=True)
            verdict = str(status)
        judged[qid] = {"requests": requests, "verdict": verdict, "steps": get_steps(example)}

    import backoff
    import numpy as np
    import openai
    import openai._base_client as base_client
    import yaml

    retrying = OpenAINormalizedEvaluator.function_call.retry
    wait = retrying.wait
    config = yaml.safe_load((tooleval / "evaluators/tooleval_gpt-3.5-turbo_default/config.yaml").read_text())
    expo = backoff.expo()
    next(expo)
    client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
    options = base_client.FinalRequestOptions.construct(method="post", url="/x")
    sdk = {}
    for r in [0.0, 1.0]:
        base_client.random = lambda r=r: r
        sdk[str(r)] = [client._calculate_retry_timeout(client.max_retries - n, options, None)
                       for n in range(client.max_retries)]

    class State:
        def __init__(self, n):
            self.attempt_number = n

    retry = {
        "request_timeout_s": config["completions_kwargs"]["timeout"],
        "function_call_attempts": retrying.stop.max_attempt_number,
        "function_call_wait": {"multiplier": wait.multiplier, "min": wait.min, "max": wait.max,
                               "exp_base": wait.exp_base},
        "function_call_waits_s": [wait(State(n)) for n in range(1, retrying.stop.max_attempt_number)],
        "backoff_expo_s": [next(expo) for _ in range(6)],
        "backoff_max_time_s": 15,
        "sdk_max_retries": client.max_retries,
        "sdk_waits_s_no_jitter": sdk["0.0"],
        "sdk_waits_s_full_jitter": sdk["1.0"],
        "openai_version": openai.__version__,
    }

    rates = [[0.5, 0.625, 0.5], [0.25, 0.75], [0.4]]
    runs = [{"rates": r, "mean": sum(r) / len(r), "std": np.std(r).item()} for r in rates]

    expected = {"converted": converted, "judged": judged, "retry": retry, "runs": runs}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    print({m: sorted(c) for m, c in converted.items()}, {q: j["verdict"] for q, j in judged.items()})


if __name__ == "__main__":
    main()
