//! Structured output on the real SmolLM2-135M model: text constrained to a JSON schema,
//! any JSON object, a regular expression or a Lark grammar matches it, greedy and
//! sampled, alone and in a batch; a grammar llguidance refuses is an invalid request;
//! the LLaMA-2 vocabulary (SentencePiece pieces) is read byte for byte.

mod common;

use candle_core::{Device, Tensor};
use common::{chatml, load, smollm2_gguf};
use serde_json::{json, Value};
use umi_engine::structured::Grammars;
use umi_engine::{
    Constraint, Engine, EngineError, FinishReason, GenerateRequest, Prompt, SamplingParams,
    Tokenizer, WeightDType,
};

fn constrained(user: &str, constraint: Constraint) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: 96,
        constraint: Some(constraint),
        ..GenerateRequest::new(Prompt::Text(chatml(user)))
    }
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "city": {"enum": ["Paris", "Tokyo", "Lima"]}
        },
        "required": ["name", "age", "city"],
        "additionalProperties": false
    })
}

fn assert_person(text: &str) {
    let person: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let fields: Vec<&String> = person.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["name", "age", "city"], "{text}");
    assert!(
        person["name"].as_str().unwrap().chars().count() <= 24,
        "{text}"
    );
    assert!(
        (0..=150).contains(&person["age"].as_i64().unwrap()),
        "{text}"
    );
    assert!(["Paris", "Tokyo", "Lima"].contains(&person["city"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn greedy_and_sampled_text_matches_its_schema() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::Quantized).unwrap());
    let ask = "Describe a person as JSON.";
    let out = engine
        .generate(constrained(ask, Constraint::JsonSchema(person_schema())))
        .await
        .unwrap();
    assert_person(&out.text);
    assert_eq!(out.finish_reason, FinishReason::StopToken, "{}", out.text);
    // Unconstrained, the same model writes prose around (or instead of) the JSON.
    let free = engine
        .generate(GenerateRequest {
            constraint: None,
            ..constrained(ask, Constraint::JsonObject)
        })
        .await
        .unwrap();
    assert!(
        serde_json::from_str::<Value>(&free.text).is_err(),
        "{}",
        free.text
    );
    for seed in 0..4 {
        let sampled = GenerateRequest {
            sampling: SamplingParams {
                temperature: 1.0,
                seed,
                ..SamplingParams::default()
            },
            ..constrained(ask, Constraint::JsonSchema(person_schema()))
        };
        assert_person(&engine.generate(sampled).await.unwrap().text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_objects_regular_expressions_and_lark_grammars() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::Quantized).unwrap());
    let out = engine
        .generate(GenerateRequest {
            max_new_tokens: 200,
            ..constrained("Reply in JSON: is the sky blue?", Constraint::JsonObject)
        })
        .await
        .unwrap();
    assert_eq!(out.finish_reason, FinishReason::StopToken, "{}", out.text);
    let value: Value = serde_json::from_str(&out.text).unwrap();
    assert!(value.is_object(), "{}", out.text);

    let out = engine
        .generate(constrained(
            "Is Paris in France? Answer yes or no.",
            Constraint::Regex("(yes|no)".into()),
        ))
        .await
        .unwrap();
    assert!(["yes", "no"].contains(&out.text.as_str()), "{:?}", out.text);

    // α-UMi's caller form: one of the offered actions, then a JSON object.
    let lark = r#"start: "Action: " ACTION "\nAction Input: " input
ACTION: "get_weather" | "get_time"
input: %json {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}
"#;
    let out = engine
        .generate(constrained(
            "Which API tells the weather in Paris?",
            Constraint::Lark(lark.into()),
        ))
        .await
        .unwrap();
    let rest = out.text.strip_prefix("Action: ").expect(&out.text);
    let (action, input) = rest.split_once("\nAction Input: ").expect(&out.text);
    assert!(
        ["get_weather", "get_time"].contains(&action),
        "{}",
        out.text
    );
    let input: Value = serde_json::from_str(input).unwrap();
    assert!(input["city"].is_string(), "{}", out.text);
}

/// A row's mask is its own: each request answers the same in a batch as alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_constrained_and_free_requests_answers_as_each_alone() {
    let requests = vec![
        constrained(
            "Describe a person as JSON.",
            Constraint::JsonSchema(person_schema()),
        ),
        GenerateRequest {
            max_new_tokens: 24,
            ..GenerateRequest::new(Prompt::Text(chatml("Name a colour.")))
        },
        constrained("Pick a number.", Constraint::Regex("[0-9]{1,3}".into())),
        constrained("Tell me about Tokyo.", Constraint::JsonObject),
    ];
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::Quantized).unwrap());
    let mut alone = Vec::new();
    for r in &requests {
        alone.push(engine.generate(r.clone()).await.unwrap().text);
    }
    let together = futures::future::join_all(requests.iter().map(|r| engine.generate(r.clone())))
        .await
        .into_iter()
        .map(|o| o.unwrap())
        .collect::<Vec<_>>();
    assert!(together.iter().any(|o| o.peak_batch > 1), "never batched");
    let together: Vec<String> = together.into_iter().map(|o| o.text).collect();
    assert_eq!(together, alone);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grammar_llguidance_refuses_is_an_invalid_request() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::Quantized).unwrap());
    for bad in [
        Constraint::Regex("(unclosed".into()),
        Constraint::Lark("start: undefined_rule".into()),
        Constraint::JsonSchema(json!({"type": "no-such-type"})),
    ] {
        match engine.generate(constrained("Hi", bad.clone())).await {
            Err(EngineError::InvalidArgument { what, message }) => {
                assert_eq!(what, "constraint", "{bad:?}: {message}")
            }
            other => panic!("{bad:?} was not refused: {other:?}"),
        }
    }
    // The engine serves on.
    let out = engine
        .generate(constrained("Hi", Constraint::Regex("hello".into())))
        .await
        .unwrap();
    assert_eq!(out.text, "hello");
}

/// LLaMA-2's pieces mark a space with ▁; the grammar sees the bytes they decode to, so a
/// leading space is reached through `▁world`, and `world` alone cannot start it.
#[test]
fn the_llama2_vocabulary_is_read_as_bytes() {
    let tok =
        Tokenizer::from_json_file(&common::repo().join("models/llama2-tokenizer.json")).unwrap();
    let grammars = Grammars::new(&tok, 32000).unwrap();
    let mut grammar = grammars
        .constrain(&Constraint::Regex(" world!".into()))
        .unwrap();
    let logits = Tensor::zeros(32000, candle_core::DType::F32, &Device::Cpu).unwrap();
    let masked: Vec<f32> = grammar.mask(&logits).unwrap().to_vec1().unwrap();
    let id = |piece: &str| tok.token_to_id(piece).unwrap() as usize;
    assert_eq!(masked[id("▁world")], 0.0);
    assert_eq!(masked[id("▁")], 0.0);
    assert_eq!(masked[id("world")], f32::NEG_INFINITY);
    assert_eq!(masked[id("</s>")], f32::NEG_INFINITY, "EOS before the end");
    for piece in ["▁world", "!"] {
        let done = grammar.consume(id(piece) as u32).unwrap();
        assert_eq!(done, piece == "!");
    }
}
