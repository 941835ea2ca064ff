//! ToolLLaMA's prompt and parser against the reference's own `ToolLLaMA.parse`
//! (tests/fixtures/toolbench-agents/toolllama-prompts.json, written by
//! scripts/make_toolbench_agents_fixture.py): on 15 conversations of ToolBench searches
//! (real system messages and function lists, `null` contents, spent retry prompts), the
//! prompt it builds byte for byte, and the message it parses from a prediction.

use std::path::Path;

use serde_json::Value;
use umi_core::agent::Message;
use umi_core::toolbench::{react_parser, toolllama_prompt, toolllama_turns};

#[test]
fn toolllama_prompts_and_parses_as_the_reference_does() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/toolbench-agents/toolllama-prompts.json");
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(cases.len(), 15);
    let mut nulls = 0;
    for (i, case) in cases.iter().enumerate() {
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        nulls += messages.iter().filter(|m| m.content.is_none()).count();
        let functions = case["functions"].as_array().unwrap();
        let turns = toolllama_turns(&messages).unwrap();
        assert_eq!(
            toolllama_prompt(&turns, functions),
            case["prompt"].as_str().unwrap(),
            "case {i}: the prompt"
        );
        let (thought, name, arguments) = react_parser(case["prediction"].as_str().unwrap());
        let expected = &case["message"];
        assert_eq!(thought, expected["content"].as_str().unwrap(), "case {i}");
        assert_eq!(name, expected["function_call"]["name"].as_str().unwrap());
        assert_eq!(
            arguments,
            expected["function_call"]["arguments"].as_str().unwrap()
        );
    }
    assert!(nulls > 0, "no conversation with a null content");
}

#[test]
fn a_role_toolllamas_template_lacks_is_refused_by_name() {
    let err = toolllama_turns(&[Message::observation("f", "o")]).unwrap_err();
    assert!(err.to_string().contains("\"observation\""), "{err}");
}
