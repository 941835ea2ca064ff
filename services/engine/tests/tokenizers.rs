//! Tokenizer loading paths against real vocabularies: a SentencePiece `tokenizer.model`
//! checked against the sentencepiece library's own encodings, and LLaMA-2's tokenizer.json
//! (the α-UMi checkpoints' vocabulary) on α-UMi-style prompts.

mod common;

use std::path::PathBuf;

use umi_engine::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures").join(name)
}

#[test]
fn sentencepiece_model_encodes_as_sentencepiece_does() {
    // Made by scripts/make_spm_fixture.py with the sentencepiece package.
    let tok = Tokenizer::from_sentencepiece_file(&fixture("spm-bpe.model")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("spm-bpe.expected.json")).unwrap())
            .unwrap();
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    for case in expected.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let mut want: Vec<u32> = vec![1];
        want.extend(
            case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32),
        );
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "encoding {text:?}");
        assert_eq!(
            tok.decode(&got).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decoding {text:?}"
        );
    }
}

#[test]
fn a_broken_tokenizer_model_is_a_one_line_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.model");
    std::fs::write(&path, b"\x0a\xff\xff\xff").unwrap();
    let err = match Tokenizer::from_sentencepiece_file(&path) {
        Ok(_) => panic!("garbage parsed"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn llama2_vocabulary_splits_eos_and_prefixes_each_chunk() {
    let path = common::repo().join("models/llama2-tokenizer.json");
    assert!(
        path.exists(),
        "{} missing: run scripts/setup.sh",
        path.display()
    );
    let tok = Tokenizer::from_json_file(&path).unwrap();
    assert_eq!(tok.vocab_size(), 32000);
    assert_eq!(tok.pad_id(), 0, "α-UMi pads with <unk>");
    let ids = tok.encode("user: hi</s>assistant: ok").unwrap();
    // BOS first; the literal </s> becomes EOS (2); the chunk after it gets its own ▁.
    assert_eq!(ids[0], 1);
    let eos_at = ids
        .iter()
        .position(|&i| i == 2)
        .expect("no EOS id for </s>");
    let after = &ids[eos_at + 1..];
    let fresh = tok.encode("assistant: ok").unwrap();
    assert_eq!(
        after,
        &fresh[1..],
        "the chunk after </s> encodes as if it started the text"
    );
    assert_eq!(tok.decode(&ids).unwrap(), "user: hi assistant: ok");
}

#[test]
fn a_tokenizer_of_another_vocabulary_is_refused_at_load() {
    // LLaMA-2's tokenizer (32,000 tokens) for SmolLM2 (49,152): ids would name other tokens.
    let tokenizer = common::repo().join("models/llama2-tokenizer.json");
    let err = match umi_engine::load(&umi_engine::LoadOptions {
        model: common::smollm2_gguf(),
        tokenizer: Some(tokenizer.clone()),
        dtype: umi_engine::WeightDType::Quantized,
        device: candle_core::Device::Cpu,
        adapter: None,
    }) {
        Ok(_) => panic!("a tokenizer of another vocabulary was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with(&tokenizer.display().to_string()), "{err}");
    assert!(
        err.contains("do not match") || err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn the_same_vocabulary_from_another_file_is_accepted() {
    // The GGUF's own vocabulary written out as tokenizer.json passes the check.
    let gguf = common::smollm2_gguf();
    let own = common::load(gguf.clone(), umi_engine::WeightDType::Quantized).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("tokenizer.json");
    own.tokenizer.save_json(&exported).unwrap();
    let loaded = umi_engine::load(&umi_engine::LoadOptions {
        model: gguf,
        tokenizer: Some(exported),
        dtype: umi_engine::WeightDType::Quantized,
        device: candle_core::Device::Cpu,
        adapter: None,
    });
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
}

/// Checks `tok` against tests/fixtures/spm-special.expected.json, made by
/// scripts/make_spm_special_fixture.py: transformers' slow LlamaTokenizer (the version α-UMi
/// saved with) on spm-bpe.model, `encode` (BOS included) and `decode(skip_special_tokens=True)`
/// of text with `</s>`, `<s>`, `<unk>` and spaces, newlines and the α-UMi prompt joins around
/// them. Returns the cases that differ.
fn differences_from_slow_llama_tokenizer(tok: &Tokenizer) -> Vec<String> {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("spm-special.expected.json")).unwrap(),
    )
    .unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() > 50);
    let mut wrong = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text).unwrap();
        if got != want {
            wrong.push(format!("encoding {text:?}: {got:?}, want {want:?}"));
        }
        let decoded = tok.decode(&want).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            wrong.push(format!(
                "decoding {text:?}: {decoded:?}, want {}",
                case["decoded"]
            ));
        }
    }
    wrong
}

#[test]
fn special_tokens_in_text_keep_the_spaces_around_them_as_the_slow_llama_tokenizer_does() {
    let tok = Tokenizer::from_sentencepiece_file(&fixture("spm-bpe.model")).unwrap();
    let wrong = differences_from_slow_llama_tokenizer(&tok);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_gguf_llama_vocabulary_treats_special_tokens_in_text_the_same_way() {
    // The same pieces as a GGUF header's tokenizer.ggml.* (llama.cpp's token types are
    // SentencePiece's), read back by the loader of GGUF checkpoints.
    use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};
    let path = fixture("spm-bpe.model");
    let model =
        umi_engine::sentencepiece::SentencePieceModel::parse(&std::fs::read(&path).unwrap())
            .unwrap();
    let array = |f: &dyn Fn(&umi_engine::sentencepiece::Piece) -> Value| {
        Value::Array(model.pieces.iter().map(f).collect())
    };
    let kind = |p: &umi_engine::sentencepiece::Piece| {
        use umi_engine::sentencepiece::PieceType::*;
        Value::I32(match p.kind {
            Normal => 1,
            Unknown => 2,
            Control => 3,
            UserDefined => 4,
            Unused => 5,
            Byte => 6,
        })
    };
    let metadata = [
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            array(&|p| Value::String(p.text.clone())),
        ),
        ("tokenizer.ggml.scores", array(&|p| Value::F32(p.score))),
        ("tokenizer.ggml.token_type", array(&kind)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let content = Content {
        magic: VersionedMagic::GgufV3,
        metadata,
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    };
    let tok = Tokenizer::from_gguf(&path, &content).unwrap();
    assert_eq!(tok.bos_id(), Some(1));
    let wrong = differences_from_slow_llama_tokenizer(&tok);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
