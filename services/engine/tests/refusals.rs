//! Both engines refuse the same requests the same way, when they are submitted: the
//! model engine on SmolLM2-135M and the simulated engine (its test double), behind the
//! one seam `TextEngine`. Each engine's queue takes no job at all (`max_queue: 0`), so a
//! request checked only after taking a queue slot would come back `Overloaded` instead.

mod common;

use common::{load, smollm2_gguf};
use umi_engine::{
    Engine, EngineConfig, EngineError, GenerateRequest, Prompt, SamplingParams, SimEngine,
    SimProfile, TextEngine, WeightDType,
};

fn engines() -> Vec<Box<dyn TextEngine>> {
    let config = EngineConfig {
        max_queue: 0,
        ..EngineConfig::default()
    };
    let model = load(smollm2_gguf(), WeightDType::Quantized).unwrap();
    vec![
        Box::new(Engine::start_with(model, config.clone())),
        Box::new(SimEngine::start(SimProfile::default(), config).unwrap()),
    ]
}

fn valid() -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: 8,
        script: Some("a scripted answer".into()),
        ..GenerateRequest::new(Prompt::Text("What is the capital of France?".into()))
    }
}

fn sampling(temperature: f64, top_p: Option<f64>, top_k: Option<usize>) -> GenerateRequest {
    GenerateRequest {
        sampling: SamplingParams {
            temperature,
            top_p,
            top_k,
            ..SamplingParams::default()
        },
        ..valid()
    }
}

fn stops(stop_strings: Vec<String>) -> GenerateRequest {
    GenerateRequest {
        stop_strings,
        ..valid()
    }
}

/// Each request the engines refuse, and the setting the refusal names.
fn refused() -> Vec<(&'static str, GenerateRequest)> {
    vec![
        ("temperature", sampling(-1.0, None, None)),
        ("temperature", sampling(f64::NAN, None, None)),
        ("temperature", sampling(f64::INFINITY, None, None)),
        ("temperature", sampling(1e-300, None, None)),
        ("top_p", sampling(0.7, Some(1.5), None)),
        ("top_p", sampling(0.7, Some(0.0), None)),
        ("top_k", sampling(0.7, None, Some(0))),
        ("stop_strings", stops(vec![String::new()])),
        ("stop_strings", stops(vec!["x".repeat(257)])),
        ("stop_strings", stops(vec!["stop".to_string(); 17])),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn both_engines_refuse_bad_settings_before_taking_a_queue_slot() {
    for engine in engines() {
        let kind = engine.kind();
        for (what, request) in refused() {
            let label = format!("{kind}: {request:?}");
            match engine.generate(request.clone()).await {
                Err(EngineError::InvalidArgument { what: got, .. }) => {
                    assert_eq!(got, what, "{label}")
                }
                other => panic!("{label}: generate gave {other:?}, not a refusal of {what}"),
            }
            match engine.stream(request) {
                Err(EngineError::InvalidArgument { what: got, .. }) => {
                    assert_eq!(got, what, "{label}")
                }
                Err(e) => panic!("{label}: stream gave {e:?}, not a refusal of {what}"),
                Ok(_) => panic!("{label}: stream took it"),
            }
        }
        // A valid request passes the checks and meets the full queue.
        let full = engine.generate(valid()).await;
        assert!(
            matches!(full, Err(EngineError::Overloaded { .. })),
            "{kind}: {full:?}"
        );
    }
}
