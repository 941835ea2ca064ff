//! LoRA adapters merged at load against transformers + PEFT: adapters saved by `peft` on
//! the tiny random LLaMA (scripts/make_lora_fixture.py), and the greedy tokens PEFT
//! generates with each, unmerged (`PeftModel`, as GLPFT's inference scripts run LoRA
//! roles) and merged (`merge_and_unload`).

mod common;

use std::path::PathBuf;

use umi_engine::{Engine, GenerateRequest, LoadOptions, Prompt, WeightDType};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures").join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tiny-lora.expected.json")).unwrap())
        .unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

fn load(model: PathBuf, adapter: Option<PathBuf>) -> umi_engine::Result<umi_engine::LoadedModel> {
    load_as(model, adapter, WeightDType::F32)
}

fn load_as(
    model: PathBuf,
    adapter: Option<PathBuf>,
    dtype: WeightDType,
) -> umi_engine::Result<umi_engine::LoadedModel> {
    umi_engine::load(&LoadOptions {
        model,
        tokenizer: None,
        dtype,
        device: candle_core::Device::Cpu,
        adapter,
    })
}

async fn greedy(adapter: Option<&str>) -> Vec<u32> {
    let want = expected();
    let model = load(fixture("tiny-llama-sharded"), adapter.map(fixture)).unwrap();
    let engine = Engine::start(model);
    let request = GenerateRequest {
        max_new_tokens: ids(&want["base"]).len(),
        ignore_eos: true,
        ..GenerateRequest::new(Prompt::Tokens(ids(&want["prompt"])))
    };
    engine.generate(request).await.unwrap().token_ids
}

#[tokio::test(flavor = "multi_thread")]
async fn merged_adapters_generate_what_peft_generates() {
    let want = expected();
    for adapter in ["tiny-lora-qv", "tiny-lora-all"] {
        let got = greedy(Some(adapter)).await;
        assert_eq!(
            got,
            ids(&want[adapter]["unmerged"]),
            "{adapter}, against PeftModel"
        );
        assert_eq!(
            got,
            ids(&want[adapter]["merged"]),
            "{adapter}, against merge_and_unload"
        );
    }
    // And the adapters matter: without one, the base model's tokens.
    assert_eq!(greedy(None).await, ids(&want["base"]));
    assert_ne!(ids(&want["base"]), ids(&want["tiny-lora-qv"]["merged"]));
}

#[test]
fn a_setting_umi_cannot_honour_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny-lora-qv")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.path().join("adapter_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["use_dora"] = serde_json::json!(true);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = load(
        fixture("tiny-llama-sharded"),
        Some(dir.path().to_path_buf()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("use_dora") && err.contains("adapter_config.json"),
        "{err}"
    );
}

#[test]
fn an_adapter_for_other_weights_is_refused() {
    // The tiny adapter on SmolLM2: kept quantized, its q_proj cannot take a merge; made
    // dense (f32), it is of another shape.
    let quantized = load_as(
        common::smollm2_gguf(),
        Some(fixture("tiny-lora-qv")),
        WeightDType::Quantized,
    );
    let err = quantized.err().unwrap().to_string();
    assert!(err.contains("q_proj") && err.contains("quantized"), "{err}");
    let dense = load_as(
        common::smollm2_gguf(),
        Some(fixture("tiny-lora-qv")),
        WeightDType::F32,
    );
    let err = dense.err().unwrap().to_string();
    assert!(err.contains("q_proj") && err.contains("B·A"), "{err}");
    // A missing adapter directory is named.
    let err = load(
        fixture("tiny-llama-sharded"),
        Some(fixture("no-such-adapter")),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no-such-adapter"), "{err}");
}

/// The same at 1B (a random TinyLlama-shaped checkpoint, f32): run by
/// scripts/check_lora_1b.sh, which writes the checkpoint, the adapter and PEFT's tokens
/// under `$UMI_LORA_1B`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs scripts/check_lora_1b.sh's 1B checkpoint (several GB)"]
async fn merged_adapter_at_1b_generates_what_peft_generates() {
    let Some(dir) = std::env::var_os("UMI_LORA_1B").map(PathBuf::from) else {
        panic!("UMI_LORA_1B names the folder scripts/check_lora_1b.sh wrote");
    };
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let generate = |adapter: Option<PathBuf>| {
        let model = load(dir.join("base"), adapter).unwrap();
        let engine = Engine::start(model);
        let request = GenerateRequest {
            max_new_tokens: ids(&want["merged"]).len(),
            ignore_eos: true,
            ..GenerateRequest::new(Prompt::Tokens(ids(&want["prompt"])))
        };
        async move { engine.generate(request).await.unwrap().token_ids }
    };
    let got = generate(Some(dir.join("adapter"))).await;
    println!("umi: {got:?}\npeft: {want}");
    assert_eq!(got, ids(&want["unmerged"]), "against PeftModel");
    assert_eq!(got, ids(&want["merged"]), "against merge_and_unload");
    assert_eq!(generate(None).await, ids(&want["base"]), "the base alone");
}

/// The tiny base serving both adapters unmerged, plus the base itself.
fn serving_both() -> Engine {
    let mut model = load(fixture("tiny-llama-sharded"), None).unwrap();
    for name in ["tiny-lora-qv", "tiny-lora-all"] {
        model.serve_adapter(name, &fixture(name)).unwrap();
    }
    Engine::start(model)
}

fn request(prompt: Vec<u32>, adapter: Option<&str>, n: usize) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: n,
        ignore_eos: true,
        adapter: adapter.map(str::to_string),
        ..GenerateRequest::new(Prompt::Tokens(prompt))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unmerged_adapters_generate_what_peft_generates_alone_and_batched() {
    let want = expected();
    let prompt = ids(&want["prompt"]);
    let n = ids(&want["base"]).len();
    let engine = serving_both();
    let cases = [
        (Some("tiny-lora-qv"), ids(&want["tiny-lora-qv"]["unmerged"])),
        (
            Some("tiny-lora-all"),
            ids(&want["tiny-lora-all"]["unmerged"]),
        ),
        (None, ids(&want["base"])),
    ];
    // One at a time.
    for (adapter, tokens) in &cases {
        let got = engine
            .generate(request(prompt.clone(), *adapter, n))
            .await
            .unwrap()
            .token_ids;
        assert_eq!(&got, tokens, "{adapter:?} alone");
    }
    // All at once, twice over: their decode steps share batches, each row its adapter.
    let calls = cases
        .iter()
        .chain(cases.iter())
        .map(|(adapter, _)| engine.generate(request(prompt.clone(), *adapter, n)));
    let outs: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        outs.iter().any(|o| o.peak_batch >= 3),
        "the requests were not decoded together: {:?}",
        outs.iter().map(|o| o.peak_batch).collect::<Vec<_>>()
    );
    for (out, (adapter, tokens)) in outs.iter().zip(cases.iter().chain(cases.iter())) {
        assert_eq!(&out.token_ids, tokens, "{adapter:?} in a batch");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_computed_under_one_adapter_never_serves_another() {
    // Long enough for the prefix cache (which then holds the first request's state).
    let prompt: Vec<u32> = (1..40).collect();
    let engine = serving_both();
    let first = engine
        .generate(request(prompt.clone(), Some("tiny-lora-qv"), 6))
        .await
        .unwrap();
    assert!(first.token_ids.len() == 6);
    let other = engine
        .generate(request(prompt.clone(), Some("tiny-lora-all"), 6))
        .await
        .unwrap();
    assert_eq!(other.cached_tokens, 0, "reused another adapter's state");
    let fresh = serving_both()
        .generate(request(prompt.clone(), Some("tiny-lora-all"), 6))
        .await
        .unwrap();
    assert_eq!(other.token_ids, fresh.token_ids);
    // The same adapter again reuses its own.
    let again = engine
        .generate(request(prompt, Some("tiny-lora-qv"), 6))
        .await
        .unwrap();
    assert!(again.cached_tokens > 0);
    assert_eq!(again.token_ids, first.token_ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_for_an_adapter_not_served_is_refused_by_name() {
    let err = serving_both()
        .generate(request(vec![1, 2, 3], Some("planner"), 2))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"planner\"") && err.contains("tiny-lora-qv"),
        "{err}"
    );
}

/// On a GGUF base the q/k rows are in llama.cpp's interleaved order: an adapter's rows
/// must be put in it. A random adapter on SmolLM2's q/k/v, on the GGUF file (dequantized
/// to f32) and on its HuggingFace conversion, merged and unmerged: the same tokens.
#[tokio::test(flavor = "multi_thread")]
async fn adapters_on_a_gguf_base_are_put_in_its_row_order() {
    use candle_core::{DType, Device, Tensor};
    let dir = common::scratch_dir();
    let gguf = common::smollm2_gguf();
    let hf = dir.path().join("hf");
    umi_engine::convert::gguf_to_hf(&gguf, &hf, DType::F32).unwrap();
    // SmolLM2-135M: hidden 576, 9 heads and 3 key/value heads of 64.
    let adapter = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    // Seeded (the same adapter every run), and strong enough to change the greedy tokens
    // (a fresh random adapter of std 0.05 once changed none of the 12, failing CI).
    let mut state = 0x5eed_u64;
    let mut uniform = |shape: (usize, usize)| {
        let values = (0..shape.0 * shape.1)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
            })
            .collect::<Vec<f32>>();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    };
    let mut tensors = std::collections::HashMap::new();
    for layer in 0..30 {
        for (proj, rows) in [("q_proj", 576), ("k_proj", 192), ("v_proj", 192)] {
            let key = format!("base_model.model.model.layers.{layer}.self_attn.{proj}");
            let a = uniform((4, 576));
            let b = uniform((rows, 4));
            tensors.insert(format!("{key}.lora_A.weight"), a);
            tensors.insert(format!("{key}.lora_B.weight"), b);
        }
    }
    candle_core::safetensors::save(&tensors, adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj"]}"#,
    )
    .unwrap();
    let prompt: Vec<u32> = vec![1, 504, 3458, 314, 260, 2365, 282, 4053, 30];
    let greedy = |engine: Engine, name: Option<&'static str>| {
        let request = request(prompt.clone(), name, 12);
        async move { engine.generate(request).await.unwrap().token_ids }
    };
    let reference = greedy(
        Engine::start(load(hf.clone(), Some(adapter.clone())).unwrap()),
        None,
    )
    .await;
    let base = greedy(Engine::start(load(hf, None).unwrap()), None).await;
    assert_ne!(reference, base, "the adapter changed nothing");
    let merged = greedy(
        Engine::start(load(gguf.clone(), Some(adapter.clone())).unwrap()),
        None,
    )
    .await;
    assert_eq!(merged, reference, "merged on the GGUF file");
    let mut served = load(gguf, None).unwrap();
    served.serve_adapter("a", &adapter).unwrap();
    let unmerged = greedy(Engine::start(served), Some("a")).await;
    assert_eq!(unmerged, reference, "unmerged on the GGUF file");
}
