#!/usr/bin/env python3
"""Regenerates tests/fixtures/stb-tools/ and tests/fixtures/stb-server.expected.json by
running StableToolBench's own server code (`server/main.py`, `server/utils.py`, read from
a StableToolBench checkout or git directory, never copied into umi) on fixtures:

- stb-tools/ is a tools folder in ToolBench's `toolenv/tools` layout
  (`<standard_category>/<tool>.json` with `tool_description` and `api_list`), with the
  cases its server treats specially: two APIs of one standardized name, an API it cannot
  match, a tool file lacking a key, a tool file that is not JSON, a tool named `…_for_…`.
- `prompts`: for calls of those tools (and of tools the folder lacks), the user message its
  `get_virtual_response` sends to the simulating model (`API Documentation:{api_doc}…`),
  once with `tools_folder` pointing at stb-tools/ and once at a folder that does not exist;
  its response cache is tests/fixtures/stb-cache/ (the examples).
- `order`: calls answered from the cache, by the real API (`toolbench_url`), or simulated
  when the real API fails; each with the requests the real API got, how many times the
  model was asked (and its first request), the reply, and the cache entry the server
  saved.
- `check_result`: its verdict on real-API replies (usable, or fall through to simulation).
- `retry_sleeps`: the waits between its simulation tries when the model answers garbage.

The server's web framework, rate limiter and OpenAI client are stand-ins (modules it
imports but this run never uses as such); `requests.post` and the OpenAI client answer as
each case says. Needs Python 3 with pydantic and PyYAML.

    python3 scripts/make_server_fixture.py --reference PATH_TO_StableToolBench
"""
import argparse
import contextlib
import importlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tests/fixtures/stb-tools"
CACHE = ROOT / "tests/fixtures/stb-cache"
EXPECTED = ROOT / "tests/fixtures/stb-server.expected.json"

# The tools folder: file path under stb-tools/ -> content (a dict, or raw text).
TOOL_FILES = {
    "News_Media/daily_news_api_v2.json": {
        "tool_description": "Headlines d'aujourd'hui \u2014 \"live\", from 30 sources",
        "tool_name": "Daily News-API (v2)",
        "title": "Daily News-API (v2)",
        "api_list": [
            {
                "name": "Top Headlines",
                "url": "https://daily-news.p.rapidapi.com/top",
                "description": "Today's top headlines for a country",
                "method": "GET",
                "required_parameters": [],
                "optional_parameters": [{"name": "country", "type": "STRING", "description": "", "default": "us"}],
            },
            # The same standardized name: both are shown.
            {"name": "top-headlines", "description": None, "method": "GET"},
            {"name": "Search", "description": "Search the news", "method": "GET"},
        ],
        "standardized_name": "daily_news_api_v2",
    },
    # `id` reaches the server as `is_id` (change_name), which no api_list name matches.
    "Data/get_3d_models.json": {
        "tool_description": "3D models, searchable",
        "api_list": [{"name": "id", "description": "A model by id"}],
    },
    # A matching API without `description`: the server falls back to the empty document.
    "Artificial_Intelligence_Machine_Learning/text_tools.json": {
        "tool_description": "Text utilities",
        "api_list": [{"name": "Detect", "description": "Detects the language"}, {"name": "Translate/Text"}],
    },
    # The server looks a tool up by its name before the first `_for_`.
    "Education/words.json": {
        "tool_description": "Words for children",
        "api_list": [{"name": "Random Word", "description": "One random word", "extra": [1, 2.5]}],
    },
    "Education/spelling.json": "{not json",
    "Education/quiz.json": {"api_list": [{"name": "Question", "description": "A question"}]},
}

# (category, tool, api, input) as a query's api_list names them; the server receives
# the tool and API standardized as ToolBench's client sends them.
PROMPT_CALLS = [
    ("News, Media", "Daily News-API (v2)", "Top Headlines", '{"country": "de"}'),
    ("News, Media", "Daily News-API (v2)", "Search", '{"q": "caf\\u00e9", "n": 1.5}'),
    ("News, Media", "Daily News-API (v2)", "Archive", '{}'),
    ("Data", "3D Models", "id", '{"q": "cube"}'),
    ("Artificial Intelligence/Machine Learning", "Text Tools", "Translate/Text", '{"text": "x"}'),
    ("Artificial Intelligence/Machine Learning", "Text Tools", "Detect", ''),
    ("Education", "Words_for_Kids", "Random Word", '{"len": 5}'),
    ("Education", "Spelling", "Check", '{"w": "x"}'),
    ("Education", "Quiz", "Question", '{}'),
    ("Data", "Weather Now", "Current", '{"city": "Paris"}'),
    ("Travel", "Flights", "Search", '{"from": "CDG", "direct": true, "max": null}'),
]

GOOD_ANSWER = '{"error": "", "response": "invented"}'

# Order cases: (name, call, real API answer (status, body text), model answers).
ORDER_CASES = [
    ("cached", ("News, Media", "Daily News-API (v2)", "Top Headlines", '{}'), (200, '{"error": "", "response": "real"}'), [GOOD_ANSWER]),
    ("real", ("News, Media", "Daily News-API (v2)", "Top Headlines", '{"country": "it"}'),
     (200, '{"error": "", "response": {"articles": [{"title": "Ciao", "n": 1}]}}'), [GOOD_ANSWER]),
    ("real_rate_limited", ("News, Media", "Daily News-API (v2)", "Top Headlines", '{"country": "es"}'),
     (200, '{"error": "", "response": "Rate limit per minute error..."}'), [GOOD_ANSWER]),
    ("real_error_field", ("News, Media", "Daily News-API (v2)", "Top Headlines", '{"country": "pt"}'),
     (200, '{"error": "Unsubscribed error...", "response": ""}'), [GOOD_ANSWER]),
    ("real_http_500", ("Data", "3D Models", "id", '{"q": "ball"}'), (500, 'Internal Server Error'), ["```json\n" + GOOD_ANSWER + "\n```"]),
    ("model_retried", ("Data", "3D Models", "id", '{"q": "cone"}'), (503, ''), ["no json here", GOOD_ANSWER]),
    ("model_garbage", ("Data", "3D Models", "id", '{"q": "torus"}'), (503, ''), ["no json", "still {no", "nope"]),
]

# Real-API replies for check_result.
CHECK_RESULT = [
    {"error": "", "response": "fine"},
    {"error": "", "response": {"data": [1, 2]}},
    {"error": "", "response": None},
    {"error": "", "response": ""},
    {"error": "", "response": []},
    {"error": None, "response": "fine"},
    {"error": "x", "response": "fine"},
    {"response": "fine"},
    {"error": ""},
    {"error": "", "response": "Rate limit per minute error..."},
    {"error": "", "response": "The request timed out"},
    {"error": "", "response": "request time out"},
    {"error": "", "response": "This endpoint does not exist"},
    {"error": "", "response": "code 404"},
    {"error": "", "response": {"status": 504}},
    {"error": "", "response": "HTTP 500"},
    {"error": "", "response": "Internal Error"},
    {"error": "", "response": {"message": "API doesn't exists"}},
    {"error": "", "response": "API doesn't exists"},
    {"error": "", "response": "Service Not Found"},
    {"error": "", "response": "service not found"},
    {"error": "", "response": "You are not Authorized"},
    {"error": "", "response": "Authentication failed"},
    {"error": "", "response": "blocked"},
    {"error": "", "response": "You are unsubscribed"},
    {"error": "", "response": "error 401"},
    {"error": "", "response": "error 403"},
    {"error": "", "response": "bad credentials"},
    {"error": "", "response": "disabled for your subscription"},
    {"error": "", "response": "ACCESS_DENIED"},
    {"error": "", "response": "access_denied"},
    {"error": "", "response": "Invalid Consumer Key"},
    {"error": "", "response": "missing Parameter q"},
    {"error": "", "response": "could not parse"},
    {"error": "", "response": "x is not defined"},
    {"error": "", "response": "f() got an unexpected keyword argument 'q' (parameter)"},
    {"error": "", "response": "status_code=502"},
    {"error": "", "response": "status_code=429"},
    {"error": "", "response": "STATUS_CODE=500"},
    {"error": "", "response": True},
    {"error": "", "response": 0},
    {"error": "", "response": 1.5e16},
    {"error": "", "response": "Caf\u00e9 R\u00c9SULTAT 5000 points"},
]


def reference_sources(path):
    """main.py and utils.py of the reference, and its commit when known."""
    path = pathlib.Path(path)
    if (path / "server/main.py").is_file():
        files = {n: (path / "server" / n).read_text() for n in ("main.py", "utils.py")}
        commit = None
        with contextlib.suppress(Exception):
            commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        return files, commit
    git = ["git", "--git-dir", str(path)]
    files = {n: subprocess.run(git + ["show", f"HEAD:server/{n}"], capture_output=True, text=True, check=True).stdout
             for n in ("main.py", "utils.py")}
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return files, commit


class Stand:
    """What the stand-in network answers, and what it was asked."""
    real = (500, "")
    answers = []
    real_requests = []
    model_requests = []
    sleeps = []


def install_stand_ins():
    def stub(name, **attrs):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module

    class FastAPI:
        def __init__(self):
            self.state = types.SimpleNamespace()

        def add_exception_handler(self, *args):
            pass

        def post(self, _path):
            return lambda f: f

    class Completions:
        def create(self, **kwargs):
            Stand.model_requests.append(kwargs)
            content = Stand.answers.pop(0)
            message = types.SimpleNamespace(content=content)
            return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)])

    class OpenAI:
        def __init__(self, api_key=None, base_url=None):
            self.chat = types.SimpleNamespace(completions=Completions())

    stub("fastapi", FastAPI=FastAPI)
    stub("fastapi.requests", Request=object)
    stub("slowapi", Limiter=lambda key_func=None: None, _rate_limit_exceeded_handler=None)
    stub("slowapi.errors", RateLimitExceeded=Exception)
    stub("slowapi.util", get_remote_address=None)
    stub("uvicorn", run=None)
    stub("tenacity", retry=lambda **k: (lambda f: f), wait_random_exponential=lambda **k: None,
         stop_after_attempt=lambda n: None)
    stub("openai", OpenAI=OpenAI)


class FakeResponse:
    def __init__(self, status, text):
        self.status_code = status
        self.text = text

    def json(self):
        return json.loads(self.text)


def fake_post(url, headers=None, data=None, **kwargs):
    Stand.real_requests.append({"url": url, "headers": headers, "body": json.loads(data)})
    return FakeResponse(*Stand.real)


def write_tools():
    shutil.rmtree(TOOLS, ignore_errors=True)
    for rel, content in TOOL_FILES.items():
        path = TOOLS / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content, indent=4, ensure_ascii=False)
        path.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True,
                        help="a StableToolBench checkout, or its git directory (HEAD is read)")
    args = parser.parse_args()
    sources, commit = reference_sources(args.reference)
    write_tools()

    work = pathlib.Path(tempfile.mkdtemp(prefix="stb-server-"))
    for name, text in sources.items():
        (work / name).write_text(text)
    cache = work / "tool_response_cache"
    shutil.copytree(CACHE, cache)
    (work / "config.yml").write_text(json.dumps({
        "api_key": "sk-test", "api_base": "http://model.invalid/v1", "model": "gpt-4-turbo",
        "temperature": 0, "toolbench_url": "http://real.invalid/rapidapi",
        "tools_folder": str(TOOLS), "cache_folder": str(cache), "is_save": False,
        "port": 8080, "log_file": str(work / "server.log"),
    }))
    install_stand_ins()
    os.chdir(work)
    sys.path.insert(0, str(work))
    with contextlib.redirect_stdout(io.StringIO()):
        server = importlib.import_module("main")
    import requests
    requests.post = fake_post
    server.time.sleep = lambda s: Stand.sleeps.append(s)

    def call(category, tool, api, tool_input):
        info = server.Info(category=category, tool_name=server.standardize(tool),
                           api_name=server.change_name(server.standardize(api)),
                           tool_input=tool_input, strip="", toolbench_key="KEY")
        Stand.real_requests, Stand.model_requests, Stand.sleeps = [], [], []
        with contextlib.redirect_stdout(io.StringIO()):
            reply = server.get_virtual_response(None, info)
        return info, reply

    def call_json(info):
        return {"category": info.category, "tool_name": info.tool_name, "api_name": info.api_name,
                "tool_input": info.tool_input}

    prompts = []
    system_prompt = None
    for folder in (True, False):
        server.CONFIG["tools_folder"] = str(TOOLS) if folder else str(work / "tools")
        for c in PROMPT_CALLS:
            Stand.real, Stand.answers = (500, ""), [GOOD_ANSWER]
            info, _ = call(*c)
            [request] = Stand.model_requests
            system_prompt = request["messages"][0]["content"]
            prompts.append({"call": call_json(info), "tools_folder": folder,
                            "user_prompt": request["messages"][1]["content"]})

    order = []
    server.CONFIG["tools_folder"] = str(TOOLS)
    server.CONFIG["is_save"] = True
    for name, c, real, answers in ORDER_CASES:
        Stand.real, Stand.answers = real, list(answers)
        info, reply = call(*c)
        tool_name, category, api_name, _ = server.prepare_tool_name_and_url(info)
        key = str(json.loads(info.tool_input) if info.tool_input else {})
        file = cache / category / tool_name / (server.standardize(api_name) + ".json")
        saved = json.load(open(file)).get(key) if file.exists() else None
        order.append({"case": name, "call": call_json(info),
                      "real": {"status": real[0], "body": real[1]},
                      "model_answers": answers,
                      "real_requests": Stand.real_requests, "model_requests": len(Stand.model_requests),
                      "first_model_request": Stand.model_requests[0] if Stand.model_requests else None,
                      "sleeps": Stand.sleeps, "reply": reply, "saved": saved})

    retry_sleeps = next(o["sleeps"] for o in order if o["case"] == "model_garbage")
    expected = {
        "reference": {"repository": "THUNLP-MT/StableToolBench", "commit": commit,
                      "files": ["server/main.py", "server/utils.py"]},
        "system_prompt": system_prompt,
        "prompts": prompts,
        "order": order,
        "check_result": [{"reply": r, "usable": server.check_result(r)} for r in CHECK_RESULT],
        "retry_sleeps": retry_sleeps,
    }
    EXPECTED.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{len(prompts)} prompts, {len(order)} order cases, {len(CHECK_RESULT)} verdicts -> {EXPECTED}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
