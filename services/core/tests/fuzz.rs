//! Property tests over every parser of untrusted text in the core: model outputs (the
//! real-time clean-up, the planner cut, the action parser, the evaluator's parser, the
//! collab parser, the lenient JSON reader), query files, answer files read back, Python
//! literals, and static test files. Any input:
//! no panic. `scripts/fuzz.sh` runs them with a million cases each
//! (`PROPTEST_CASES=1000000`); CI runs the default 256.

use proptest::prelude::*;
use umi_core::agent::collab_parse;
use umi_core::parse::{
    cut_planner, lenient_json_object, parse_action, parse_backbone_output, parse_output,
    postprocess, realtime_output, realtime_planner,
};
use umi_core::static_eval::parse_records;
use umi_core::task::Query;

/// Text that looks like model output often enough to reach deep branches: markers,
/// braces, quotes and escapes mixed with anything.
fn model_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Next: caller.".to_string()),
        Just("Next: conclusion.".to_string()),
        Just("Next: give up.".to_string()),
        Just("</s>".to_string()),
        Just("caller: ".to_string()),
        Just("conclusion: ".to_string()),
        Just("Action: ".to_string()),
        Just("Action Input: ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\n".to_string()),
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn model_output_parsers_never_panic(text in model_text()) {
        let _ = postprocess(&text);
        let _ = realtime_planner(&text);
        let _ = realtime_output(&text);
        let _ = cut_planner(&text, " Next: caller.");
        let _ = parse_action(&text);
        let _ = lenient_json_object(&text);
        let _ = parse_output(&text);
        let _ = parse_backbone_output(&text);
        let _ = collab_parse(&text);
    }

    #[test]
    fn query_and_static_readers_never_panic(text in model_text()) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = Query::from_json(0, &value);
        }
        let _ = parse_records(&text);
        let _ = parse_records(&format!("[{text}]"));
    }

    #[test]
    fn query_entries_with_any_fields_never_panic(
        id in prop_oneof![any::<i64>().prop_map(|n| serde_json::json!(n)), any::<String>().prop_map(serde_json::Value::from), Just(serde_json::Value::Null)],
        query in any::<String>(),
        tool in any::<String>(),
        params in model_text(),
    ) {
        let value = serde_json::json!({
            "query_id": id,
            "query": query,
            "api_list": [{
                "category_name": tool, "tool_name": tool, "api_name": query,
                "required_parameters": serde_json::from_str::<serde_json::Value>(&params).unwrap_or(serde_json::json!([])),
                "optional_parameters": [],
            }],
        });
        if let Ok(q) = Query::from_json(0, &value) {
            for api in &q.apis {
                let _ = api.doc();
                let _ = api.function_name();
            }
        }
    }

    /// Answer files are read back (`umi run --queries DIR`, the pass-rate converter) and
    /// cache keys written with Python's `str()`: any JSON, no panic.
    #[test]
    fn answer_files_and_python_literals_never_panic(text in model_text()) {
        let _ = umi_core::pyjson::strip(&text);
        let value = serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|_| serde_json::json!({"answer_generation": {"query": text, "function": [text]}}));
        let _ = umi_core::pyjson::repr(&value);
        let _ = umi_core::pyjson::dumps(&value);
        let _ = umi_core::pass_rate::convert(&value, "DFS_woFilter_w2");
        let _ = umi_core::pass_rate::convert(&value, "CoT@1");
        let _ = Query::from_answer_file("1", &value);
    }
}
