//! The HuggingFace loading path against transformers itself: a tiny random LLaMA saved by
//! transformers as sharded safetensors and as a PyTorch pickle (fixtures made by
//! scripts/make_tiny_llama_fixture.py), generating the greedy tokens transformers produced.

mod common;

use std::path::PathBuf;

use umi_engine::{Engine, GenerateRequest, Prompt, WeightDType};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures").join(name)
}

fn expected() -> (Vec<u32>, Vec<u32>) {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-llama.expected.json")).unwrap(),
    )
    .unwrap();
    let ids = |k: &str| {
        json[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    (ids("prompt"), ids("greedy"))
}

async fn greedy(dir: &str, dtype: WeightDType, n: usize) -> Vec<u32> {
    let (prompt, _) = expected();
    let engine = Engine::start(common::load(fixture(dir), dtype).unwrap());
    let request = GenerateRequest {
        max_new_tokens: n,
        ignore_eos: true,
        ..GenerateRequest::new(Prompt::Tokens(prompt))
    };
    engine.generate(request).await.unwrap().token_ids
}

#[tokio::test(flavor = "multi_thread")]
async fn sharded_safetensors_match_transformers_greedy_tokens() {
    let (_, want) = expected();
    assert_eq!(
        greedy("tiny-llama-sharded", WeightDType::F32, want.len()).await,
        want
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pytorch_pickle_matches_transformers_greedy_tokens() {
    let (_, want) = expected();
    assert_eq!(
        greedy("tiny-llama-bin", WeightDType::F32, want.len()).await,
        want
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sharded_pytorch_pickles_match_transformers_greedy_tokens() {
    // Three torch.save shards with pytorch_model.bin.index.json, read tensor by tensor.
    let (_, want) = expected();
    assert_eq!(
        greedy("tiny-llama-bin-sharded", WeightDType::F32, want.len()).await,
        want
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn half_precision_and_q8_load_and_mostly_agree() {
    let (_, want) = expected();
    for dtype in [WeightDType::F16, WeightDType::BF16, WeightDType::Q8_0] {
        let got = greedy("tiny-llama-sharded", dtype, 4).await;
        assert_eq!(got.len(), 4, "{dtype}");
        // Rounding may flip later picks of a random model, not the first.
        assert_eq!(got[0], want[0], "{dtype}");
    }
}

#[test]
fn a_missing_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny-llama-sharded")).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("model-00003-of-00006.safetensors") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let err = match common::load(dir.path().to_path_buf(), WeightDType::F32) {
        Ok(_) => panic!("loaded with a shard missing"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("model-00003-of-00006.safetensors"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

/// Requests of different lengths decoded together get the greedy tokens each gets alone
/// (tiny checkpoint, bf16). On CUDA a decode batch is one padded attention computation,
/// on a CPU each sequence's own (bit for bit).
async fn batched_decode_matches_each_request_alone(device: candle_core::Device) {
    let engine = |max_batch| {
        let loaded = umi_engine::load(&umi_engine::LoadOptions {
            model: fixture("tiny-llama-sharded"),
            tokenizer: None,
            dtype: WeightDType::BF16,
            device: device.clone(),
            adapter: None,
        })
        .unwrap();
        Engine::start_with(
            loaded,
            umi_engine::EngineConfig {
                prefix_cache_bytes: 0,
                max_batch,
                ..Default::default()
            },
        )
    };
    let (prompt, _) = expected();
    let requests: Vec<GenerateRequest> = [3usize, 8, 5]
        .iter()
        .map(|&len| GenerateRequest {
            max_new_tokens: 12,
            ignore_eos: true,
            ..GenerateRequest::new(Prompt::Tokens(prompt[..len].to_vec()))
        })
        .collect();
    let alone = engine(1);
    let mut want = Vec::new();
    for r in &requests {
        want.push(alone.generate(r.clone()).await.unwrap().token_ids);
    }
    let batched = engine(4);
    let outs = futures::future::try_join_all(requests.iter().map(|r| batched.generate(r.clone())))
        .await
        .unwrap();
    for (i, (out, want)) in outs.iter().zip(&want).enumerate() {
        assert_eq!(&out.token_ids, want, "request {i}");
        assert_eq!(out.peak_batch, 3, "request {i} was not batched");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_batched_decode_matches_each_request_alone() {
    batched_decode_matches_each_request_alone(candle_core::Device::Cpu).await;
}

/// Built only with `--features cuda`; needs a GPU (scripts/bench_cuda.sh runs it).
#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread")]
async fn cuda_batched_decode_matches_each_request_alone() {
    batched_decode_matches_each_request_alone(candle_core::Device::new_cuda(0).unwrap()).await;
}
