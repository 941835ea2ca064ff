//! StableToolBench's response cache read unchanged: every entry of a cache written by
//! Python as StableToolBench's server writes one (scripts/make_cache_fixture.py) is found
//! from the call as a query's `api_list` names it, through the same request fields the
//! environment sends; a folder of another shape is an error naming it.

use std::path::{Path, PathBuf};

use serde_json::Value;
use umi_core::env::{ApiCall, ToolBackend};
use umi_core::tool::ApiSpec;
use umi_tools::cache::{Lookup, ResponseCache};
use umi_tools::simulator::Simulator;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn call_of(case: &Value) -> ApiCall {
    let api = ApiSpec {
        category_name: case["category"].as_str().unwrap().into(),
        tool_name: case["tool"].as_str().unwrap().into(),
        api_name: case["api"].as_str().unwrap().into(),
        api_description: None,
        required_parameters: vec![],
        optional_parameters: vec![],
        method: None,
    };
    ApiCall {
        category: api.category_name.clone(),
        tool_name: api.standard_tool_name(),
        api_name: api.pure_api_name(),
        tool_input: case["input"].as_str().unwrap().into(),
        function: api.function_name(),
    }
}

#[test]
fn every_entry_is_found_by_its_tool_input() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let cache = ResponseCache::open(&fixtures().join("stb-cache")).unwrap();
    assert_eq!(cache.files(), 3);
    for case in cases.as_array().unwrap() {
        let call = call_of(case);
        assert_eq!(
            cache.lookup(&call),
            Lookup::Hit(case["reply"].clone()),
            "{case}: looked in {}",
            cache.file_of(&call).display()
        );
    }
    // Another input of a cached API, and an input that is not JSON.
    let mut call = call_of(&cases[0]);
    call.tool_input = r#"{"country": "de"}"#.into();
    assert_eq!(cache.lookup(&call), Lookup::Miss);
    call.tool_input = "country=de".into();
    assert_eq!(cache.lookup(&call), Lookup::BadInput);
}

#[test]
fn the_simulator_answers_from_the_cache_and_counts_hits_and_misses() {
    let cases: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("stb-cache.expected.json")).unwrap())
            .unwrap();
    let mut sim = Simulator::new();
    sim.add_cache(ResponseCache::open(&fixtures().join("stb-cache")).unwrap());
    let reply = sim.answer(&call_of(&cases[1]));
    assert_eq!(
        reply.response,
        cases[1]["reply"]["response"].as_str().unwrap()
    );
    let mut miss = call_of(&cases[1]);
    miss.tool_input = r#"{"page": 9}"#.into();
    assert!(sim.answer(&miss).error.starts_with("No recorded response"));
    assert_eq!(
        sim.report().unwrap(),
        "tool calls: 1 from the response cache, 0 from recorded answers, 1 without a recorded response"
    );
}

#[test]
fn a_folder_of_another_shape_is_an_error_naming_it() {
    let dir = fixtures().join("tiny-llama-sharded");
    let err = ResponseCache::open(&dir).err().unwrap().to_string();
    assert!(err.contains("tiny-llama-sharded"), "{err}");
    assert!(
        err.contains("not a StableToolBench tool response cache"),
        "{err}"
    );
    assert!(!ResponseCache::looks_like_cache(
        &fixtures().join("../../data/toolbench-real")
    ));
}
