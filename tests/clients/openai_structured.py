"""Structured output and function calling on a umi worker's OpenAI-compatible endpoint,
asked through the `openai` Python package (the client its users use).

Usage: python3 openai_structured.py BASE_URL API_KEY

Each check prints its name; any failure raises (a non-zero exit).
"""

import json
import re
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
MODEL = "umi"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

# StableToolBench's judge forces this function (its check_answer_status prompt).
CHECK = {
    "type": "function",
    "function": {
        "name": "check_answer_status",
        "description": "Parse the json answer with layerd nodes and return the answer_status about the answer",
        "parameters": {
            "type": "object",
            "properties": {
                "answer_status": {"type": "string", "enum": ["Unsure", "Unsolved", "Solved"]},
                "reason": {"type": "string", "maxLength": 60},
            },
            "required": ["answer_status", "reason"],
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def check(name):
    print(f"ok {name}", flush=True)


def ask(content, **kw):
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=kw.pop("max_tokens", 96),
        **kw,
    )


def is_person(value):
    assert list(value) == ["name", "age"], value
    assert isinstance(value["name"], str) and len(value["name"]) <= 24, value
    assert isinstance(value["age"], int) and 0 <= value["age"] <= 150, value


def is_verdict(arguments):
    verdict = json.loads(arguments)
    assert verdict["answer_status"] in ("Unsure", "Unsolved", "Solved"), verdict
    assert isinstance(verdict["reason"], str), verdict


# response_format: a JSON schema, then any JSON object.
reply = ask(
    "Describe a person as JSON.",
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
)
is_person(json.loads(reply.choices[0].message.content))
assert reply.choices[0].finish_reason == "stop", reply
check("response_format json_schema")

reply = ask("Reply in JSON: is the sky blue?", response_format={"type": "json_object"}, max_tokens=200)
assert isinstance(json.loads(reply.choices[0].message.content), dict)
check("response_format json_object")

# A forced call, as StableToolBench's judge makes it: the arguments match the schema.
reply = ask(
    "Query: weather in Paris. Answer: It is sunny in Paris. Was the query solved?",
    tools=[CHECK],
    tool_choice={"type": "function", "function": {"name": "check_answer_status"}},
)
message = reply.choices[0].message
assert message.content is None, message
(call,) = message.tool_calls
assert call.type == "function" and call.id, call
assert call.function.name == "check_answer_status", call
is_verdict(call.function.arguments)
assert reply.choices[0].finish_reason == "stop", reply.choices[0]
check("tool_choice naming a function")

# "required": one of the offered functions, with its own arguments.
reply = ask("What is the weather in Lima?", tools=[CHECK, WEATHER], tool_choice="required")
(call,) = reply.choices[0].message.tool_calls
assert call.function.name in ("check_answer_status", "get_weather"), call
arguments = json.loads(call.function.arguments)
if call.function.name == "get_weather":
    assert list(arguments) == ["city"], arguments
else:
    is_verdict(call.function.arguments)
assert reply.choices[0].finish_reason == "tool_calls", reply.choices[0]
check("tool_choice required")

# "auto": the model may call or answer; either way the reply is well formed.
reply = ask("What is the weather in Lima?", tools=[WEATHER], tool_choice="auto")
message = reply.choices[0].message
assert message.content is not None or message.tool_calls, message
check("tool_choice auto")


def stream(content, **kw):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": content}],
            temperature=0,
            max_tokens=kw.pop("max_tokens", 96),
            stream=True,
            **kw,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = {}
    for c in chunks:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            call = calls.setdefault(d.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = d.id or call["id"]
            if d.function is not None:
                call["name"] = d.function.name or call["name"]
                call["arguments"] += d.function.arguments or ""
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, [calls[i] for i in sorted(calls)], reasons


# Streamed: the same as whole, in pieces.
whole = ask(
    "Query: weather in Paris. Answer: It is sunny in Paris. Was the query solved?",
    tools=[CHECK],
    tool_choice={"type": "function", "function": {"name": "check_answer_status"}},
).choices[0].message.tool_calls[0]
text, calls, reasons = stream(
    "Query: weather in Paris. Answer: It is sunny in Paris. Was the query solved?",
    tools=[CHECK],
    tool_choice={"type": "function", "function": {"name": "check_answer_status"}},
)
assert text == "" and reasons == ["stop"], (text, reasons)
assert len(calls) == 1 and calls[0]["id"] and calls[0]["name"] == "check_answer_status", calls
assert calls[0]["arguments"] == whole.function.arguments, (calls, whole)
check("streamed forced call")

text, calls, reasons = stream("What is the weather in Lima?", tools=[CHECK, WEATHER], tool_choice="required")
assert len(calls) == 1 and calls[0]["name"] in ("check_answer_status", "get_weather"), calls
json.loads(calls[0]["arguments"])
assert reasons == ["tool_calls"], reasons
check("streamed required call")

text, calls, reasons = stream(
    "Describe a person as JSON.",
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
)
is_person(json.loads(text))
assert calls == [] and reasons == ["stop"], (calls, reasons)
check("streamed json_schema")

# vLLM's guided fields on the completions endpoint.
completion = client.completions.create(
    model=MODEL,
    prompt="The capital of France is",
    max_tokens=16,
    temperature=0,
    extra_body={"guided_regex": " [A-Z][a-z]+\\."},
)
assert re.fullmatch(r" [A-Z][a-z]+\.", completion.choices[0].text), completion.choices[0].text
check("completions guided_regex")

# Bad input is refused by name, in OpenAI's error shape.
for kw, named in [
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}}, "constraint"),
]:
    try:
        ask("hi", **kw)
    except openai.BadRequestError as e:
        assert named in e.message, (named, e.message)
    else:
        raise AssertionError(f"{kw} was not refused")
check("bad requests refused by name")

# Streamed too: the engine refuses the grammar before the stream starts.
try:
    stream("hi", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}})
except openai.BadRequestError as e:
    assert "constraint" in e.message, e.message
else:
    raise AssertionError("a streamed request with a bad grammar was not refused")
check("a streamed bad grammar refused before the stream")

try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
except openai.AuthenticationError:
    check("a wrong key refused")
else:
    raise AssertionError("a wrong key was accepted")
