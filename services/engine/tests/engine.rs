//! The engine on the real SmolLM2-135M model: tokenizer, golden greedy output, the HF
//! conversion path, the async API, and load errors.

mod common;

use std::time::Duration;

use common::{chatml, load, smollm2_gguf};
use umi_engine::{
    Engine, FinishReason, GenerateRequest, Prompt, SamplingParams, StreamEvent, WeightDType,
};

fn greedy(prompt: &str, max_new_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens,
        ..GenerateRequest::new(Prompt::Text(prompt.to_string()))
    }
}

#[test]
fn chatml_prefix_tokenizes_to_the_reference_ids() {
    let loaded = load(smollm2_gguf(), WeightDType::Quantized).unwrap();
    let ids = loaded
        .tokenizer
        .encode("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n")
        .unwrap();
    assert_eq!(
        ids,
        [
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
            407, 19712, 8182, 2, 198
        ]
    );
    // Digits split one by one (SmolLM's pre-tokenizer), and text round-trips.
    let ids = loaded.tokenizer.encode("in 2024, café").unwrap();
    assert_eq!(loaded.tokenizer.decode(&ids).unwrap(), "in 2024, café");
    assert!(ids.len() >= 7, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn f32_weights_answer_the_capital_of_france() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::F32).unwrap());
    let out = engine
        .generate(greedy(&chatml("What is the capital of France?"), 40))
        .await
        .unwrap();
    assert_eq!(out.text, "The capital of France is Paris.");
    assert_eq!(out.finish_reason, FinishReason::StopToken);
    assert_eq!(out.prompt_tokens, 37);
}

#[tokio::test(flavor = "multi_thread")]
async fn quantized_weights_with_f32_activations_answer_like_f32() {
    // candle's own quantized matmul quantizes activations to 8 bits and answers nonsense
    // here; umi's CPU kernels keep activations in f32.
    for dtype in [WeightDType::Quantized, WeightDType::Q8_0] {
        let engine = Engine::start(load(smollm2_gguf(), dtype).unwrap());
        let out = engine
            .generate(greedy(&chatml("What is the capital of France?"), 40))
            .await
            .unwrap();
        assert_eq!(out.text, "The capital of France is Paris.", "{dtype}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_cache_reuses_shared_prompt_state_without_changing_output() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::F32).unwrap());
    let first = engine
        .generate(greedy(&chatml("What is the capital of France?"), 40))
        .await
        .unwrap();
    assert_eq!(first.cached_tokens, 0);
    let again = engine
        .generate(greedy(&chatml("What is the capital of France?"), 40))
        .await
        .unwrap();
    assert_eq!(again.cached_tokens, again.prompt_tokens - 1);
    assert_eq!(again.text, first.text);
    // A different question shares the system prompt and the user-turn header, and
    // answers as a cold engine does.
    let other = engine
        .generate(greedy(&chatml("What is the capital of Germany?"), 40))
        .await
        .unwrap();
    assert!(other.cached_tokens >= 25, "{}", other.cached_tokens);
    let cold = Engine::start_with(
        load(smollm2_gguf(), WeightDType::F32).unwrap(),
        umi_engine::EngineConfig {
            prefix_cache_bytes: 0,
            ..Default::default()
        },
    );
    let uncached = cold
        .generate(greedy(&chatml("What is the capital of Germany?"), 40))
        .await
        .unwrap();
    assert_eq!(uncached.cached_tokens, 0);
    assert_eq!(other.text, uncached.text);
    assert_eq!(other.text, "The capital of Germany is Berlin.");
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_hf_directory_generates_the_same_tokens_as_the_gguf() {
    let dir = common::scratch_dir();
    let hf = dir.path().join("smollm2-hf");
    umi_engine::convert::gguf_to_hf(&smollm2_gguf(), &hf, candle_core::DType::F32).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(hf.join(f).exists(), "{f} not written");
    }
    // Back to GGUF too: both directions must agree token for token.
    let back = dir.path().join("roundtrip.gguf");
    umi_engine::convert::hf_to_gguf(&hf, &back, candle_core::quantized::GgmlDType::F32).unwrap();

    let request = GenerateRequest {
        ignore_eos: true,
        ..greedy(&chatml("Name three uses of a paperclip."), 40)
    };
    let mut outputs = Vec::new();
    for path in [smollm2_gguf(), hf, back] {
        let engine = Engine::start(load(path.clone(), WeightDType::F32).unwrap());
        let out = engine.generate(request.clone()).await.unwrap();
        assert_eq!(out.token_ids.len(), 40, "{}", path.display());
        outputs.push((path, out.token_ids));
    }
    assert_eq!(outputs[0].1, outputs[1].1, "GGUF vs HF safetensors");
    assert_eq!(outputs[0].1, outputs[2].1, "GGUF vs GGUF from HF");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_matches_the_final_text_and_stop_strings_cut() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::F32).unwrap());
    let request = GenerateRequest {
        stop_strings: vec!["Paris".to_string()],
        ..greedy(&chatml("What is the capital of France?"), 40)
    };
    let mut events = engine.stream(request).unwrap();
    let mut streamed = String::new();
    let mut done = None;
    while let Some(event) = events.recv().await {
        match event.unwrap() {
            StreamEvent::Text { text, .. } => streamed.push_str(&text),
            StreamEvent::Done(out) => done = Some(out),
        }
    }
    let out = done.expect("stream ended without Done");
    assert_eq!(out.text, "The capital of France is ");
    assert_eq!(streamed, out.text);
    assert_eq!(out.finish_reason, FinishReason::StopString);
}

#[tokio::test(flavor = "multi_thread")]
async fn seeded_sampling_is_reproducible_and_concurrent_requests_all_finish() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::F32).unwrap());
    let sampled = GenerateRequest {
        sampling: SamplingParams {
            temperature: 0.6,
            top_p: Some(0.9),
            top_k: Some(50),
            seed: 7,
        },
        ..greedy(&chatml("Tell me a short story."), 24)
    };
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let engine = engine.clone();
            let r = sampled.clone();
            tokio::spawn(async move { engine.generate(r).await })
        })
        .collect();
    let mut texts = Vec::new();
    for h in handles {
        let out = tokio::time::timeout(Duration::from_secs(120), h)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!out.token_ids.is_empty());
        texts.push(out.token_ids);
    }
    assert!(
        texts.windows(2).all(|w| w[0] == w[1]),
        "same seed, different tokens: {texts:?}"
    );
}

/// Continuous batching must not change what a request gets: requests of different
/// lengths (one stops early, one samples with a seed) decoded together produce, token
/// for token, what each produces alone.
#[tokio::test(flavor = "multi_thread")]
async fn requests_decoded_in_one_batch_answer_as_they_do_alone() {
    let requests = [
        greedy(&chatml("What is the capital of France?"), 40),
        GenerateRequest {
            ignore_eos: true,
            ..greedy(&chatml("Name three uses of a paperclip."), 24)
        },
        GenerateRequest {
            sampling: SamplingParams {
                temperature: 0.6,
                top_p: Some(0.9),
                top_k: None,
                seed: 7,
            },
            ignore_eos: true,
            ..greedy(&chatml("Tell me a short story."), 32)
        },
    ];
    let engine = |max_batch| {
        Engine::start_with(
            load(smollm2_gguf(), WeightDType::Quantized).unwrap(),
            umi_engine::EngineConfig {
                prefix_cache_bytes: 0,
                max_batch,
                ..Default::default()
            },
        )
    };
    let alone = engine(1);
    let mut expected = Vec::new();
    for r in &requests {
        let out = alone.generate(r.clone()).await.unwrap();
        assert_eq!(out.peak_batch, 1);
        expected.push(out);
    }
    assert_eq!(expected[0].text, "The capital of France is Paris.");

    let batched = engine(4);
    let outs = futures::future::try_join_all(requests.iter().map(|r| batched.generate(r.clone())))
        .await
        .unwrap();
    for (i, (out, want)) in outs.iter().zip(&expected).enumerate() {
        assert_eq!(out.token_ids, want.token_ids, "request {i}");
        assert_eq!(out.text, want.text, "request {i}");
        assert_eq!(out.finish_reason, want.finish_reason, "request {i}");
        assert_eq!(
            out.peak_batch, 3,
            "request {i} was not decoded with the others"
        );
    }
}

/// Mixed steps (chunked prefill): a long prompt arriving while another request decodes
/// runs chunk by chunk beside that request's decode steps, instead of holding it back for
/// the whole prompt, and neither request's tokens change. The chunk is the engine's
/// setting (`prefill_chunk`, here 128 tokens: fifteen chunks).
#[tokio::test(flavor = "multi_thread")]
async fn a_long_prompt_prefills_in_chunks_beside_a_decoding_request() {
    let decoding = GenerateRequest {
        ignore_eos: true,
        ..greedy(&chatml("Count to one thousand."), 120)
    };
    // About 1,840 tokens: fifteen chunks of 128.
    let long = greedy(&chatml(&"count the words in this sentence ".repeat(300)), 8);
    let engine = Engine::start_with(
        load(smollm2_gguf(), WeightDType::F32).unwrap(),
        umi_engine::EngineConfig {
            prefix_cache_bytes: 0,
            max_batch: 4,
            prefill_chunk: 128,
            ..Default::default()
        },
    );
    let decoding_alone = engine.generate(decoding.clone()).await.unwrap();
    let long_alone = engine.generate(long.clone()).await.unwrap();
    assert!(
        long_alone.prompt_tokens > 14 * 128,
        "{}",
        long_alone.prompt_tokens
    );

    let mut a = engine.stream(decoding).unwrap();
    // The first request decodes before the long prompt arrives.
    assert!(matches!(a.recv().await, Some(Ok(StreamEvent::Text { .. }))));
    let mut b = engine.stream(long).unwrap();
    // The first request's tokens from the long prompt's arrival to its first token: a
    // decode step rides along each chunk (a whole prefill first would leave at most the
    // one step already under way; the default chunks of 256 would leave eight or nine).
    let (mut during_prefill, mut b_started) = (0, false);
    let (mut a_out, mut b_out) = (None, None);
    while a_out.is_none() || b_out.is_none() {
        tokio::select! {
            biased;
            Some(event) = a.recv(), if a_out.is_none() => match event.unwrap() {
                StreamEvent::Text { .. } => during_prefill += usize::from(!b_started),
                StreamEvent::Done(out) => a_out = Some(out),
            },
            Some(event) = b.recv(), if b_out.is_none() => match event.unwrap() {
                StreamEvent::Text { .. } => b_started = true,
                StreamEvent::Done(out) => b_out = Some(out),
            },
        }
    }
    assert!(
        during_prefill >= 12,
        "{during_prefill} decode steps during a fifteen-chunk prefill"
    );
    let (a_out, b_out) = (a_out.unwrap(), b_out.unwrap());
    assert_eq!(a_out.token_ids, decoding_alone.token_ids);
    assert_eq!(b_out.token_ids, long_alone.token_ids);
    assert_eq!(b_out.text, long_alone.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_stream_cancels_and_the_engine_keeps_serving() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::F32).unwrap());
    let long = GenerateRequest {
        ignore_eos: true,
        ..greedy(&chatml("Count to one thousand."), 2000)
    };
    let mut events = engine.stream(long).unwrap();
    let first = events.recv().await.unwrap().unwrap();
    assert!(matches!(first, StreamEvent::Text { .. }));
    drop(events);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        engine.generate(greedy(&chatml("What is the capital of France?"), 40)),
    )
    .await
    .expect("engine stuck on the cancelled request")
    .unwrap();
    assert_eq!(out.text, "The capital of France is Paris.");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_errors_not_panics() {
    let engine = Engine::start(load(smollm2_gguf(), WeightDType::F32).unwrap());
    let err = engine
        .generate(GenerateRequest::new(Prompt::Tokens(vec![])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("prompt"), "{err}");
    let err = engine
        .generate(GenerateRequest::new(Prompt::Tokens(vec![1, 999_999])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("999999"), "{err}");
    let too_long = Prompt::Tokens(vec![198; 9000]);
    let err = engine
        .generate(GenerateRequest::new(too_long))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("8192"), "{err}");
}

/// A caller that goes away during a long prompt's prefill stops it at the next chunk:
/// the chunks after it are never computed.
#[test]
fn a_cancelled_prefill_stops_at_the_next_chunk() {
    use std::cell::Cell;
    let loaded = load(smollm2_gguf(), WeightDType::Quantized).unwrap();
    let mut cache = umi_engine::prefix_cache::PrefixCache::new(0);
    // Over seven chunks of 256 tokens (`DEFAULT_PREFILL_CHUNK`).
    let request = greedy(&chatml(&"count the words in this sentence ".repeat(300)), 4);
    let checks = Cell::new(0);
    let started = umi_engine::generate::Sequence::start(
        &loaded.model,
        &loaded.tokenizer,
        &request,
        &mut cache,
        || {
            checks.set(checks.get() + 1);
            checks.get() > 1
        },
    );
    assert!(matches!(started, Err(umi_engine::EngineError::Abandoned)));
    assert_eq!(checks.get(), 2, "the prefill went on after the caller left");
    let whole = umi_engine::generate::Sequence::start(
        &loaded.model,
        &loaded.tokenizer,
        &request,
        &mut cache,
        || false,
    );
    assert!(whole.unwrap().0.prompt_tokens() > 1024);
}

mod load_errors {
    use super::*;
    use std::path::Path;

    fn load_err(path: &Path) -> String {
        match load(path.to_path_buf(), WeightDType::F32) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e.to_string(),
        }
    }

    fn assert_one_line_naming(err: &str, path: &Path, problem: &str) {
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&path.display().to_string()),
            "path missing: {err}"
        );
        assert!(err.contains(problem), "expected {problem:?} in: {err}");
    }

    #[test]
    fn missing_file() {
        let path = Path::new("/nonexistent/model.gguf");
        assert_one_line_naming(&load_err(path), path, "No such file");
    }

    #[test]
    fn truncated_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(smollm2_gguf()).unwrap();
        // Cut inside the tensor data: the header parses, a tensor does not fit.
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        assert_one_line_naming(&load_err(&cut), &cut, "truncated");
        // Cut inside the header.
        let stub = dir.path().join("stub.gguf");
        std::fs::write(&stub, &bytes[..64]).unwrap();
        assert_one_line_naming(&load_err(&stub), &stub, "not a readable GGUF file");
    }

    #[test]
    fn unknown_architecture_in_config_json() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(
            &config,
            r#"{"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"}"#,
        )
        .unwrap();
        assert_one_line_naming(
            &load_err(dir.path()),
            &config,
            "unknown architecture \"GPTNeoXForCausalLM\"",
        );
    }

    #[test]
    fn tokenizer_larger_than_the_vocabulary() {
        let dir = super::common::scratch_dir();
        let hf = dir.path().join("hf");
        umi_engine::convert::gguf_to_hf(&smollm2_gguf(), &hf, candle_core::DType::F16).unwrap();
        let config_path = hf.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config["vocab_size"] = 32000.into();
        std::fs::write(&config_path, config.to_string()).unwrap();
        let tokenizer = hf.join("tokenizer.json");
        assert_one_line_naming(
            &load_err(&hf),
            &tokenizer,
            "tokenizer has 49152 tokens but the model's vocabulary has 32000",
        );
    }
}

/// Admission control: past `max_queue` waiting requests, a request is refused at once as
/// overloaded; the accepted ones all finish, and the engine takes new work afterwards.
#[tokio::test]
async fn a_full_queue_refuses_requests_at_once_and_keeps_serving() {
    let engine = Engine::start_with(
        load(smollm2_gguf(), WeightDType::Quantized).unwrap(),
        umi_engine::EngineConfig {
            max_batch: 1,
            max_queue: 2,
            ..Default::default()
        },
    );
    let outs = futures::future::join_all(
        (0..12).map(|i| engine.generate(greedy(&chatml(&format!("Count to {i}.")), 8))),
    )
    .await;
    let refused = outs
        .iter()
        .filter(|o| matches!(o, Err(umi_engine::EngineError::Overloaded { limit: 2, .. })))
        .count();
    let served = outs.iter().filter(|o| o.is_ok()).count();
    assert_eq!(refused + served, 12, "another error: {outs:?}");
    // At most the batch of one plus two waiting (and what the thread took meanwhile).
    assert!(
        refused >= 6,
        "only {refused} of 12 refused with a queue of 2"
    );
    assert!(served >= 2, "{served}");
    let again = engine.generate(greedy(&chatml("Hello"), 4)).await;
    assert!(again.is_ok(), "{again:?}");
}
