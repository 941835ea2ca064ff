//! The offline simulator on ToolBench's real answer files: calls recorded by a live DFSDT
//! run replay their recorded responses through the tool environment.

use umi_core::env::ToolEnv;
use umi_core::tool::ApiSpec;
use umi_tools::simulator::Simulator;

#[tokio::test]
async fn recorded_toolbench_calls_replay() {
    let mut sim = Simulator::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/toolbench-real/answer/G1_answer");
    let mut added = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        added += sim.add_answer_file(&v);
    }
    assert!(added >= 10, "{added}");
    // G1 answer 10 called transitaires_for_transitaires with {} against the live service.
    let api: ApiSpec = serde_json::from_value(serde_json::json!({
        "category_name": "Logistics", "tool_name": "Transitaires", "api_name": "Transitaires",
        "api_description": "", "required_parameters": [], "optional_parameters": [], "method": "GET"
    }))
    .unwrap();
    let env = ToolEnv::new(vec![api], &sim);
    let (obs, status) = env.step("transitaires_for_transitaires", "{}").await;
    assert_eq!(status, 0);
    assert!(obs.starts_with("\"[{\\\"id\\\":\\\"EKVF\\\""), "{obs}");
    // The recording was itself cut; what survived is replayed, JSON-quoted.
    assert!(
        obs.contains("ACT - Agence Cal\\u00e9donienne de Transit"),
        "{obs}"
    );
    assert!(obs.chars().count() <= 1027);
    let (obs, _) = env
        .step("transitaires_for_transitaires", "{\"page\": 2}")
        .await;
    assert!(
        obs.contains("No recorded response for transitaires_for_transitaires"),
        "{obs}"
    );
}
