//! Tokenizers for LLaMA-family checkpoints: from `tokenizer.json`, from a SentencePiece
//! `tokenizer.model`, or rebuilt from GGUF metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

use crate::error::{EngineError, Result};
use crate::sentencepiece::{ModelType, Piece, PieceType, SentencePieceModel};

/// A tokenizer plus the special ids generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepended by `encode` (LLaMA-2 adds `<s>`; SmolLM2 adds nothing).
    bos: Option<u32>,
    eos: Vec<u32>,
}

impl Tokenizer {
    /// Loads a HuggingFace `tokenizer.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EngineError::load(path, format!("invalid tokenizer.json: {e}")))?;
        // The file's post-processor says whether a BOS is added; read it off a probe.
        let with = inner
            .encode("a", true)
            .map_err(|e| EngineError::load(path, e))?;
        let without = inner
            .encode("a", false)
            .map_err(|e| EngineError::load(path, e))?;
        let bos = (with.get_ids().len() > without.get_ids().len()).then(|| with.get_ids()[0]);
        let eos = ["</s>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"]
            .iter()
            .filter_map(|t| inner.token_to_id(t))
            .take(1)
            .collect();
        Ok(Tokenizer { inner, bos, eos })
    }

    /// Builds the tokenizer from a SentencePiece `tokenizer.model` (BPE models, as LLaMA's).
    pub fn from_sentencepiece_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::load(path, e))?;
        let model = SentencePieceModel::parse(&bytes).map_err(|e| EngineError::load(path, e))?;
        if model.model_type != ModelType::Bpe {
            return Err(EngineError::load(
                path,
                format!(
                    "SentencePiece model type {:?} is not supported (only BPE, as LLaMA uses)",
                    model.model_type
                ),
            ));
        }
        sentencepiece_bpe(
            &model.pieces,
            model.byte_fallback,
            model.add_dummy_prefix,
            true,
        )
        .map_err(|e| EngineError::load(path, e))
    }

    /// Rebuilds the tokenizer stored in a GGUF header (`tokenizer.ggml.*`).
    pub fn from_gguf(path: &Path, content: &gguf_file::Content) -> Result<Self> {
        let md = &content.metadata;
        let err = |m: String| EngineError::load(path, m);
        let model = md
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| err("GGUF metadata has no tokenizer.ggml.model".into()))?;
        let tokens = string_array(md, "tokenizer.ggml.tokens").map_err(err)?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| err(e.to_string()))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let add_bos_default = model == "llama";
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(add_bos_default);
        let mut tok = match model.as_str() {
            "gpt2" => {
                let merges = string_array(md, "tokenizer.ggml.merges").map_err(err)?;
                let pre = md
                    .get("tokenizer.ggml.pre")
                    .and_then(|v| v.to_string().ok())
                    .cloned()
                    .unwrap_or_default();
                byte_level_bpe(&tokens, &merges, &types, &pre).map_err(err)?
            }
            "llama" => {
                let scores: Vec<f32> = match md.get("tokenizer.ggml.scores") {
                    Some(v) => v
                        .to_vec()
                        .map_err(|e| err(e.to_string()))?
                        .iter()
                        .map(|s| s.to_f32().unwrap_or(0.0))
                        .collect(),
                    None => {
                        return Err(err("llama tokenizer without tokenizer.ggml.scores".into()))
                    }
                };
                let pieces: Vec<Piece> = tokens
                    .iter()
                    .zip(scores)
                    .zip(types.iter())
                    .map(|((text, score), &t)| Piece {
                        text: text.clone(),
                        score,
                        kind: PieceType::from_code(t as u64),
                    })
                    .collect();
                sentencepiece_bpe(&pieces, true, true, add_bos).map_err(err)?
            }
            other => {
                return Err(err(format!(
                    "tokenizer model {other:?} is not supported (gpt2 or llama)"
                )))
            }
        };
        let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        tok.bos = if add_bos {
            id("tokenizer.ggml.bos_token_id")
        } else {
            None
        };
        if let Some(eos) = id("tokenizer.ggml.eos_token_id") {
            tok.eos = vec![eos];
        }
        Ok(tok)
    }

    /// Encodes `text`, splitting out special-token strings (so a literal `</s>` becomes
    /// its id) and prepending the BOS this tokenizer adds.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        ids.extend(self.bos);
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids, dropping special tokens (as `skip_special_tokens=True`).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// Writes a HuggingFace `tokenizer.json` (pretty, as `save(path, true)` would),
    /// replacing any file there atomically.
    pub fn save_json(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| EngineError::load(path, format!("writing tokenizer: {e}")))?;
        umi_durable::write(path, json.as_bytes()).map_err(|e| EngineError::io(e.path, e.source))
    }

    /// The underlying HuggingFace tokenizer (for exporting its vocabulary).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    pub fn set_eos_ids(&mut self, eos: Vec<u32>) {
        self.eos = eos;
    }

    /// Padding id: `<pad>` when the vocabulary has one, else `<unk>` (what α-UMi's
    /// training sets, `pad_token = unk_token`), else 0.
    pub fn pad_id(&self) -> u32 {
        self.token_to_id("<pad>")
            .or_else(|| self.token_to_id("<unk>"))
            .unwrap_or(0)
    }
}

fn string_array(
    md: &HashMap<String, gguf_file::Value>,
    key: &str,
) -> std::result::Result<Vec<String>, String> {
    let values = md
        .get(key)
        .ok_or_else(|| format!("GGUF metadata has no {key}"))?
        .to_vec()
        .map_err(|e| format!("{key}: {e}"))?;
    values
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| format!("{key}: {e}")))
        .collect()
}

/// GPT-2 style byte-level BPE. `pre` is llama.cpp's pre-tokenizer name.
fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    types: &[i32],
    pre: &str,
) -> std::result::Result<Tokenizer, String> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("malformed merge {m:?}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building BPE: {e}"))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    // SmolLM splits every digit on its own before the GPT-2 regex; other pre-tokenizers
    // that llama.cpp knows differ in their regex and are not reproduced here yet.
    match pre {
        "smollm" => {
            inner.with_pre_tokenizer(Some(PreSequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        }
        _ => {
            inner.with_pre_tokenizer(Some(byte_level));
        }
    }
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, &t)| t == 3 || t == 4)
        .map(|(text, _)| AddedToken::from(text.clone(), true))
        .collect();
    inner
        .add_special_tokens(specials)
        .map_err(|e| format!("adding special tokens: {e}"))?;
    Ok(Tokenizer {
        inner,
        bos: None,
        eos: vec![],
    })
}

/// SentencePiece BPE rebuilt as a HuggingFace BPE the way transformers' `LlamaConverter`
/// does (legacy mode): merges derived from the piece scores, byte fallback, a `▁` prepended
/// to each text chunk, and spaces as `▁`.
fn sentencepiece_bpe(
    pieces: &[Piece],
    byte_fallback: bool,
    add_dummy_prefix: bool,
    add_bos: bool,
) -> std::result::Result<Tokenizer, String> {
    let vocab: Vocab = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.text.clone(), i as u32))
        .collect();
    // For each piece, every split into two pieces of the vocabulary is a merge, ranked by
    // the merged piece's score (highest first); ties keep vocabulary order.
    let mut merges: Vec<(String, String, f32)> = Vec::new();
    for piece in pieces {
        let mut local: Vec<(String, String, f32)> = piece
            .text
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = piece.text.split_at(at);
                (vocab.contains_key(l) && vocab.contains_key(r))
                    .then(|| (l.to_string(), r.to_string(), piece.score))
            })
            .collect();
        local.sort_by_key(|(l, r, _)| (vocab[l], vocab[r]));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let merges: Vec<(String, String)> = merges.into_iter().map(|(l, r, _)| (l, r)).collect();
    let unk = pieces
        .iter()
        .find(|p| p.kind == PieceType::Unknown)
        .map(|p| p.text.clone())
        .unwrap_or_else(|| "<unk>".to_string());
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(byte_fallback)
        .build()
        .map_err(|e| format!("building BPE: {e}"))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let replace = Replace::new(" ", "▁").map_err(|e| e.to_string())?;
    let normalizer = if add_dummy_prefix {
        NormalizerSequence::new(vec![Prepend::new("▁".to_string()).into(), replace.into()])
    } else {
        NormalizerSequence::new(vec![replace.into()])
    };
    inner
        .with_normalizer(Some(normalizer))
        .map_err(|e| e.to_string())?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(|e| e.to_string())?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_dummy_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    let specials: Vec<AddedToken> = pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceType::Control | PieceType::Unknown))
        .map(|p| AddedToken::from(p.text.clone(), true))
        .collect();
    inner
        .add_special_tokens(specials)
        .map_err(|e| format!("adding special tokens: {e}"))?;
    let find = |t: &str| pieces.iter().position(|p| p.text == t).map(|i| i as u32);
    let bos = if add_bos { find("<s>") } else { None };
    if let Some(bos) = bos {
        // Recorded in the tokenizer itself so a saved tokenizer.json adds it too.
        let template = TemplateProcessing::builder()
            .try_single("<s> $A")
            .and_then(|b| b.try_pair("<s> $A <s> $B"))
            .map_err(|e| e.to_string())?
            .special_tokens(vec![("<s>".to_string(), bos)])
            .build()
            .map_err(|e| e.to_string())?;
        inner.with_post_processor(Some(template));
    }
    Ok(Tokenizer {
        bos,
        eos: find("</s>").into_iter().collect(),
        inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str, score: f32, kind: PieceType) -> Piece {
        Piece {
            text: text.into(),
            score,
            kind,
        }
    }

    /// A toy LLaMA-style vocabulary: specials, byte pieces, then scored merges.
    fn toy() -> Tokenizer {
        let mut pieces = vec![
            piece("<unk>", 0.0, PieceType::Unknown),
            piece("<s>", 0.0, PieceType::Control),
            piece("</s>", 0.0, PieceType::Control),
        ];
        for b in 0..=255u8 {
            pieces.push(piece(&format!("<0x{b:02X}>"), 0.0, PieceType::Byte));
        }
        for (i, t) in [
            "▁", "h", "i", "u", "s", "e", "r", ":", "▁h", "▁hi", "us", "use", "user", "▁user",
        ]
        .iter()
        .enumerate()
        {
            pieces.push(piece(t, -(i as f32), PieceType::Normal));
        }
        sentencepiece_bpe(&pieces, true, true, true).unwrap()
    }

    #[test]
    fn sentencepiece_chunks_each_get_a_dummy_prefix_and_eos_splits_out() {
        let tok = toy();
        let ids = tok.encode("hi</s>user: hi").unwrap();
        let pieces: Vec<String> = ids
            .iter()
            .map(|&i| tok.inner.id_to_token(i).unwrap())
            .collect();
        assert_eq!(pieces, ["<s>", "▁hi", "</s>", "▁user", ":", "▁hi"]);
        assert_eq!(tok.decode(&ids).unwrap(), "hi user: hi");
    }

    #[test]
    fn unknown_chars_fall_back_to_bytes() {
        let tok = toy();
        let ids = tok.encode("é").unwrap();
        let pieces: Vec<String> = ids
            .iter()
            .map(|&i| tok.inner.id_to_token(i).unwrap())
            .collect();
        assert_eq!(pieces, ["<s>", "▁", "<0xC3>", "<0xA9>"]);
        assert_eq!(tok.decode(&ids).unwrap(), "é");
        assert_eq!(tok.pad_id(), 0);
    }
}
