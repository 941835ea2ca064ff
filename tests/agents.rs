//! The reference runner's other agents through `umi run`: `openai-functions` walking the
//! recorded ChatGPT searches of `data/toolbench-real` again (a scripted chat endpoint
//! replays each recorded reply, the recorded observations answer the calls) and writing
//! the very answer files upstream ToolBench wrote; `toolllama` with the bundled model
//! end to end (it solves nothing: the machinery is what is tested), its answer files in
//! the shape ToolBench's converter reads.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::procs::{queries, worker};
use support::tree_chat::TreeChat;
use support::umi;

fn root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_gz(path: &Path) -> Value {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_reader(flate2::read::GzDecoder::new(file))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn answer_files(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let id = name.split('_').next().unwrap().to_string();
            (id, read(&f))
        })
        .collect()
}

/// The first place two JSON values differ (a JSON pointer), if any.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let xs: Vec<&String> = x.keys().collect();
            let ys: Vec<&String> = y.keys().collect();
            if xs != ys {
                return Some(format!("{at}: keys {xs:?} vs {ys:?}"));
            }
            x.iter()
                .find_map(|(k, v)| first_difference(v, &y[k], &format!("{at}/{k}")))
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: {} vs {} elements", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

/// A tools folder describing each tool as the recorded system messages list them
/// (`k.<tool>: <description>`), for the system message umi writes.
fn tools_folder_from(recorded: &[(String, Value)], dir: &Path) {
    let folder = dir.join("Recorded");
    std::fs::create_dir_all(&folder).unwrap();
    for (_, answer) in recorded {
        let Some(system) = answer
            .pointer("/answer_generation/train_messages/0/0/content")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let tools = system
            .split("You have access of the following tools:\n")
            .nth(1)
            .unwrap();
        for line in tools.split('\n').filter(|l| !l.is_empty()) {
            let (_, entry) = line.split_once('.').unwrap();
            let (name, description) = entry.split_once(": ").unwrap();
            let tool = json!({"tool_name": name, "tool_description": description});
            std::fs::write(folder.join(format!("{name}.json")), tool.to_string()).unwrap();
        }
    }
}

/// Whether `written` is `expected` up to the reference's random draw of the reported
/// give-up (`give_up_choices`: each one it could have drawn); the first difference if not.
fn differs(written: &Value, expected: &Value) -> Option<String> {
    let mut expected = expected.clone();
    let choices = expected.as_object_mut().unwrap().remove("give_up_choices");
    if let Some(choices) = choices {
        let generation = &written["answer_generation"];
        let drawn = json!([generation["final_answer"], generation["train_messages"]]);
        if !choices.as_array().unwrap().contains(&drawn) {
            return Some("the reported give-up is none the reference could draw".into());
        }
        expected["answer_generation"]["final_answer"] = drawn[0].clone();
        expected["answer_generation"]["train_messages"] = drawn[1].clone();
    }
    first_difference(written, &expected, "")
}

/// The recorded ChatGPT searches, replayed through `umi run --agent openai-functions`,
/// give the answer files upstream ToolBench's own search writes on the same replies and
/// observations (`scripts/make_toolbench_agents_fixture.py` ran it): the same trees,
/// messages, observations and outcomes, every field.
#[test]
fn openai_functions_searches_as_toolbench_does_on_recorded_chatgpt_replies() {
    for group in ["G1", "G2", "G3"] {
        let recordings = root(&format!("data/toolbench-real/answer/{group}_answer"));
        let recorded = answer_files(&recordings);
        let answers: Vec<Value> = recorded.iter().map(|(_, a)| a.clone()).collect();
        let chat = TreeChat::start(&answers);
        let dir = tempfile::tempdir().unwrap();
        tools_folder_from(&recorded, &dir.path().join("tools"));
        let out = dir.path().join("out");
        let output = umi()
            .args([
                "run",
                "--agent",
                "openai-functions",
                "--openai-model",
                "replayed",
            ])
            .arg("--planner-endpoint")
            .arg(format!("openai+{}", chat.base))
            .arg("--queries")
            .arg(&recordings)
            .arg("--record")
            .arg(&recordings)
            .arg("--tools-folder")
            .arg(dir.path().join("tools"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{group}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for (id, _) in &recorded {
            let name = format!("{id}_DFS_woFilter_w2.json");
            let written = read(&out.join(&name));
            let expected = read_gz(&root(&format!(
                "tests/fixtures/toolbench-agents/{group}/{name}.gz"
            )));
            if let Some(diff) = differs(&written, &expected) {
                let diff: String = diff.chars().take(600).collect();
                panic!("{group}/{id}: umi's answer file differs from ToolBench's at {diff}");
            }
        }
        assert!(chat.served() > 0);
    }
}

/// Those answer files read by StableToolBench's converter (the pass rate's input), and by
/// umi's (`umi eval pass-rate`): the same steps, final answers and query for each.
#[test]
fn stabletoolbenchs_converter_and_umis_read_toolbench_agents_answer_files_alike() {
    for group in ["G1", "G2", "G3"] {
        let fixtures = root("tests/fixtures/toolbench-agents");
        let converted = read_gz(&fixtures.join(format!("{group}.converted.json.gz")));
        let converted = converted.as_object().unwrap();
        assert_eq!(converted.len(), 5, "{group}");
        for (id, expected) in converted {
            let answer = read_gz(&fixtures.join(format!("{group}/{id}_DFS_woFilter_w2.json.gz")));
            let ours = umi_core::pass_rate::convert(&answer, "DFS_woFilter_w2");
            assert_eq!(
                ours.query,
                expected["query"].as_str().unwrap(),
                "{group}/{id}"
            );
            // Key order aside (the fixture's keys are sorted).
            if ours.answer != expected["answer"] {
                let diff = first_difference(&ours.answer, &expected["answer"], "");
                panic!("{group}/{id}: umi's conversion differs from StableToolBench's: {diff:?}");
            }
        }
    }
}

/// Greedy and short, so the bundled model runs a search in seconds.
const GREEDY: [&str; 8] = [
    "--dtype",
    "quantized",
    "--temperature",
    "0",
    "--max-new-tokens",
    "16",
    "--max-steps",
    "3",
];

/// `umi run --agent toolllama` with the bundled model, in process and with the planner's
/// model on a worker (a single-model agent uses that role's workers alone): the same
/// answer files, in upstream ToolBench's shape (no α-UMi template names; steps of Thought,
/// Action and Action Input nodes; observations as ToolBench's service writes them).
#[test]
fn toolllama_runs_the_bundled_model_in_process_and_on_a_planner_worker_alike() {
    let dir = tempfile::tempdir().unwrap();
    let q = queries(dir.path(), 1);
    let run = |out: &Path, endpoint: &[&str]| {
        let output = umi()
            .args(["run", "--agent", "toolllama", "--queries"])
            .arg(&q)
            .args(GREEDY)
            .args(endpoint)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
    };
    let local = dir.path().join("local");
    run(&local, &[]);
    let (_worker, address) = worker("planner", None);
    let remote = dir.path().join("remote");
    run(&remote, &["--planner-endpoint", &address]);
    let (l, r) = (
        read(&local.join("1_DFS_woFilter_w2.json")),
        read(&remote.join("1_DFS_woFilter_w2.json")),
    );
    assert_eq!(
        l, r,
        "the worker's answer file differs from the in-process one"
    );
    assert!(l.get("failure").is_none(), "{}", l["failure"]);
    assert!(l["forward_args"].get("prompt_type").is_none());
    assert_eq!(l["answer_generation"]["query_count"], 3);
    let step = &l["tree"]["tree"]["children"][0];
    assert_eq!(step["node_type"], "Thought");
    assert_eq!(step["children"][0]["node_type"], "Action");
    let input = &step["children"][0]["children"][0];
    assert_eq!(input["node_type"], "Action Input");
    // Upstream ToolBench's observation: the service's whole reply (`error`, then
    // `response`), or Finish's own text; perhaps cut at 1024 characters.
    let observation = input["observation"].as_str().unwrap();
    assert!(
        observation.starts_with("{\"error\": ") || observation.starts_with("{\"response\":"),
        "{observation}"
    );
}

/// `umi run --agent openai-functions` with the bundled model behind a worker's
/// OpenAI-compatible endpoint (which lists the functions in the prompt and reads calls
/// back): the search runs end to end; each step's conversation starts with ToolBench's
/// system and user messages.
#[test]
fn openai_functions_runs_the_bundled_model_through_a_workers_chat_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let q = queries(dir.path(), 1);
    let listen = format!("127.0.0.1:{}", support::procs::free_port());
    let mut cmd = support::procs::worker_command("planner", None);
    cmd.args(["--openai-listen", &listen]);
    let (_worker, _) = support::procs::start_worker(&mut cmd);
    let out = dir.path().join("out");
    let output = umi()
        .args(["run", "--agent", "openai-functions", "--queries"])
        .arg(&q)
        .arg("--planner-endpoint")
        .arg(format!("openai+http://{listen}/v1"))
        .args(["--max-new-tokens", "24", "--max-steps", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let answer = read(&out.join("1_DFS_woFilter_w2.json"));
    assert!(answer.get("failure").is_none(), "{}", answer["failure"]);
    assert_eq!(answer["answer_generation"]["query_count"], 3);
    assert!(answer["forward_args"].get("prompt_type").is_none());
    let first = &answer["tree"]["tree"]["children"][0];
    assert!(
        ["Thought", "Action"].contains(&first["node_type"].as_str().unwrap()),
        "{first}"
    );
}

/// openai-functions calls a chat endpoint that calls functions: without one it is
/// refused before anything runs, saying what to give.
#[test]
fn openai_functions_without_an_openai_endpoint_is_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let output = umi()
        .args(["run", "--agent", "openai-functions", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--planner-endpoint openai+http"),
        "{stderr}"
    );
    // And α-UMi's answer format is no format for ToolBench's messages.
    let output = umi()
        .args([
            "run",
            "--agent",
            "toolllama",
            "--answer-format",
            "alpha-umi",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--answer-format alpha-umi"), "{stderr}");
}
