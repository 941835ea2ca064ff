//! Real-time fidelity against the reference (ToolBench-multiLLM): the tool docs and
//! function specs of every real API, byte for byte against a fixture written in Python
//! from the reference's rules; and `umi run --roles replay` solving the recorded ToolBench
//! queries end to end, its answer files shaped as α-UMi's ToolEval converter reads them.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::replay;
use umi_core::pyjson;
use umi_core::tool::ApiSpec;

fn root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Pins `api_json_to_openai_json` (scripts/make_tooldoc_fixture.py): the model-facing doc
/// and the answer file's function spec of each of the 61 APIs of the real query files.
#[test]
fn tool_docs_and_function_specs_match_the_reference_for_every_real_api() {
    let cases = read(&root("tests/fixtures/tool-docs.expected.json"));
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 61);
    for case in cases {
        let api: ApiSpec = serde_json::from_value(case["api"].clone()).unwrap();
        let at = format!(
            "{} query {} API {}",
            case["file"], case["query_id"], api.api_name
        );
        assert_eq!(
            api.doc().render(),
            case["doc"].as_str().unwrap(),
            "doc of {at}"
        );
        assert_eq!(
            pyjson::dumps(&api.function_spec()),
            case["function"].as_str().unwrap(),
            "function spec of {at}"
        );
    }
}

/// The recorded outcome of a ToolBench answer file: the final answer text, if any.
fn recorded_answer(file: &Path) -> (bool, Option<String>) {
    let v = read(file);
    let generation = &v["answer_generation"];
    let valid = generation["valid_data"].as_bool().unwrap();
    let answer = (generation["finish_type"] == "give_answer" && valid).then(|| {
        let args: Value =
            serde_json::from_str(generation["final_answer"].as_str().unwrap()).unwrap();
        args["final_answer"].as_str().unwrap().to_string()
    });
    (valid, answer)
}

/// What `convert_to_answer_format.py::process_valid_data` needs of an answer file: the
/// last train conversation's roles all known (system, user, assistant, observation), each
/// assistant message a function call, each non-Finish call followed by its observation;
/// returns the tool steps it would list (from index 2 on, as it reads them).
fn converter_steps(answer: &Value) -> usize {
    let generation = &answer["answer_generation"];
    let conversation = generation["train_messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    let conversation = conversation.as_array().unwrap();
    let mut steps = 0;
    for (i, m) in conversation.iter().enumerate() {
        let role = m["role"].as_str().unwrap();
        assert!(
            ["system", "user", "assistant", "observation"].contains(&role),
            "Unkown role {role}"
        );
        if role != "assistant" {
            continue;
        }
        let call = &m["function_call"];
        assert!(call["name"].is_string() && call["arguments"].is_string());
        if call["name"] != "Finish" {
            let next = &conversation[i + 1];
            assert_eq!(next["role"], "observation");
            assert!(next["content"].is_string());
        }
        if i >= 2 {
            steps += 1;
        }
    }
    assert!(generation["function"].as_array().unwrap().len() >= 2);
    steps
}

#[test]
fn replay_solves_every_recorded_answer_and_writes_files_the_converter_reads() {
    for group in ["G1", "G2", "G3"] {
        let recordings = root(&format!("data/toolbench-real/answer/{group}_answer"));
        let out = tempfile::tempdir().unwrap();
        replay(&recordings, out.path(), &[]);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&recordings)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let id = file.file_name().unwrap().to_string_lossy();
            let id = id.split('_').next().unwrap();
            let answer = read(&out.path().join(format!("{id}_DFS_woFilter_w2.json")));
            let generation = &answer["answer_generation"];
            let (valid, recorded) = recorded_answer(&file);
            assert_eq!(
                generation["query"],
                read(&file)["answer_generation"]["query"]
            );
            match recorded {
                Some(text) => {
                    assert_eq!(answer["win"], true, "{group}/{id}");
                    assert_eq!(generation["valid_data"], true);
                    assert_eq!(generation["finish_type"], "give_answer");
                    let args: Value =
                        serde_json::from_str(generation["final_answer"].as_str().unwrap()).unwrap();
                    assert_eq!(args["return_type"], "give_answer");
                    assert_eq!(args["final_answer"].as_str().unwrap().trim(), text.trim());
                    assert!(converter_steps(&answer) >= 1, "{group}/{id}: no tool step");
                }
                None => {
                    // A recorded give-up (or no chain at all) replays as a give-up.
                    assert_eq!(answer["win"], false, "{group}/{id} (valid {valid})");
                    assert_eq!(generation["valid_data"], true);
                    assert_eq!(generation["finish_type"], "give_up");
                    converter_steps(&answer);
                }
            }
            // Every answer file: the reference's forward_args and tree fields.
            assert_eq!(
                answer["forward_args"]["prompt_type"],
                serde_json::json!({"planner": "toolbench_planner", "caller": "toolbench_caller", "summarizer": "toolbench_summarizer"})
            );
            assert_eq!(answer["tree"]["tree"]["expand_num"], 0);
        }
    }
}
