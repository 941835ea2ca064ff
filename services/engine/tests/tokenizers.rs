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
    });
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
}
